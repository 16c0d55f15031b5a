-- spec/backpressure_spec.lua: max_backpressure: sends queued, then
-- drained; a coroutine's send waiting for drain; a consumer, or a
-- pinger, that does not read closed with 1008.
local helper = require "helper"

local TEXT, BINARY = helper.TEXT, helper.BINARY
local PING = helper.PING

describe("back-pressure", function()
  local server = helper.with_server("spec/apps/probe.lua",
    { MAX_BACKPRESSURE = 262144, KEEP_ALIVE = 0, CLOSE_TIMEOUT = 0.5,
      HANDSHAKE_TIMEOUT = 0.5 })

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

  it("closes a ping flood that does not read its pongs with 1008", function()
    -- the event log is the server's: count this socket's close alone
    local line = "close 1008 send buffer limit exceeded"
    local function closes()
      local _, n = helper.events(server.port):gsub(line, "")
      return n
    end
    local before = closes()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local ping = helper.build_frame{ opcode = PING,
                                     payload = string.rep("p", 125) }
    ws:settimeout(0.5)
    for _ = 1, 40 do       -- up to 40 x 1 MiB of pings, never reading
      local ok = ws:send_raw(string.rep(ping, 8000))
      if not ok or closes() > before then break end
    end
    assert.is_true(helper.wait_until(function()
      return closes() == before + 1
    end, helper.scaled(5)), "the ping flood was not closed")
    ws:abort()
  end)
end)

describe("a large max_backpressure", function()
  it("does not count what a callback sends before it is written",
    function()
    -- 16 x 30,000 bytes in one handler call through a 64 KiB limit: what
    -- a callback sends goes out as it ends, so the queue passes the
    -- limit before a byte is offered to the peer; the peer reads, and
    -- must get every message, not 1008
    local server = helper.start_server("spec/apps/probe.lua",
      { MAX_BACKPRESSURE = 65536 })
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("flood:16:30000")
    for i = 1, 16 do
      local op, payload = ws:recv_message()
      assert.are.equal(BINARY, op, "message " .. i)
      assert.are.equal(30000, #payload)
    end
    assert.are.same({ TEXT, "flood done" }, { ws:recv_message() })
    local sent, queued = helper.events(server.port):match(
      "flood sent=(%d+) queued=(%d+)")
    assert.are.equal(16, tonumber(sent) + tonumber(queued))
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
end)
