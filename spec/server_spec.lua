-- spec/server_spec.lua: the Lua API over a real server: callbacks and
-- their order, request data, handler errors, back-pressure and drain,
-- timeouts, keep-alive pings, the middleware pipeline, shutdown, IPv6.
local helper = require "helper"
local socket = require "socket"

local TEXT, BINARY = helper.TEXT, helper.BINARY
local PING, PONG = helper.PING, helper.PONG

describe("server", function()
  local server = helper.with_server("spec/apps/probe.lua",
    { MAX_BACKPRESSURE = 262144, KEEP_ALIVE = 0, CLOSE_TIMEOUT = 0.5,
      HANDSHAKE_TIMEOUT = 0.5 })

  it("calls open with the request and gives per-connection data", function()
    local ws = assert(helper.ws_connect(server.port, "/ws?room=7",
      { ["X-Probe"] = "hello" }))
    ws:send_text("info")
    ws:send_text("info")
    assert.are.same({ TEXT, "hello 127.0.0.1 open 1" },
                    { ws:recv_message() })
    assert.are.same({ TEXT, "hello 127.0.0.1 open 2" },
                    { ws:recv_message() })
    helper.wait_event(server.port, "open /ws room=7 open")
    ws:close(1000, "done")
    assert.are.same({ 1000, "done" }, { ws:expect_close() })  -- echoed
    helper.wait_event(server.port, "close 1000 done closing")
  end)

  local DROPPED = "ws.request is kept only until open returns; set "
    .. "keep_request = true on the route or copy what you need into ws.data"

  it("drops ws.request when open returns", function()
    local ws = assert(helper.ws_connect(server.port, "/ws?room=8"))
    ws:send_text("request")
    local kind, text = ws:recv_message()
    assert.are.equal(TEXT, kind)
    assert.matches("^spec/apps/probe.lua:%d+: ", text)
    assert.are.equal(DROPPED, text:gsub("^[^:]+:%d+: ", ""))
    helper.wait_event(server.port, "open /ws room=8 open")
    ws:abort()
  end)

  it("drops a coroutine's ws.request when it first waits", function()
    local ws = assert(helper.ws_connect(server.port, "/co-request?x=1"))
    assert.are.same({ TEXT, "/co-request?x=1" }, { ws:recv_message() })
    ws:send_text("next")
    local _, text = ws:recv_message()
    assert.are.equal(DROPPED, text:gsub("^[^:]+:%d+: ", ""))
    ws:abort()
  end)

  it("keeps ws.request on a route with keep_request", function()
    local ws = assert(helper.ws_connect(server.port, "/kept?k=2",
      { ["X-Probe"] = "kept" }))
    ws:send_text("a")
    ws:send_text("b")
    assert.are.same({ TEXT, "/kept?k=2 kept" }, { ws:recv_message() })
    assert.are.same({ TEXT, "/kept?k=2 kept" }, { ws:recv_message() })
    ws:close(1000)
    ws:expect_close(1000)
  end)

  it("closes with 1011 on a handler error and keeps serving", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("boom")
    assert.are.equal(1011, ws:expect_close())
    local other = assert(helper.ws_connect(server.port, "/ws"))
    other:send_text("info")
    assert.are.equal(TEXT, (other:recv_message()))
    other:abort()
    helper.wait_until(function()
      return server:log():find("handler failed on purpose") ~= nil
    end, 2)
    assert.matches("error in message handler: spec/apps/probe.lua:%d+: "
      .. "handler failed on purpose\nstack traceback:", server:log())
  end)

  it("reports 1006 to close when the peer vanishes", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("info")
    ws:recv_message()
    ws:abort()
    helper.wait_event(server.port, "close 1006  closed")
  end)

  it("starts the closing handshake from ws:close", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("close")
    local code, reason = ws:expect_close()
    assert.are.same({ 4000, "bye" }, { code, reason })
    helper.wait_event(server.port, "close 4000  closing")
  end)

  it("hands messages that cross our close frame to the handler, whose"
    .. " send reports them dropped", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    -- one write: the second message is read after the server closed
    assert.is_true(ws:send_raw(
      helper.build_frame{ opcode = helper.TEXT, payload = "close" } ..
      helper.build_frame{ opcode = helper.TEXT, payload = "after" }))
    local code, reason = ws:expect_close()
    assert.are.same({ 4000, "bye" }, { code, reason })
    helper.wait_event(server.port, "late after nil ECLOSED", true)
  end)

  it("closes TCP when the peer never answers our close", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("close")
    local frame = ws:read_frame()
    assert.are.equal(helper.CLOSE, frame.opcode)
    -- no answer: the server gives up after close_timeout (0.5 s)
    assert.is_true(ws:is_closed(3))
    helper.wait_event(server.port, "close 1006")
  end)

  it("closes connections that send no request head in time", function()
    local sock = helper.connect(server.port)
    sock:send("GET / HTTP/1.1\r\n")
    assert.is_true((helper.socket_closed(sock, 3)))
    sock:close()
  end)

  it("sends pings on request and reports pongs", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("ping")
    assert.are.same({ PING, "server ping" }, { ws:recv_message() })
    ws:send_frame{ opcode = PONG, payload = "server ping" }
    helper.wait_event(server.port, "pong server ping")
    ws:abort()
  end)

  it("closes a consumer over max_backpressure with 1008", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    -- 64 MiB: more than the kernel buffers on loopback (a receive buffer
    -- may grow to tcp_rmem's maximum, 32 MiB on some machines)
    ws:send_text("flood:1024:65536")
    helper.wait_event(server.port,
      "flood stopped: dropped: max_backpressure exceeded EBACKPRESSURE")
    local frame
    repeat
      frame = assert(ws:read_frame())
    until frame.opcode == helper.CLOSE
    assert.are.equal(1008, string.unpack(">I2", frame.payload))
    helper.wait_event(server.port, "close 1008 send buffer limit exceeded")
    ws:abort()
  end)

  it("yields a coroutine's send under back-pressure", function()
    local ws = assert(helper.ws_connect(server.port, "/co"))
    -- 8 MiB through a 256 KiB max_backpressure: only waiting for drain
    -- between sends gets all of it through
    ws:send_text("flood:128:65536")
    helper.wait_until(function() return false end, 0.3)
    for i = 1, 128 do
      local op, payload = ws:recv_message()
      assert.are.equal(BINARY, op, "message " .. i)
      assert.are.equal(65536, #payload)
    end
    assert.are.same({ TEXT, "flood done" }, { ws:recv_message() })
    ws:close(1000)
    ws:expect_close(1000)
    helper.wait_event(server.port, "co receive closed 1000")
  end)

  it("closes with 1011 when a handler sends text that is not UTF-8",
     function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("badtext")
    assert.are.equal(1011, ws:expect_close())
    assert.matches("text is not UTF%-8", server:log())
  end)

  it("raises Lua's standard errors on misuse", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("misuse")
    assert.are.same({ TEXT, table.concat({
      -- called through pcall, Lua cannot name the function: '?'
      "bad argument #1 to '?' (moonsocket.ws expected, got number)",
      "bad argument #3 to '?' (invalid option 'bogus')",
      "bad argument #2 to '?' (invalid close code)" }, "\n") },
      { ws:recv_message() })
    ws:abort()
  end)

  it("survives a handler table whose metatable raises", function()
    local ws = assert(helper.ws_connect(server.port, "/strict"))
    -- the lookup of 'open' raised: logged, 1011, the server goes on
    assert.are.equal(1011, ws:expect_close())
    assert.matches("error in open handler: spec/apps/probe.lua:%d+: "
      .. "no field open", server:log())
    local echo = assert(helper.ws_connect(server.port, "/ws"))
    echo:send_text("info")
    assert.are.equal(TEXT, (echo:recv_message()))
    echo:abort()
  end)

  it("closes with 1011 a coroutine that yields by itself", function()
    local ws = assert(helper.ws_connect(server.port, "/yield"))
    assert.are.same({ TEXT, "about to yield" }, { ws:recv_message() })
    assert.are.equal(1011, ws:expect_close())
    assert.matches("yielded outside receive%(%) and send%(%)", server:log())
  end)

  it("closes a ping flood that does not read its pongs with 1008", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local ping = helper.build_frame{ opcode = PING,
                                     payload = string.rep("p", 125) }
    ws:settimeout(0.5)
    for _ = 1, 40 do       -- up to 40 x 1 MiB of pings, never reading
      local ok = ws:send_raw(string.rep(ping, 8000))
      if not ok then break end
      if helper.events(server.port):find("close 1008") then break end
    end
    helper.wait_event(server.port, "close 1008 send buffer limit exceeded")
    ws:abort()
  end)

  it("drops data after its close but still reads the peer's close",
     function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("close")
    local frame = ws:read_frame()
    assert.are.equal(helper.CLOSE, frame.opcode)
    -- a fragmented message and a whole one before our close reply
    ws:send_frame{ fin = false, opcode = TEXT, payload = "a" }
    ws:send_frame{ opcode = helper.CONTINUATION, payload = "b" }
    ws:send_text("c")
    ws:close(1000, "late")
    assert.is_true(ws:is_closed(2))
    helper.wait_event(server.port, "close 1000 late")
  end)

  it("answers 400 to an HTTP/1.1 request without one Host", function()
    for _, head in ipairs { "GET /events HTTP/1.1\r\n\r\n",
        "GET /events HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" } do
      local status, _, _, sock = helper.http(server.port, head)
      assert.are.equal(400, status)
      sock:close()
    end
    local status, _, _, sock = helper.http(server.port,
      "GET /events HTTP/1.0\r\n\r\n")
    assert.are.equal(200, status)      -- HTTP/1.0 needs none
    sock:close()
  end)

  it("ignores an empty line before a request", function()
    local status, _, _, sock = helper.http(server.port,
      "\r\nGET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(200, status)
    sock:close()
  end)

  it("runs middleware before the routes", function()
    local status, headers, body, sock = helper.http(server.port,
      "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(200, status)
    assert.are.equal("text/plain", headers["content-type"])
    assert.are.equal(#body, tonumber(headers["content-length"]))
    -- keep-alive: a second request on the same connection
    sock:send("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(404, (helper.read_response(sock)))
    sock:close()
  end)

  it("answers pipelined requests in order", function()
    local sock = helper.connect(server.port)
    sock:send("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert.are.equal(404, (helper.read_response(sock)))
    assert.are.equal(200, (helper.read_response(sock)))
    assert.are.equal(426, (helper.read_response(sock)))
    assert.is_true((helper.socket_closed(sock, 2)))
    sock:close()
  end)

  it("answers 500 when middleware fails or returns a bad header", function()
    for _, path in ipairs { "/fail", "/bad-header" } do
      local status, _, _, sock = helper.http(server.port,
        "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.are.equal(500, status)
      sock:close()
    end
    assert.matches("middleware failed on purpose", server:log())
  end)
end)

describe("server options", function()
  it("pings idle sockets every keep_alive_interval", function()
    local server = helper.start_server("spec/apps/probe.lua",
      { KEEP_ALIVE = 0.2 })
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local t0 = os.time()
    assert.are.same({ PING, "" }, { ws:recv_message(3) })
    assert.are.same({ PING, "" }, { ws:recv_message(3) })
    assert.is_true(os.time() - t0 <= 3)
    ws:abort()
    helper.stop_and_check(server)
  end)

  it("queues under back-pressure, then drains", function()
    local server = helper.start_server("spec/apps/probe.lua",
      { MAX_BACKPRESSURE = 64 * 1048576 })
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    -- 32 MiB is more than loopback's socket buffers take at once
    ws:send_text("flood:32:1048576")
    helper.wait_until(function() return false end, 0.3)  -- not reading
    for _ = 1, 32 do
      local op, payload = ws:recv_message()
      assert.are.equal(BINARY, op)
      assert.are.equal(1048576, #payload)
    end
    assert.are.same({ TEXT, "flood done" }, { ws:recv_message() })
    local tally = helper.events(server.port)
    local sent, queued = tally:match("flood sent=(%d+) queued=(%d+)")
    assert.are.equal(32, tonumber(sent) + tonumber(queued))
    assert.is_true(tonumber(queued) > 0)
    helper.wait_event(server.port, "drain 0")
    ws:abort()
    helper.stop_and_check(server)
  end)

  it("listens on IPv6", function()
    local server = helper.start_server("spec/apps/probe.lua",
      { HOST = "::1" })
    assert.matches("listening on %[::1%]:%d+", server:log())
    local socket = require "socket"
    local sock = assert(socket.tcp6())
    sock:settimeout(5)
    assert(sock:connect("::1", server.port))
    sock:send("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(404, (helper.read_response(sock)))
    sock:close()
    helper.stop_and_check(server)
  end)

  it("refuses a bad option at startup, naming it", function()
    local bin = os.getenv("MOONSOCKET_BIN") or "build/moonsocket"
    local run = io.popen(("CLOSE_TIMEOUT=-1 %s spec/apps/probe.lua 2>&1; "
      .. "echo \"exit $?\""):format(bin))
    local out = run:read("a")
    run:close()
    assert.matches("option 'close_timeout' must be a number of seconds "
      .. "from 0.001 to 86400", out)
    assert.matches("exit 1\n$", out)
  end)

  it("closes open sockets with 1001 on SIGTERM and exits 0", function()
    local server = helper.start_server("spec/apps/probe.lua", {})
    local a = assert(helper.ws_connect(server.port, "/ws"))
    local b = assert(helper.ws_connect(server.port, "/co"))
    server:kill("TERM")
    assert.are.equal(1001, a:expect_close())
    assert.are.equal(1001, b:expect_close())
    assert.are.equal(0, server:stop())
    helper.assert_clean_log(server)
  end)

  -- A reader on stdin (a FIFO that nobody closes) is a watcher that
  -- never ends: after the shutdown it must not keep the process going,
  -- whether the script ran the loop itself or left that to the runner.
  for _, form in ipairs({ "runner", "app" }) do
    it("exits 0 on SIGTERM with a core.reader open (run by the " .. form
       .. ")", function()
      local fifo = os.tmpname()
      os.remove(fifo)
      assert(os.execute("mkfifo " .. helper.shell_quote(fifo)))
      local server = helper.start_server("spec/apps/reader.lua",
        { RUN = form }, { stdin = fifo })
      local ws = assert(helper.ws_connect(server.port, "/ws"))
      local started = socket.gettime()
      server:kill("TERM")
      assert.are.equal(1001, ws:expect_close())
      ws:close(1001)                   -- the closing handshake is done
      ws:abort()
      local exited = helper.wait_until(function() return server:exited() end,
                                       helper.scaled(3))
      local took = socket.gettime() - started
      os.remove(fifo)
      assert.are.equal(0, server:stop(), server:log())
      assert.is_truthy(exited, "still running 3 s after SIGTERM:\n"
        .. server:log())
      assert.is_true(took < helper.scaled(3))
      if form == "app" then
        assert.matches("run%(%) returned", server:log())
      end
      helper.assert_clean_log(server)
    end)
  end
end)
