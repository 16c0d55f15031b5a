-- spec/failure_spec.lua: failing a connection (RFC 6455 §7.1.7) after
-- valid input: what the handler answered before the bad frame goes out
-- before the close frame, as Autobahn|Testsuite's strict cases (3.2-3.4,
-- 4.1.3-4.2.5, 5.15) require.

local helper = require "helper"

local TEXT, BINARY, CONT = helper.TEXT, helper.BINARY, helper.CONTINUATION
local CLOSE, PING = helper.CLOSE, helper.PING
local frame = helper.build_frame

local APPS = { "spec/apps/echo.lua", "spec/apps/co_echo.lua" }

-- Frames that break the protocol, each the start of a reply 1002.
local BAD = {
  ["reserved bits"] = frame{ opcode = TEXT, rsv = 2, payload = "x" },
  ["a reserved data opcode"] = frame{ opcode = 3 },
  ["a reserved control opcode"] = frame{ opcode = 0xB },
  ["a continuation with nothing to continue"] =
    frame{ opcode = CONT, payload = "x" },
}

-- The frames of one valid message: whole, or in three fragments.
local function message(opcode, payload, fragmented)
  if not fragmented then
    return frame{ opcode = opcode, payload = payload }
  end
  local third = #payload // 3
  return frame{ opcode = opcode, fin = false, payload = payload:sub(1, third) }
    .. frame{ opcode = CONT, fin = false,
              payload = payload:sub(third + 1, 2 * third) }
    .. frame{ opcode = CONT, payload = payload:sub(2 * third + 1) }
end

for _, app in ipairs(APPS) do
  describe("a failure after valid messages (" .. app .. ")", function()
    local server = helper.with_server(app)

    for bad_name, bad in pairs(BAD) do
      for _, kind in ipairs{ { "text", TEXT }, { "binary", BINARY } } do
        for _, fragmented in ipairs{ false, true } do
          local name = ("echoes a %s%s message, then closes 1002 on %s")
            :format(fragmented and "fragmented " or "", kind[1], bad_name)
          it(name, function()
            local ws = assert(helper.ws_connect(server.port))
            local payload = "Hello, world! " .. kind[1]
            -- the message, the bad frame and a ping in one write
            assert.is_true(ws:send_raw(message(kind[2], payload, fragmented)
              .. bad .. frame{ opcode = PING, payload = "after" }))
            local opcode, got = ws:recv_message()
            assert.are.equal(kind[2], opcode, got)
            assert.are.equal(payload, got)
            -- the ping after the bad frame is never answered
            assert.are.equal(1002, ws:expect_close())
            assert.are.same({}, ws.skipped)
            ws:abort()
          end)
        end
      end
    end

    it("echoes every message before the bad frame, in order", function()
      local ws = assert(helper.ws_connect(server.port))
      local bytes = {}
      for i = 1, 50 do
        bytes[i] = message(i % 2 == 0 and TEXT or BINARY, "message " .. i,
                           i % 3 == 0)
      end
      bytes[#bytes + 1] = BAD["reserved bits"]
      assert.is_true(ws:send_raw(table.concat(bytes)))
      for i = 1, 50 do
        local opcode, got = ws:recv_message()
        assert.are.equal(i % 2 == 0 and TEXT or BINARY, opcode)
        assert.are.equal("message " .. i, got)
      end
      assert.are.equal(1002, ws:expect_close())
      ws:abort()
    end)
  end)
end

describe("a failure right after open", function()
  local server = helper.with_server("spec/apps/probe.lua")

  -- The upgrade and a bad frame in one write: the open handler's sends
  -- are queued before the bad frame is read.
  local function greet_then_fail(path)
    local request = helper.upgrade_request{ path = path }
    local sock = assert(helper.connect(server.port))
    assert(sock:send(request .. BAD["reserved bits"]))
    local status = helper.read_response(sock)
    assert.are.equal(101, status)
    local ws = helper.wrap(sock)
    for _, word in ipairs{ "one", "two", "three" } do
      local opcode, got = ws:recv_message()
      assert.are.equal(TEXT, opcode)
      assert.are.equal(word, got)
    end
    assert.are.equal(1002, ws:expect_close())
    ws:abort()
  end

  it("sends what the open callback sent, then the close frame", function()
    greet_then_fail("/greet")
    helper.wait_event(server.port,
      "greet closed 1002 protocol error error 0", true)
  end)

  it("sends what a coroutine sent, then the close frame", function()
    greet_then_fail("/co-greet")
    helper.wait_event(server.port,
      "co-greet closed 1002 protocol error error 0", true)
  end)

  it("counts the replies a peer that stopped reading never got", function()
    -- 64 MiB queued by open, then the bad frame: the peer reads nothing
    -- until close_timeout cuts the queue off, then reads what came
    local big = helper.start_server("spec/apps/probe.lua",
      { MAX_BACKPRESSURE = 128 * 1024 * 1024, CLOSE_TIMEOUT = 0.5 })
    local request = helper.upgrade_request{ path = "/greet?big" }
    local sock = assert(helper.connect(big.port))
    assert(sock:send(request .. BAD["reserved bits"]))
    local line = "greet closed 1002 protocol error error (%d+)"
    helper.wait_event(big.port, line)
    local unsent = tonumber(helper.events(big.port):match(line))
    assert.are.equal(101, (helper.read_response(sock)))
    local ws, got = helper.wrap(sock), 0
    while true do
      local opcode, payload = ws:recv_message()
      if opcode ~= BINARY then break end
      assert.are.equal(1024 * 1024, #payload)
      got = got + 1
    end
    assert.is_true(unsent > 0)
    assert.are.equal(64, got + unsent)
    ws:abort()
    helper.stop_and_check(big)
  end)
end)
