-- spec/metrics_spec.lua: the core's counters (docs/metrics.md) move by
-- exactly what a scripted sequence does; the scrape is valid Prometheus
-- text (promtool); with workers a scrape sums them all.
local helper = require "helper"

local APP = "spec/apps/metrics.lua"

-- GET /metrics: the series, by their whole name with labels.
local scrapes = 0
local function scrape(port)
  scrapes = scrapes + 1
  local status, headers, body, sock = helper.http(port,
    "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  assert.are.equal(200, status)
  sock:close()
  local series = {}
  for line in body:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local name, value = line:match("^(%S+) (%-?[%d.e+-]+)$")
      assert(name, "not a sample line: " .. line)
      series[name] = tonumber(value)
    end
  end
  return series, body, headers
end

-- after - before for each series named in expected, which lists them
local function deltas(before, after, names)
  local d = {}
  for _, name in ipairs(names) do
    d[name] = (after[name] or 0) - (before[name] or 0)
  end
  return d
end

-- The payload of the next message c receives.
local function text_of(c)
  local _, payload = c:recv_message()
  return payload
end

local function ws(port, path, headers)
  return assert(helper.ws_connect(port, path or "/ws", headers))
end

local function promtool_check(text)
  local file = os.tmpname()
  local f = assert(io.open(file, "wb"))
  f:write(text)
  f:close()
  local p = io.popen("promtool check metrics < " .. file .. " 2>&1; echo rc=$?")
  local out = p:read("a")
  p:close()
  os.remove(file)
  return out
end

describe("metrics", function()
  local server

  after_each(function()
    if server then helper.stop_and_check(server) end
    server = nil
  end)

  it("counts what a scripted sequence does, exactly", function()
    server = helper.start_server(APP)
    local port = server.port
    scrapes = 0
    local before = scrape(port)

    local c1 = ws(port)
    c1:send_text("hello")
    assert.are.equal("hello", text_of(c1))
    c1:send_binary("\1\2\3")
    assert.are.equal("\1\2\3", text_of(c1))
    c1:ping("p")
    local pong = c1:read_frame()
    assert.are.equal(helper.PONG, pong.opcode)
    c1:send_text("sub t")
    assert.are.equal("sub t", text_of(c1))

    -- a handshake the origin policy refuses
    local status, _, _, refused = helper.http(port, helper.upgrade_request{
      path = "/origin", headers = { Origin = "https://bad.example" } })
    assert.are.equal(403, status)
    refused:close()

    local c2 = ws(port)
    c2:send_text("pub t hi")
    assert.are.equal("pub 1", text_of(c2))
    assert.are.equal("hi", text_of(c1))

    -- a consumer that does not read, past max_backpressure
    local c3 = ws(port, "/slow")
    c3:send_text("flood 400")

    local during = scrape(port)
    assert.are.same({
      ['moonsocket_connections{kind="websocket",transport="tcp"}'] = 3,
      ["moonsocket_pubsub_topics"] = 1,
      ["moonsocket_pubsub_subscriptions"] = 1,
    }, {
      ['moonsocket_connections{kind="websocket",transport="tcp"}'] =
        during['moonsocket_connections{kind="websocket",transport="tcp"}'],
      ["moonsocket_pubsub_topics"] = during.moonsocket_pubsub_topics,
      ["moonsocket_pubsub_subscriptions"] =
        during.moonsocket_pubsub_subscriptions,
    })

    c1:close(4001, "bye")
    c1:expect_close(4001)
    c2:send_text("close 1000")
    c2:expect_close(1000)
    c2:close(1000)
    -- what was queued before the drop, then the end
    c3.sock:settimeout(helper.DEFAULT_TIMEOUT)
    local err
    repeat
      local data
      data, err = c3.sock:receive(65536)
    until not data and err ~= "timeout" or err == "timeout"
    assert.are.equal("closed", err)
    c1.sock:close()
    c2.sock:close()
    c3.sock:close()
    assert(helper.wait_until(function()
      local now = scrape(port)
      -- no WebSocket; one HTTP connection: this scrape's
      return now['moonsocket_connections{kind="websocket",transport="tcp"}']
             == 0 and
             now['moonsocket_connections{kind="http",transport="tcp"}'] == 1
    end))

    local after = scrape(port)
    local names = {
      'moonsocket_connections_accepted_total{transport="tcp"}',
      'moonsocket_ws_handshakes_total{code="101"}',
      'moonsocket_ws_handshakes_total{code="403"}',
      'moonsocket_http_responses_total{code="403"}',
      'moonsocket_ws_messages_received_total{kind="text"}',
      'moonsocket_ws_messages_received_total{kind="binary"}',
      'moonsocket_ws_received_bytes_total{kind="text"}',
      'moonsocket_ws_received_bytes_total{kind="binary"}',
      'moonsocket_ws_messages_sent_total{kind="binary"}',
      'moonsocket_ws_sent_bytes_total{kind="binary"}',
      'moonsocket_ws_control_frames_received_total{kind="ping"}',
      'moonsocket_ws_control_frames_sent_total{kind="pong"}',
      'moonsocket_ws_control_frames_received_total{kind="close"}',
      'moonsocket_ws_frames_received_total',
      'moonsocket_ws_closes_total{code="4001",why="peer"}',
      'moonsocket_ws_closes_total{code="1000",why="local"}',
      'moonsocket_ws_closes_total{code="1008",why="error"}',
      'moonsocket_ws_sends_dropped_total{reason="backpressure"}',
      'moonsocket_ws_backpressure_closes_total',
      'moonsocket_pubsub_publishes_total',
      'moonsocket_pubsub_deliveries_total',
      'moonsocket_pubsub_topics',
      'moonsocket_pubsub_subscriptions',
      'moonsocket_connections_refused_total',
      'moonsocket_route_opens_total{route="/ws"}',
      'moonsocket_route_closes_total{route="/ws"}',
      'moonsocket_route_messages_received_total{route="/ws"}',
      'moonsocket_route_messages_sent_total{route="/ws"}',
      'moonsocket_route_websockets{route="/ws"}',
      'moonsocket_route_opens_total{route="/slow"}',
      'moonsocket_route_closes_total{route="/slow"}',
      'moonsocket_route_messages_received_total{route="/slow"}',
      'moonsocket_route_opens_total{route="/origin"}',
      'moonsocket_route_closes_total{route="/co"}',
    }
    local d = deltas(before, after, names)
    assert.are.same({
      -- the WebSockets, the refused one, the scrapes since the first
      ['moonsocket_connections_accepted_total{transport="tcp"}'] =
        3 + 1 + scrapes - 1,
      ['moonsocket_ws_handshakes_total{code="101"}'] = 3,
      ['moonsocket_ws_handshakes_total{code="403"}'] = 1,
      ['moonsocket_http_responses_total{code="403"}'] = 1,
      -- hello, sub t, pub t hi, close 1000, flood 400
      ['moonsocket_ws_messages_received_total{kind="text"}'] = 5,
      ['moonsocket_ws_messages_received_total{kind="binary"}'] = 1,
      ['moonsocket_ws_received_bytes_total{kind="text"}'] =
        #"hello" + #"sub t" + #"pub t hi" + #"close 1000" + #"flood 400",
      ['moonsocket_ws_received_bytes_total{kind="binary"}'] = 3,
      ['moonsocket_ws_messages_sent_total{kind="binary"}'] = 1,
      ['moonsocket_ws_sent_bytes_total{kind="binary"}'] = 3,
      ['moonsocket_ws_control_frames_received_total{kind="ping"}'] = 1,
      ['moonsocket_ws_control_frames_sent_total{kind="pong"}'] = 1,
      ['moonsocket_ws_control_frames_received_total{kind="close"}'] = 2,
      -- 6 data frames, a ping, 2 closes
      ['moonsocket_ws_frames_received_total'] = 9,
      ['moonsocket_ws_closes_total{code="4001",why="peer"}'] = 1,
      ['moonsocket_ws_closes_total{code="1000",why="local"}'] = 1,
      ['moonsocket_ws_closes_total{code="1008",why="error"}'] = 1,
      ['moonsocket_ws_sends_dropped_total{reason="backpressure"}'] = 1,
      ['moonsocket_ws_backpressure_closes_total'] = 1,
      ['moonsocket_pubsub_publishes_total'] = 1,
      ['moonsocket_pubsub_deliveries_total'] = 1,
      ['moonsocket_pubsub_topics'] = 0,
      ['moonsocket_pubsub_subscriptions'] = 0,
      ['moonsocket_connections_refused_total'] = 0,
      -- by route: c1 and c2 on /ws (hello, binary, sub t; pub t hi,
      -- close 1000; sent: their echoes, sub t, pub 1 and the publish)
      ['moonsocket_route_opens_total{route="/ws"}'] = 2,
      ['moonsocket_route_closes_total{route="/ws"}'] = 2,
      ['moonsocket_route_messages_received_total{route="/ws"}'] = 5,
      ['moonsocket_route_messages_sent_total{route="/ws"}'] = 5,
      ['moonsocket_route_websockets{route="/ws"}'] = 0,
      ['moonsocket_route_opens_total{route="/slow"}'] = 1,
      ['moonsocket_route_closes_total{route="/slow"}'] = 1,
      ['moonsocket_route_messages_received_total{route="/slow"}'] = 1,
      ['moonsocket_route_opens_total{route="/origin"}'] = 0,
      ['moonsocket_route_closes_total{route="/co"}'] = 0,
    }, d)
    -- while they were open
    assert.are.equal(2, during['moonsocket_route_websockets{route="/ws"}'])
    assert.are.equal(1,
      during['moonsocket_route_websockets{route="/slow"}'])
    assert.is_true(during['moonsocket_route_messages_sent_total{'
                          .. 'route="/slow"}'] >= 1)
  end)

  it("counts the process: Lua heap, memory, descriptors, loop", function()
    server = helper.start_server(APP)
    local c = ws(server.port)
    local before = scrape(server.port)
    assert.is_true(before.moonsocket_lua_heap_bytes > 0)
    assert.is_true(before.moonsocket_resident_memory_bytes > 0)
    -- stdin, stdout, stderr, the listener, the loop's, the WebSocket,
    -- this scrape's connection at least
    assert.is_true(before.moonsocket_open_fds >= 7)
    c:send_text("hold 16")                   -- 16 MiB, 16 files
    assert.are.equal("hold", text_of(c))
    local after = scrape(server.port)
    local d = deltas(before, after, {
      "moonsocket_lua_heap_bytes", "moonsocket_resident_memory_bytes",
      "moonsocket_open_fds", "moonsocket_loop_iterations_total" })
    assert.are.equal(16, d.moonsocket_open_fds)
    assert.is_true(d.moonsocket_lua_heap_bytes >= 16 << 20,
                   d.moonsocket_lua_heap_bytes)
    assert.is_true(d.moonsocket_resident_memory_bytes >= 16 << 20,
                   d.moonsocket_resident_memory_bytes)
    -- a message and an accepted scrape: an iteration each at least
    assert.is_true(d.moonsocket_loop_iterations_total >= 2,
                   d.moonsocket_loop_iterations_total)
    c:close(1000)
    c:expect_close(1000)
    c.sock:close()
  end)

  -- One call into Lua in 16 is timed: of 16 calls in a row, exactly one.
  for _, case in ipairs { { "/ws", "message" }, { "/co", "coroutine" } } do
    local path, callback = case[1], case[2]
    it("times one " .. callback .. " call in 16, in its bucket", function()
      server = helper.start_server(APP)
      local c = ws(server.port, path)
      local before = scrape(server.port)
      for _ = 1, 16 do                 -- nothing else is called between
        c:send_text("slow 30")
        assert.are.equal("slow", text_of(c))
      end
      local after = scrape(server.port)
      local name = "moonsocket_lua_callback_seconds"
      local label = '{callback="' .. callback .. '"'
      local d = deltas(before, after, {
        name .. "_count" .. label .. "}", name .. "_sum" .. label .. "}",
        name .. "_bucket" .. label .. ',le="0.025"}',
        name .. "_bucket" .. label .. ',le="0.05"}',
        name .. "_bucket" .. label .. ',le="+Inf"}' })
      assert.are.equal(1, d[name .. "_count" .. label .. "}"])
      assert.are.equal(1, d[name .. "_bucket" .. label .. ',le="+Inf"}'])
      -- 30 ms of CPU time: more than 25 ms of the clock
      assert.are.equal(0, d[name .. "_bucket" .. label .. ',le="0.025"}'])
      assert.is_true(d[name .. "_sum" .. label .. "}"] >= 0.03)
      -- the buckets are cumulative, and end at the count
      local last = 0
      for line in select(2, scrape(server.port)):gmatch("[^\n]+") do
        local v = line:match("^" .. name .. "_bucket" .. label
                             .. ',le="[^"]+"} (%d+)$')
        if v then
          assert.is_true(tonumber(v) >= last)
          last = tonumber(v)
        end
      end
      assert.are.equal(after[name .. "_count" .. label .. "}"], last)
      c:close(1000)
      c:expect_close(1000)
      c.sock:close()
    end)
  end

  it("counts 32 routes apart, with paths of up to 95 bytes", function()
    -- in a process of its own: other specs may make routes in this one
    local p = io.popen([[lua5.4 -e '
      local core = require "moonsocket.core"
      local long = "/" .. ("x"):rep(95)
      core.route_options(nil, nil, long)
      core.route_options(nil, nil, long:sub(1, 95))
      for i = 1, 40 do core.route_options(nil, nil, "/r" .. i) end
      core.route_options(nil, nil, "/r1")      -- the same route
      local routes, n = core.metrics().routes, 0
      for _ in pairs(routes) do n = n + 1 end
      local r = routes[long:sub(1, 95)]
      print(n, routes[long] == nil, r.opened, r.closed, r.open,
            r.messages_received, r.messages_sent, routes["/r31"] ~= nil,
            routes["/r32"] == nil)' 2>&1]])
    local out = p:read("a")
    p:close()
    assert.are.equal("32\ttrue\t0\t0\t0\t0\t0\ttrue\ttrue\n", out)
  end)

  it("counts the bytes compressed and inflated (permessage-deflate)",
     function()
    server = helper.start_server(APP)
    local port = server.port
    local c = ws(port, "/z",
                 { ["Sec-WebSocket-Extensions"] = "permessage-deflate" })
    local before = scrape(port)
    -- "hello" in a stored block (RFC 1951 3.2.4), then the header byte
    -- of the empty one whose 00 00 ff ff the sender strips (RFC 7692
    -- 7.2.1), RSV1 set: 11 bytes that inflate to 5; the echo is under
    -- the threshold, plain
    c:send_frame { rsv = 4, payload = "\0" .. string.pack("<I2I2", 5,
                                      0xfffa) .. "hello\0" }
    local frame = assert(c:read_frame())
    assert.are.same({ 0, "hello" }, { frame.rsv, frame.payload })
    -- 1000 bytes sent plain come back compressed
    local a = ("a"):rep(1000)
    c:send_text(a)
    frame = assert(c:read_frame())
    assert.are.equal(4, frame.rsv)
    local after = scrape(port)
    local d = deltas(before, after, {
      "moonsocket_ws_deflate_input_bytes_total",
      "moonsocket_ws_deflate_output_bytes_total",
      "moonsocket_ws_inflate_input_bytes_total",
      "moonsocket_ws_inflate_output_bytes_total",
      'moonsocket_ws_received_bytes_total{kind="text"}' })
    assert.are.same({
      moonsocket_ws_deflate_input_bytes_total = 1000,
      moonsocket_ws_deflate_output_bytes_total = #frame.payload,
      moonsocket_ws_inflate_input_bytes_total = 11,
      moonsocket_ws_inflate_output_bytes_total = 5,
      ['moonsocket_ws_received_bytes_total{kind="text"}'] = 5 + 1000,
    }, d)
    assert.is_true(#frame.payload < 100)
    c:close(1000)
    c:expect_close(1000)
    c.sock:close()
  end)

  it("counts TLS handshakes that fail, not those that succeed or stop",
     function()
    local dir, cert, key = helper.temp_cert("metrics")
    local tls_port = helper.free_port()
    server = helper.start_server(APP, { TLS_PORT = tls_port, CERT = cert,
                                        KEY = key })
    local before = scrape(server.port)
    -- a whole wss echo: a handshake that succeeds
    local out, status = helper.run_peer("tls_client.py",
                                        { tls_port, "subject" })
    assert.are.equal(0, status, out)
    -- a record that is no TLS (nor HTTP): a failure; then a ClientHello
    -- cut short by a client that leaves, which is no failure (a client
    -- that connects and leaves, as a TCP probe does, is none either)
    local sock = assert(helper.connect(tls_port))
    sock:send("\22\3\1\0\5\255\255\255\255\255")
    local data, err                     -- an alert, perhaps, then the end
    repeat data, err = sock:receive(1) until not data
    assert.is_true(err == "closed" or err == "connection reset by peer",
                   err)
    sock:close()
    sock = assert(helper.connect(tls_port))
    sock:send("\22\3\1\2\0\1\0\1\252\3\3")
    sock:close()
    local after
    assert(helper.wait_until(function()
      after = scrape(server.port)
      return after['moonsocket_connections{kind="http",transport="tls"}']
             == 0
    end))
    local d = deltas(before, after, {
      "moonsocket_tls_handshake_failures_total",
      'moonsocket_connections_accepted_total{transport="tls"}' })
    assert.are.same({
      moonsocket_tls_handshake_failures_total = 1,
      ['moonsocket_connections_accepted_total{transport="tls"}'] = 3,
    }, d)
    os.execute(("rm -rf %q"):format(dir))
  end)

  it("is valid Prometheus text (promtool check metrics)", function()
    server = helper.start_server(APP)
    local c = ws(server.port)
    c:send_text("hello")
    text_of(c)
    c:close(4001)
    c:expect_close(4001)
    c.sock:close()
    local _, body, headers = scrape(server.port)
    assert.are.equal("text/plain; version=0.0.4; charset=utf-8",
                     headers["content-type"])
    assert.are.equal("rc=0\n", promtool_check(body))
  end)

  it("sums the workers in one scrape (workers = 2)", function()
    server = helper.start_server(APP, { WORKERS = 2 })
    local port = server.port
    -- both workers listen once both started (slow under valgrind)
    assert(helper.wait_until(function()
      local log = server:log()
      return log:find("worker 1 started", 1, true)
             and log:find("worker 2 started", 1, true)
    end, helper.scaled(10)), server:log())
    local clients, seen = {}, {}
    -- until both workers have sockets (the kernel spreads them)
    for i = 1, 40 do
      local c = helper.wait_until(function()
        return helper.ws_connect(port, "/ws")
      end, helper.scaled(10))
      assert(c, "cannot connect")
      c:send_text("pid")
      local w = assert(text_of(c)):match("^pid (%d+)$")
      seen[w] = (seen[w] or 0) + 1
      clients[i] = c
      if seen["1"] and seen["2"] and i >= 4 then break end
    end
    assert.is_truthy(seen["1"] and seen["2"])
    local mine = {}
    for _, c in ipairs(clients) do
      c:send_text("mine")
      local n = assert(text_of(c)):match("^mine (%d+)$")
      mine[#mine + 1] = tonumber(n)
    end
    -- every scrape, whichever worker answers it, has them all
    for _ = 1, 4 do
      local m = scrape(port)
      assert.are.equal(3, m.moonsocket_processes)
      assert.are.equal(#clients,
        m['moonsocket_connections{kind="websocket",transport="tcp"}'])
      assert.are.equal(2 * #clients,
        m['moonsocket_ws_messages_received_total{kind="text"}'])
      assert.are.equal(#clients, m['moonsocket_route_websockets{route="/ws"}'])
      assert.are.equal(2 * #clients,
        m['moonsocket_route_messages_received_total{route="/ws"}'])
    end
    -- the process figures sum the three processes'
    local m = scrape(port)
    local own = {}
    for _, c in ipairs(clients) do
      c:send_text("process")
      local w, heap, rss, fds = assert(text_of(c)):match(
        "^process (%d+) (%d+) (%d+) (%d+)$")
      own[w] = { tonumber(heap), tonumber(rss), tonumber(fds) }
    end
    for _, w in ipairs { "1", "2" } do
      assert.is_true(own[w][1] > 0 and own[w][2] > 0 and own[w][3] > 0)
      assert.is_true(m.moonsocket_lua_heap_bytes > own[w][1])
      assert.is_true(m.moonsocket_resident_memory_bytes > own[w][2])
      assert.is_true(m.moonsocket_open_fds > own[w][3])
    end
    -- a worker's own figures: what its sockets sent it, and no more
    local max = 0
    for _, n in ipairs(mine) do max = math.max(max, n) end
    assert.is_true(max < 2 * #clients)
    for _, c in ipairs(clients) do
      c:close(1000)
      c:expect_close(1000)
      c.sock:close()
    end
  end)
end)
