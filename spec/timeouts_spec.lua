-- spec/timeouts_spec.lua: idle_timeout, keep_alive_timeout and the
-- pings of keep_alive_interval, close_timeout and handshake_timeout.
local helper = require "helper"

local PING = helper.PING

describe("timeouts", function()
  local server = helper.with_server("spec/apps/policy.lua",
                                    { MAX_CONNECTIONS = 100 })

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

describe("close and handshake timeouts", function()
  local server = helper.with_server("spec/apps/probe.lua",
    { MAX_BACKPRESSURE = 262144, KEEP_ALIVE = 0, CLOSE_TIMEOUT = 0.5,
      HANDSHAKE_TIMEOUT = 0.5 })

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
end)

describe("keep_alive_interval", function()
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
end)
