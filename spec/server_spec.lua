-- spec/server_spec.lua: the Lua API over a real server: callbacks and
-- their order, request data, handler errors, the closing handshake,
-- pings, why a socket ended; listening on IPv6 and refusing a bad
-- option.
local helper = require "helper"

local TEXT = helper.TEXT
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

  it("keeps ws.request and ws.data side by side", function()
    local ws = assert(helper.ws_connect(server.port, "/kept-data?k=3",
      { ["X-Probe"] = "both" }))
    for n = 1, 3 do
      ws:send_text("m")
      assert.are.same({ TEXT, "/kept-data?k=3 both " .. n },
        { ws:recv_message() })
    end
    ws:close(1000)
    ws:expect_close(1000)
    ws = assert(helper.ws_connect(server.port, "/kept-open?k=4"))
    ws:send_text("a")
    ws:send_text("b")
    assert.are.same({ TEXT, "/kept-open /kept-open?k=4" },
      { ws:recv_message() })
    assert.are.same({ TEXT, "/kept-open /kept-open?k=4" },
      { ws:recv_message() })
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
    local mark = helper.events_mark(server.port)
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("info")
    ws:recv_message()
    ws:abort()
    helper.wait_event(server.port, "close 1006  closed", true, mark)
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

  it("sends pings on request and reports pongs", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("ping")
    assert.are.same({ PING, "server ping" }, { ws:recv_message() })
    ws:send_frame{ opcode = PONG, payload = "server ping" }
    helper.wait_event(server.port, "pong server ping")
    ws:abort()
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
      "bad argument #2 to '?' (invalid close code)",
      "bad argument #2 to '?' (string expected, got no value)",
      "bad argument #2 to '?' (string expected, got table)",
      "bad argument #4 to '?' (table expected, got number)",
      "bad argument #3 to '?' (invalid option '7')" }, "\n") },
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
    assert.matches("yielded outside receive%(%), send%(%) and moonsocket's "
      .. "waits", server:log())
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
end)

describe("the close handler", function()
  local server = helper.with_server("spec/apps/policy.lua",
                                    { MAX_CONNECTIONS = 100 })

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
    -- ws:abort(): no close frame, what was queued dropped, the close
    -- handler run before it returns; again: ECLOSED
    local e = assert(helper.ws_connect(server.port, "/ws"))
    e:send_text("abort")
    local frame, err = e:read_frame()
    assert.is_nil(frame, frame and frame.payload)
    assert.is_truthy(err == "closed" or err:find("reset"), err)
    helper.wait_event(server.port, "ws abort again nil the connection is "
      .. "closing or closed ECLOSED", true)
    local events = helper.events(server.port)
    assert.truthy(events:find("ws close 1006  local\nws abort true closed"
      .. "\nws abort again nil", 1, true), events)
  end)
end)

describe("server options", function()
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
end)
