-- spec/http2_ws_spec.lua: WebSockets over HTTP/2 (RFC 8441 extended
-- CONNECT), against Python's h2 (spec/peers/h2_ws_client.py, which
-- writes the RFC 6455 frames itself): TLS with ALPN h2 and plain TCP
-- with prior knowledge, many WebSockets on one connection, the route's
-- policies (upgrade hook, subprotocol, permessage-deflate), malformed
-- frames and resets on one stream with the others unaffected, a stream
-- that stops reading, graceful shutdown (1001, then GOAWAY), pub/sub,
-- keep-alive pings, the drain event, a window held shut
-- (send_window_timeout).
local helper = require "helper"

local function h2ws(where, ...)
  local out, status = helper.run_peer("h2_ws_client.py", { where, ... })
  assert.are.equal(0, status, out)
  return out
end

-- The "closed PATH CODE WHY VERSION" lines the app printed.
local function closes(server, path)
  local list = {}
  for line in server:log():gmatch("closed " .. path .. " ([^\n]*)") do
    list[#list + 1] = line
  end
  return list
end

describe("WebSockets over HTTP/2", function()
  local dir, server, tls_port

  setup(function()
    local c, k
    dir, c, k = helper.temp_cert("h2")
    server = helper.start_server("spec/apps/http2_ws.lua",
      { CERT = c, KEY = k })
    tls_port = helper.wait_until(function()
      return tonumber(server:log():match("tls port (%d+)"))
    end)
    assert(tls_port, server:log())
  end)

  teardown(function()
    if server then helper.stop_and_check(server) end
    os.execute(("rm -rf %q"):format(dir))
  end)

  it("advertises SETTINGS_ENABLE_CONNECT_PROTOCOL on both ports", function()
    assert.are.equal("enable_connect_protocol 1\n",
      h2ws("tls:" .. tls_port, "settings"))
    assert.are.equal("enable_connect_protocol 1\n",
      h2ws(server.port, "settings"))
  end)

  local function echo_session(size, path)
    return "status 200\necho (1, b'hello')\nversion 2\n"
      .. ("binary %d True\n"):format(size)
      .. "close 1000 done ended\n"
  end

  it("echoes over TLS (ALPN h2): 200, frames both ways, close with "
     .. "END_STREAM both ways", function()
    assert.are.equal(echo_session(300000),
      h2ws("tls:" .. tls_port, "echo", "/echo", 300000))
    helper.wait_until(function() return #closes(server, "/echo") > 0 end)
    assert.are.same({ "1000 peer 2" }, closes(server, "/echo"))
  end)

  it("echoes over plain TCP with prior knowledge, in the coroutine form "
     .. "too", function()
    assert.are.equal(echo_session(1000),
      h2ws(server.port, "echo", "/echo", 1000))
    -- the coroutine handler answers "version" with the word itself
    assert.are.equal("status 200\necho (1, b'hello')\nversion version\n"
      .. "binary 1048576 True\nclose 1000 done ended\n",
      h2ws(server.port, "echo", "/co", 1048576))
    assert.truthy(helper.wait_until(function()
      return server:log():find("closed /co 2\n", 1, true)
    end))
  end)

  it("carries many WebSockets on one connection", function()
    assert.are.equal("opened 50 echoed 50\nclosed 50\n",
      h2ws("tls:" .. tls_port, "many", "/echo", 50))
  end)

  it("reports ws.http_version \"1.1\" over HTTP/1.1", function()
    local ws = assert(helper.ws_connect(server.port, "/echo"))
    ws:send_text("version")
    assert.are.equal("1.1", select(2, ws:recv_message()))
    ws:close(1000)
  end)

  it("applies the route's upgrade hook: 403 on the stream", function()
    assert.are.equal("403\n", h2ws(server.port, "status", "/auth"))
    assert.are.equal("200\n",
      h2ws(server.port, "status", "/auth", "x-token=yes"))
  end)

  it("negotiates the subprotocol, and refuses without one", function()
    assert.are.equal("200\nsec-websocket-protocol: chat.v2\n",
      h2ws(server.port, "status", "/chat",
           "sec-websocket-protocol=x, chat.v2"))
    assert.are.equal("400\n", h2ws(server.port, "status", "/chat"))
  end)

  it("answers what is no WebSocket: 404, 501, 426", function()
    -- a path without a WebSocket: a 2xx would open the tunnel
    assert.are.equal("404\n", h2ws(server.port, "status", "/page"))
    assert.are.equal("404\n", h2ws(server.port, "status", "/nothing"))
    -- CONNECT to a host, or to another protocol
    assert.are.equal("501\n", h2ws(server.port, "connect"))
    assert.are.equal("501\n", h2ws(server.port, "connect", "h3"))
    -- Sec-WebSocket-Version must be 13
    assert.are.equal("426\nsec-websocket-version: 13\n",
      h2ws(server.port, "status", "/echo",
      "sec-websocket-version=8"))
  end)

  it("negotiates permessage-deflate", function()
    assert.are.equal("status 200\nextensions permessage-deflate\n"
      .. "rsv1 1 echo True\nclose 1000 ended\n",
      h2ws("tls:" .. tls_port, "deflate"))
  end)

  for case, answer in pairs {
    unmasked = "close 1002 client frame not masked",
    rsv = "close 1002 protocol error",
    opcode = "close 1002 protocol error",
    utf8 = "close 1007 invalid UTF-8 in a text message",
    closecode = "close 1002 invalid close code",
    control = "close 1002 protocol error",
  } do
    it("fails a WebSocket for a malformed frame (" .. case .. "): its "
       .. "close code, RST_STREAM CANCEL, the other stream unaffected",
       function()
      assert.are.equal(answer .. "\nreset 8\nother True\n"
        .. "other close 1000 ended\n",
        h2ws(server.port, "malformed", case))
    end)
  end

  it("reports a stream reset mid-message as 1006; the other stream goes "
     .. "on", function()
    local before = #closes(server, "/echo")
    assert.are.equal("other True\nother close 1000 ended\n",
      h2ws("tls:" .. tls_port, "rst"))
    helper.wait_until(function()
      return #closes(server, "/echo") >= before + 2
    end)
    local list = { table.unpack(closes(server, "/echo"), before + 1) }
    table.sort(list)
    assert.are.same({ "1000 peer 2", "1006 lost 2" }, list)
  end)

  it("closes a stream that stops reading by its max_backpressure; the "
     .. "others go on", function()
    -- the peer's window (65535) is all it got; what it did not read
    -- filled our queue past 64 KiB: 1008, then the close frame could not
    -- go out within close_timeout, so the stream was reset
    assert.are.equal("other echoed 20\nslow reset 8 after 65535 bytes\n"
      .. "other True\nother close 1000 ended\n",
      h2ws(server.port, "slow"))
    assert.are.same({ "1008 error 2" }, closes(server, "/slow"))
  end)

  it("publishes to WebSockets on streams of two connections", function()
    -- the three joins come on two connections: their answers may come
    -- in any order, so they are compared sorted
    local report = h2ws("tls:" .. tls_port, "room")
    local joins, rest = {}, {}
    for line in report:gmatch("[^\n]+") do
      local list = line:find("^joined ") and joins or rest
      list[#list + 1] = line
    end
    table.sort(joins)
    assert.are.same({ "joined (1, b'joined 1')", "joined (1, b'joined 2')",
                      "joined (1, b'joined 3')" }, joins)
    assert.are.equal("a (1, b'hello room')\nb (1, b'hello room')\n"
      .. "e (1, b'hello room')\n"
      .. "a (2, b'\\x00\\x01binary')\nb (2, b'\\x00\\x01binary')\n"
      .. "e (2, b'\\x00\\x01binary')\n"
      .. "a close 1000 ended\n"
      .. "b (1, b'after a left')\ne (1, b'after a left')\n"
      .. "b close 1000 ended\ne close 1000 ended",
      table.concat(rest, "\n"))
    assert.truthy(helper.wait_until(function()
      return #closes(server, "/room") == 3
    end))
    assert.are.same({ "1000 peer 2", "1000 peer 2", "1000 peer 2" },
      closes(server, "/room"))
  end)

  it("pings a stream's WebSocket: answered, it stays; unanswered, it "
     .. "closes with keep_alive_timeout", function()
    -- the mute one never sends its close frame back: close_timeout
    -- (1 s) then resets its stream, and its handler is told 1006
    assert.are.equal("live answered several pings\n"
      .. "mute close 1001 keep-alive timeout\nmute reset 8\n"
      .. "live True\nlive close 1000 ended\n",
      h2ws(server.port, "ping"))
    assert.truthy(helper.wait_until(function()
      return #closes(server, "/ping") == 2
    end))
    local list = closes(server, "/ping")
    table.sort(list)
    assert.are.same({ "1000 peer 2", "1006 timeout 2" }, list)
  end)

  it("says \"queued\" while the stream's window is shut, then drains",
     function()
    -- FLUSH_EAGER (256 KiB) writes at the 16th message of 16 KiB: the
    -- window (64 KiB) takes part of it, the rest waits
    assert.are.equal("binary 16 x {16384}\n'queued after 16'\n"
      .. "binary 16 x {16384}\n'drained'\nclose 1000 ended\n",
      h2ws(server.port, "drain"))
    assert.truthy(helper.wait_until(function()
      return #closes(server, "/drain") == 1
    end))
    assert.are.same({ "1000 peer 2" }, closes(server, "/drain"))
  end)
end)

describe("a stream whose window stays shut (send_window_timeout)", function()
  it("is reset and its WebSocket told 1006; the other stream goes on",
     function()
    local server = helper.start_server("spec/apps/http2_ws.lua",
      { WINDOW_TIMEOUT = "1" })
    assert.are.equal("victim got 65535 bytes, then its window is shut\n"
      .. "victim reset 8 in time\nother echoed meanwhile True\n"
      .. "other True\nother close 1000 ended\n",
      h2ws(server.port, "stall", "1"))
    assert.truthy(helper.wait_until(function()
      return #closes(server, "/echo") == 2
    end))
    assert.are.same({ "1006 timeout 2", "1000 peer 2" },
      closes(server, "/echo"))
    assert.truthy(server:log():find("HTTP/2: stream 1: the peer's window "
      .. "stayed shut for send_window_timeout (1 s): RST_STREAM CANCEL",
      1, true))
    helper.stop_and_check(server)
  end)
end)

describe("graceful shutdown with WebSockets over HTTP/2", function()
  it("sends 1001 on each stream, then GOAWAY, and exits", function()
    local server = helper.start_server("spec/apps/http2_ws.lua", {})
    assert.are.equal("a (1, b'bye')\n"
      .. "a close 1001 server shutting down before goaway\n"
      .. "b close 1001 server shutting down before goaway\n"
      .. "goaway 0\na ended b ended\n",
      h2ws(server.port, "shutdown"))
    assert.truthy(helper.wait_until(function() return server:exited() end))
    helper.stop_and_check(server)
    assert.are.same({ "1001 shutdown 2" }, closes(server, "/echo"))
  end)
end)
