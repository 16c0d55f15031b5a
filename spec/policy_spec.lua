-- spec/policy_spec.lua: route policies (origins, the upgrade hook,
-- subprotocols), per-route options, idle and keep-alive timeouts, why a
-- socket ended, max_connections, logging and graceful shutdown.
local helper = require "helper"

local TEXT = helper.TEXT

-- The status an upgrade to path with extra headers gets (101 or other),
-- the response headers, and the socket.
local function upgrade(port, path, headers)
  local request = helper.upgrade_request{ path = path, headers = headers }
  local status, h, _, sock = helper.http(port, request)
  return status, h, sock
end

describe("policies", function()
  local server = helper.with_server("spec/apps/policy.lua",
                                    { MAX_CONNECTIONS = 100 })

  describe("allowed_origins", function()
    it("accepts a listed origin however it is cased or ported", function()
      for _, origin in ipairs { "https://example.com",
          "HTTPS://EXAMPLE.COM:443", "http://localhost:5000" } do
        local status, _, sock = upgrade(server.port, "/origins",
                                        { Origin = origin })
        assert.are.equal(101, status, origin)
        sock:close()
      end
    end)

    it("answers 403 to another origin and closes", function()
      for _, origin in ipairs { "https://evil.test", "http://example.com",
          "https://example.com:8443", "null" } do
        local status, _, sock = upgrade(server.port, "/origins",
                                        { Origin = origin })
        assert.are.equal(403, status, origin)
        assert.is_true((helper.socket_closed(sock, 2)))
        sock:close()
      end
    end)

    it("lets a request without Origin through (it is no browser)", function()
      local status, _, sock = upgrade(server.port, "/origins")
      assert.are.equal(101, status)
      sock:close()
    end)

    it("asks a policy function", function()
      local ok, _, a = upgrade(server.port, "/originfn",
                               { Origin = "https://ok.test" })
      local no, _, b = upgrade(server.port, "/originfn",
                               { Origin = "https://no.test" })
      local none, _, c = upgrade(server.port, "/originfn")
      assert.are.same({ 101, 403, 403 }, { ok, no, none })
      a:close(); b:close(); c:close()
    end)
  end)

  describe("the upgrade hook", function()
    it("accepts and attaches data", function()
      for _, try in ipairs { { "/auth?token=secret" },
          { "/auth", { Cookie = "theme=dark; session=abc" } } } do
        local ws = assert(helper.ws_connect(server.port, try[1], try[2]))
        ws:send_text("who")
        assert.are.same({ TEXT, "alice" }, { ws:recv_message() })
        ws:abort()
      end
    end)

    it("refuses with its own status and headers", function()
      local status, headers, sock = upgrade(server.port, "/auth?token=bad")
      assert.are.equal(401, status)
      assert.are.equal("Bearer", headers["www-authenticate"])
      sock:close()
    end)

    it("refuses with 403 when it says false", function()
      local status, _, sock = upgrade(server.port, "/auth")
      assert.are.equal(403, status)
      sock:close()
    end)

    -- The upgrade to /verdict?QUERY with a request pipelined behind it:
    -- the whole first response, and whether the connection then closed.
    local function verdict(query)
      local sock = assert(helper.connect(server.port))
      sock:send(helper.upgrade_request{ path = "/verdict?" .. query }
        .. "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
      local response = helper.read_raw_response(sock)
      local closed = helper.socket_closed(sock, 3)
      sock:close()
      return response, closed
    end

    local SERVER_ERROR = "HTTP/1.1 500 Internal Server Error\r\n"
      .. "Content-Length: 50\r\nConnection: close\r\n"
      .. "Content-Type: text/plain; charset=utf-8\r\n\r\n"
      .. "500 Internal Server Error: the application failed\n"

    local FORBIDDEN = "HTTP/1.1 403 Forbidden\r\nContent-Length: 14\r\n"
      .. "Connection: close\r\nContent-Type: text/plain; charset=utf-8"
      .. "\r\n\r\n403 Forbidden\n"

    it("accepts only with true or a table", function()
      for _, query in ipairs { "true", "table" } do
        local ws = assert(helper.ws_connect(server.port,
                                            "/verdict?" .. query))
        ws:send_text("who")
        assert.are.same({ TEXT, query == "table" and "bob" or "nil" },
                        { ws:recv_message() }, query)
        ws:abort()
      end
    end)

    it("refuses with 403 on false, nil or nothing", function()
      for _, query in ipairs { "false", "nil", "nothing", "nil-denied" } do
        assert.are.same({ FORBIDDEN, true }, { verdict(query) }, query)
      end
    end)

    it("answers 500, logged, to any other verdict", function()
      assert.are.same({ SERVER_ERROR, true }, { verdict("string") })
      assert.matches("moonsocket: error error in request handler: the "
        .. "upgrade hook of route '/verdict' %(spec/apps/policy.lua:%d+%) "
        .. 'returned a string %("denied"%); it must return true, a table, '
        .. "false, nil or a status\nstack traceback:", server:log())
    end)

    it("answers 500 and closes when it raises", function()
      assert.are.same({ SERVER_ERROR, true }, { verdict("raise") })
      assert.matches("error in request handler: spec/apps/policy.lua:%d+: "
        .. "hook failed on purpose\nstack traceback:", server:log())
    end)

    it("answers 500 and closes when it returns a header with CR LF",
       function()
      assert.are.same({ SERVER_ERROR, true }, { verdict("crlf") })
    end)
  end)

  describe("subprotocols (Python websockets)", function()
    local function negotiate(path, ...)
      local out, status = helper.run_peer("policy_client.py",
        { server.port, "subprotocol", path, ... })
      assert.are.equal(0, status, out)
      return out
    end

    it("picks the first of the client's list that the route speaks",
       function()
      assert.are.equal("chat.v1 chat.v1\n",
                       negotiate("/chat", "chat.v0", "chat.v1", "chat.v2"))
      assert.are.equal("chat.v2 chat.v2\n", negotiate("/chat", "chat.v2"))
    end)

    it("refuses when nothing matches, unless told not to", function()
      assert.are.equal("refused 400\n", negotiate("/chat", "other"))
      assert.are.equal("refused 400\n", negotiate("/chat"))
      assert.are.equal("None nil\n", negotiate("/chat-optional", "other"))
    end)

    it("lets a chooser pick from the offer", function()
      assert.are.equal("b b\n", negotiate("/choose", "a", "b"))
    end)
  end)

  it("applies per-route options over the app's", function()
    local small = assert(helper.ws_connect(server.port, "/small"))
    small:send_text(string.rep("x", 11))
    assert.are.equal(1009, small:expect_close())
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text(string.rep("x", 11))
    assert.are.same({ TEXT, string.rep("x", 11) }, { ws:recv_message() })
    ws:abort()
  end)

  describe("timeouts", function()
    it("closes a silent socket after idle_timeout (1001, timeout)",
       function()
      local ws = assert(helper.ws_connect(server.port, "/idle"))
      local code, reason = ws:expect_close()
      assert.are.same({ 1001, "idle timeout" }, { code, reason })
      helper.wait_event(server.port,
        "idle close 1001  timeout", true)  -- the reply's
    end)

    it("keeps a client that pings open past idle_timeout", function()
      local out = helper.run_peer("policy_client.py",
        { server.port, "pings", "/idle", 1.2 })
      assert.are.equal("open\n", out)
    end)

    it("closes a socket that does not answer pings (keep_alive_timeout)",
       function()
      local ws = assert(helper.ws_connect(server.port, "/keepalive"))
      local frame = assert(ws:read_frame())
      assert.are.equal(helper.PING, frame.opcode)
      local code, reason = ws:expect_close()     -- no pong from us
      assert.are.same({ 1001, "keep-alive timeout" }, { code, reason })
      helper.wait_event(server.port, "keepalive close 1001  timeout", true)
    end)

    it("keeps a socket that answers its pings", function()
      local out = helper.run_peer("policy_client.py",
        { server.port, "pings", "/keepalive", 1.2 })
      assert.are.equal("open\n", out)
    end)
  end)

  it("tells the close handler why the socket ended", function()
    local a = assert(helper.ws_connect(server.port, "/ws"))
    a:close(1000, "done")
    a:expect_close(1000)
    helper.wait_event(server.port, "ws close 1000 done peer", true)
    local b = assert(helper.ws_connect(server.port, "/ws"))
    b:send_text("bye")
    b:expect_close(4001)
    helper.wait_event(server.port, "ws close 4001  local", true)
    local c = assert(helper.ws_connect(server.port, "/ws"))
    c:send_frame{ opcode = TEXT, payload = "x", mask = false }
    c:expect_close(1002)
    helper.wait_event(server.port,
      "ws close 1002 client frame not masked error", true)
    local d = assert(helper.ws_connect(server.port, "/ws"))
    d:send_text("x")
    d:recv_message()
    d:abort()
    helper.wait_event(server.port, "ws close 1006  lost", true)
  end)

  it("logs a line per open and close", function()
    local ws = assert(helper.ws_connect(server.port, "/ws?x=1"))
    ws:close(1000, "logged")
    ws:expect_close(1000)
    helper.wait_until(function()
      return server:log():find('"logged"', 1, true) ~= nil
    end, 3)
    local log = server:log()
    assert.matches("moonsocket: info open 127%.0%.0%.1 /ws%?x=1\n", log)
    assert.matches('moonsocket: info close 127%.0%.0%.1 /ws%?x=1 '
      .. '%d+%.%d%d%ds 1000 "logged" peer\n', log)
  end)

  it("logs the same close line for a route that keeps its request",
     function()
    local ws = assert(helper.ws_connect(server.port, "/kept?y=2"))
    ws:send_text("bye")
    ws:expect_close(4001)
    helper.wait_until(function()
      return server:log():find("close 127.0.0.1 /kept?y=2 ", 1, true) ~= nil
    end, 3)
    -- the peer's answer to our close frame: its code, no reason
    assert.matches('moonsocket: info close 127%.0%.0%.1 /kept%?y=2 '
      .. '%d+%.%d%d%ds 4001 "" local\n', server:log())
  end)

  -- The lines of the log that contain text (plain).
  local function lines_with(text)
    local found = {}
    for line in server:log():gmatch("[^\n]*") do
      if line:find(text, 1, true) then found[#found + 1] = line end
    end
    return found
  end

  it("escapes a close reason that would forge a line", function()
    local ws = assert(helper.ws_connect(server.port, "/ws?forge=1"))
    ws:close(1000, 'bye\nmoonsocket: error accept: x\27[2J "q" \\')
    ws:expect_close(1000)
    helper.wait_until(function() return #lines_with("?forge=1 ") > 0 end, 3)
    local lines = lines_with("?forge=1 ")
    assert.are.equal(1, #lines)
    local tail = ' 1000 "bye\\nmoonsocket: error accept: x\\x1b[2J \\"q\\" '
      .. '\\\\" peer'
    assert.are.equal(tail, lines[1]:sub(-#tail), lines[1])
    assert.matches("^moonsocket: info close 127%.0%.0%.1 /ws%?forge=1 "
      .. "%d+%.%d%d%ds 1000 ", lines[1])
    assert.are.same({}, lines_with("\27"))
    assert.is_nil(("\n" .. server:log()):find("\nmoonsocket: error accept",
                                               1, true))
  end)

  it("escapes control bytes and bad UTF-8 in the request target",
     function()
    -- the request line admits no C0 byte; C1 ones (raw, or as UTF-8)
    -- and stray bytes get through, as may a long target
    local target = '/ws?t=\155[2J\194\155\255\194\169"\\'
    local ws = assert(helper.ws_connect(server.port, target))
    ws:close(1000)
    ws:expect_close(1000)
    local long = "/ws?long=" .. string.rep("a", 2000)
    ws = assert(helper.ws_connect(server.port, long))
    ws:close(1000)
    ws:expect_close(1000)
    helper.wait_until(function()
      return #lines_with("close 127.0.0.1 /ws?long=") > 0
    end, 3)
    local escaped = '/ws?t=\\x9b[2J\\xc2\\x9b\\xff\194\169\\"\\\\'
    assert.are.same({ "moonsocket: info open 127.0.0.1 " .. escaped },
                    lines_with("open 127.0.0.1 /ws?t="))
    assert.are.equal(1, #lines_with("close 127.0.0.1 " .. escaped .. " "))
    assert.are.same({}, lines_with("\155"))
    assert.are.same({}, lines_with("\255"))
    -- cut to a bounded length, with the count of what was left out
    local open = lines_with("open 127.0.0.1 /ws?long=")
    assert.are.equal(1, #open)
    local kept, cut = open[1]:match("/ws%?long=(a+)%.%.%.%(%+(%d+) bytes%)$")
    assert.is_truthy(kept, open[1])
    assert.is_true(#open[1] < 300)
    assert.are.equal(#long, 9 + #kept + tonumber(cut))
  end)
end)

describe("server limits and shutdown", function()
  it("answers 503 beyond max_connections", function()
    local server = helper.start_server("spec/apps/policy.lua",
      { MAX_CONNECTIONS = 3, LOG_LEVEL = "error" })
    local open = {}
    for i = 1, 3 do open[i] = assert(helper.ws_connect(server.port, "/ws")) end
    local status, _, _, sock = helper.http(server.port,
      "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(503, status)
    assert.is_true((helper.socket_closed(sock, 2)))
    sock:close()
    open[1]:close(1000)
    open[1]:expect_close(1000)
    helper.wait_until(function()
      local st, _, _, s = helper.http(server.port,
        "GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      if s then s:close() end
      return st == 200
    end, 3)
    for i = 2, 3 do open[i]:abort() end
    helper.stop_and_check(server)
    -- log_level = "error" left out the open and close lines
    assert.does_not.match("info open", server:log())
  end)

  it("app:shutdown closes sockets with 1001 and the runner exits 0",
     function()
    local server = helper.start_server("spec/apps/policy.lua", {})
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local status, _, _, sock = helper.http(server.port,
      "GET /shutdown HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(200, status)
    sock:close()
    assert.are.equal(1001, ws:expect_close())
    assert.is_true(helper.wait_until(function()
      return server:exited() ~= nil
    end, 5))
    assert.are.equal(0, server:stop())
    assert.matches('info close 127%.0%.0%.1 /ws %d+%.%d+s 1001 "" shutdown',
                   server:log())
  end)

  it("delivers what was queued before the 1001 on SIGTERM", function()
    local server = helper.start_server("spec/apps/probe.lua",
      { MAX_BACKPRESSURE = 64 * 1048576 })
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("flood:24:1048576")       -- 24 MiB, not read yet
    helper.wait_until(function() return false end, 0.3)
    server:kill("TERM")
    for i = 1, 24 do
      local op, payload = ws:recv_message()
      assert.are.equal(helper.BINARY, op, "message " .. i)
      assert.are.equal(1048576, #payload)
    end
    assert.are.same({ TEXT, "flood done" }, { ws:recv_message() })
    assert.are.equal(1001, ws:expect_close())
    assert.are.equal(0, server:stop())
    helper.assert_clean_log(server)
  end)

  it("counts repeated warnings instead of writing each", function()
    local server = helper.start_server("spec/apps/policy.lua",
      { MAX_CONNECTIONS = 1, LOG_LEVEL = "warn" })
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local socket = require "socket"
    local started = socket.gettime()
    for i = 1, 2000 do
      local sock = assert(helper.connect(server.port))
      local answer = sock:receive("*a")
      sock:close()
      assert.matches("^HTTP/1%.1 503 ", answer, nil, "connection " .. i)
    end
    local took = socket.gettime() - started
    ws:abort()
    assert.are.equal(0, server:stop())
    -- each line is one refusal, or the count of its repeats
    local lines, refused = 0, 0
    for line in server:log():gmatch("[^\n]*") do
      if line:find("max_connections (1) reached: 503", 1, true) then
        lines = lines + 1
        refused = refused + tonumber(line:match(
          " %((%d+) similar lines suppressed%)$") or 1)
      end
    end
    assert.are.equal(2000, refused)
    -- a line, then the count of its repeats, per 10 s window
    assert.is_true(lines <= 2 * (math.floor(took / 10) + 1),
                   lines .. " lines in " .. took .. " s")
    assert.matches("moonsocket: warn max_connections %(1%) reached: 503 "
      .. "%(%d+ similar lines suppressed%)\n", server:log())
  end)
end)
