-- spec/abuse_spec.lua: hostile peers get the exact answer and the server
-- keeps serving everyone else: slow heads and frames, huge length
-- claims, floods of tiny fragments, connect-and-vanish storms, garbage
-- after a close.
local helper = require "helper"
local socket = require "socket"

local TEXT, CONT, CLOSE = helper.TEXT, helper.CONTINUATION, helper.CLOSE

describe("abuse", function()
  local server = helper.with_server("spec/apps/probe.lua",
    { HANDSHAKE_TIMEOUT = 1, CLOSE_TIMEOUT = 0.5 })

  -- Someone else is still served promptly.
  local function others_served()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("info")
    local op = ws:recv_message(2)
    ws:abort()
    return op == TEXT
  end

  it("cuts a head trickled a byte at a time at handshake_timeout", function()
    local sock = helper.connect(server.port)
    local request = helper.upgrade_request{ path = "/ws" }
    local t0, sent = socket.gettime(), 0
    for i = 1, #request do           -- 4 bytes a second: far too slow
      if not sock:send(request:sub(i, i)) then break end
      sent = i
      socket.sleep(0.25)
      if socket.gettime() - t0 > 3 then break end
    end
    assert.is_true(sent < #request)
    assert.is_true(socket.gettime() - t0 < 3)
    sock:close()
    assert.is_true(others_served())
  end)

  it("serves others while a frame trickles in", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local frame = helper.build_frame{ opcode = TEXT, payload = "info" }
    for i = 1, #frame - 1 do
      ws:send_raw(frame:sub(i, i))
      assert.is_true(others_served())
    end
    ws:send_raw(frame:sub(-1))
    assert.are.equal(TEXT, (ws:recv_message()))
    ws:abort()
  end)

  it("closes a 2^63 length claim with 1002 and 2^62 with 1009", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_raw(string.pack(">BBI8", 0x82, 0xFF, 1 << 63) .. "abcd")
    assert.are.equal(1002, ws:expect_close())
    ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_raw(string.pack(">BBI8", 0x82, 0xFF, 1 << 62) .. "abcd")
    assert.are.equal(1009, ws:expect_close())
    assert.is_true(others_served())
  end)

  it("reassembles 100,000 one-byte fragments", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local frames = { helper.build_frame{ fin = false, opcode = TEXT,
                                         payload = "i" } }
    for i = 2, 99999 do
      frames[i] = helper.build_frame{ fin = false, opcode = CONT,
                                      payload = "n" }
    end
    frames[100000] = helper.build_frame{ opcode = CONT, payload = "x" }
    ws:send_raw(table.concat(frames))
    ws:send_text("info")
    -- probe counts messages: the 100,000 fragments made one, then "info"
    assert.are.same({ TEXT, "nil 127.0.0.1 open 2" },
                    { ws:recv_message(10) })
    ws:abort()
  end)

  it("survives a storm of connections that vanish", function()
    for _ = 1, 300 do
      local sock = helper.connect(server.port)
      if math.random() < 0.5 then sock:send("GET /ws HT") end
      sock:close()
    end
    for _ = 1, 100 do             -- and upgraded ones that vanish
      local ws = assert(helper.ws_connect(server.port, "/ws"))
      ws:abort()
    end
    assert.is_true(others_served())
    helper.wait_until(function()
      local status, _, body, sock = helper.http(server.port,
        "GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      if sock then sock:close() end
      local _, lost = (body or ""):gsub("close 1006  closed", "")
      return status == 200 and lost >= 100
    end, 5)
  end)

  it("ignores garbage after a close and closes the connection", function()
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_raw(helper.build_frame{ opcode = CLOSE,
                                    payload = helper.close_payload(1000) }
                .. helper.random_bytes(5000))
    local frame = assert(ws:read_frame())
    assert.are.equal(CLOSE, frame.opcode)
    assert.are.equal(1000, string.unpack(">I2", frame.payload))
    assert.is_true(ws:is_closed(2))
    assert.is_true(others_served())
  end)
end)
