-- spec/incomplete_spec.lua: what a client can make the server hold with
-- messages it starts and never finishes: message_timeout, the server's
-- max_incomplete_bytes, and buffers that grow with the bytes that come
-- rather than with the length a header claims.

local helper = require "helper"

local TEXT, BINARY, CONT = helper.TEXT, helper.BINARY, helper.CONTINUATION
local frame = helper.build_frame
local now = require("socket").gettime
local KiB, MiB = 1024, 1024 * 1024

-- Sanitizers and valgrind hold freed memory: memory is measured on the
-- plain build only.
local MEASURED = not (os.getenv("MOONSOCKET_WRAPPER")
  or (os.getenv("LD_PRELOAD") or ""):find("asan"))

-- A field of /proc/PID/status, in KiB.
local function status_kib(pid, field)
  local text = assert(helper.read_file("/proc/" .. pid .. "/status"))
  return tonumber(text:match(field .. ":%s*(%d+) kB"))
end

-- A raw DEFLATE stream of n zero bytes, flushed, less the 0x00 0x00 0xff
-- 0xff a message leaves out at its end (RFC 7692 section 7.2.1): the
-- first fragment of a compressed message whose last may be empty.
local function deflated_zeros(n)
  local pipe = assert(io.popen("env -u LD_PRELOAD /usr/bin/python3 -c "
    .. helper.shell_quote("import sys, zlib\n"
    .. "c = zlib.compressobj(9, zlib.DEFLATED, -15)\n"
    .. "sys.stdout.buffer.write(c.compress(bytes(" .. n .. "))"
    .. " + c.flush(zlib.Z_SYNC_FLUSH))")))
  local data = pipe:read("a")
  pipe:close()
  assert(#data > 4 and #data < n // 100, "no deflated data")
  assert(data:sub(-4) == "\0\0\xff\xff")
  return data:sub(1, -5)
end

local DEFLATE = { ["Sec-WebSocket-Extensions"] = "permessage-deflate" }

describe("an unfinished message", function()
  local server = helper.with_server("spec/apps/incomplete.lua",
                                    { MESSAGE_TIMEOUT = 1 })

  -- Starts a message with first, then pings every 50 ms (never idle,
  -- the message never finished); returns the close code, its reason and
  -- the seconds it took.
  local function trickle(path, first, headers)
    local ws = assert(helper.ws_connect(server.port, path, headers))
    local started = now()
    assert.is_true(ws:send_raw(first))
    local got
    for _ = 1, 100 do
      assert.is_true(ws:ping("tick"))
      got = ws:read_frame(0.05)
      if got and got.opcode == helper.CLOSE then break end
      if got then assert.are.equal(helper.PONG, got.opcode) end
      helper.sleep(0.05)
    end
    assert(got and got.opcode == helper.CLOSE, "the server never closed")
    ws:abort()
    return string.unpack(">I2", got.payload), got.payload:sub(3),
      now() - started
  end

  it("is failed 1008 after message_timeout", function()
    local code, reason, took = trickle("/ws",
      frame{ opcode = BINARY, fin = false, payload = "started" })
    assert.are.equal(1008, code)
    assert.are.equal("message timeout", reason)
    assert.is_true(took >= 0.9 and took < helper.scaled(2.5), took)
    helper.wait_event(server.port, "closed 1008 message timeout error",
                      true)
  end)

  it("is failed the same way when compressed", function()
    local code, _, took = trickle("/ws", frame{ opcode = BINARY, fin = false,
      rsv = 4, payload = deflated_zeros(100000) }, DEFLATE)
    assert.are.equal(1008, code)
    assert.is_true(took >= 0.9 and took < helper.scaled(2.5), took)
  end)

  it("follows the route's message_timeout", function()
    local code, _, took = trickle("/slow",
      frame{ opcode = TEXT, fin = false, payload = "started" })
    assert.are.equal(1008, code)
    assert.is_true(took >= 2.9, took)
  end)

  it("has the whole timeout again for each message", function()
    local ws = assert(helper.ws_connect(server.port))
    for i = 1, 4 do           -- 4 messages of 0.6 s each: 2.4 s in all
      assert.is_true(ws:send_frame{ opcode = TEXT, fin = false,
                                    payload = "part " })
      helper.sleep(0.3)
      assert.is_true(ws:send_frame{ opcode = CONT, fin = false,
                                    payload = tostring(i) })
      helper.sleep(0.3)
      assert.is_true(ws:send_frame{ opcode = CONT, payload = "." })
      local opcode, got = ws:recv_message()
      assert.are.equal(TEXT, opcode)
      assert.are.equal("part " .. i .. ".", got)
    end
    ws:close(1000)
    assert.are.equal(1000, ws:expect_close())
  end)

  it("does not count time a whole message waits", function()
    -- pings keep the socket busy, but no message is under way
    local ws = assert(helper.ws_connect(server.port))
    for _ = 1, 15 do
      assert.is_true(ws:ping("x"))
      local opcode = ws:recv_message()
      assert.are.equal(helper.PONG, opcode)
      helper.sleep(0.1)
    end
    assert.is_true(ws:send_text("still open"))
    local _, got = ws:recv_message()
    assert.are.equal("still open", got)
    ws:abort()
  end)
end)

describe("max_incomplete_bytes", function()
  it("fails the socket holding the most; the others go on", function()
    local server = helper.start_server("spec/apps/incomplete.lua",
                                       { MAX_INCOMPLETE_BYTES = MiB })
    -- a holds 700 KiB of an 800 KiB frame
    local a = assert(helper.ws_connect(server.port))
    local pa = helper.random_bytes(800 * KiB)
    assert.is_true(a:send_raw(frame{ opcode = BINARY, payload = pa }
      :sub(1, -100 * KiB - 1)))
    helper.sleep(0.2)
    -- b's 500 KiB take the server past 1 MiB: a holds more, and goes
    local b = assert(helper.ws_connect(server.port))
    local pb = helper.random_bytes(600 * KiB)
    local fb = frame{ opcode = BINARY, payload = pb }
    assert.is_true(b:send_raw(fb:sub(1, 500 * KiB)))
    assert.are.equal(1009, a:expect_close())
    helper.wait_event(server.port, "closed 1009 server busy: too many "
      .. "incomplete messages error", true)
    -- b finishes its message
    assert.is_true(b:send_raw(fb:sub(500 * KiB + 1)))
    local opcode, got = b:recv_message()
    assert.are.equal(BINARY, opcode)
    helper.assert_payload(pb, got)
    b:close(1000)
    assert.are.equal(1000, b:expect_close())
    helper.stop_and_check(server)
  end)

  it("bounds what 300 unfinished compressed messages hold", function()
    -- each 1 KiB first fragment inflates to 1,000,000 bytes, under
    -- max_message_size: 300 of them would hold 300 MB
    local server = helper.start_server("spec/apps/incomplete.lua", nil,
                                       { nofile = 1024 })
    local first = frame{ opcode = BINARY, fin = false, rsv = 4,
                         payload = deflated_zeros(1000000) }
    local before = MEASURED and status_kib(server.pid, "VmRSS")
    local socks, closed, failed = {}, {}, 0
    for i = 1, 300 do
      socks[i] = assert(helper.ws_connect(server.port, "/ws", DEFLATE))
      assert.is_true(socks[i]:send_raw(first))
    end
    helper.sleep(1)           -- time to inflate them all
    for i = 1, 300 do
      local got = socks[i]:read_frame(0.01)
      if got then
        assert.are.equal(helper.CLOSE, got.opcode)
        assert.are.equal(1009, string.unpack(">I2", got.payload))
        failed = failed + 1
        closed[i] = true
      end
    end
    -- the budget (64 MiB) holds about 64 of them
    assert.is_true(failed >= 230 and failed <= 240, failed)
    if MEASURED then
      local grown = status_kib(server.pid, "VmRSS") - before
      assert.is_true(grown < (64 + 32) * KiB, grown .. " KiB")
    end
    -- one that was kept finishes its message
    local kept
    for i = 1, 300 do
      if not kept and not closed[i] then kept = socks[i] end
    end
    for _, sock in ipairs(socks) do if sock ~= kept then sock:abort() end end
    assert.is_true(kept:send_frame{ opcode = CONT, payload = "" })
    local opcode, got = kept:recv_message()
    assert.are.equal(BINARY, opcode, got)
    assert.are.equal(1000000, #got)
    kept:abort()
    helper.stop_and_check(server)
  end)
end)

describe("a frame's claimed length", function()
  it("is not allocated before its bytes arrive", function()
    local server = helper.start_server("spec/apps/echo.lua",
                                       { MAX_MESSAGE_SIZE = 16 * MiB })
    local before = MEASURED and status_kib(server.pid, "VmSize")
    local socks = {}
    for i = 1, 200 do        -- 16 MiB announced, one byte sent
      socks[i] = assert(helper.ws_connect(server.port))
      assert.is_true(socks[i]:send_raw(frame{ opcode = BINARY,
        payload = "x", len_override = 16 * MiB }))
    end
    -- each socket answers: none was failed or lost
    local probe = assert(helper.ws_connect(server.port))
    assert.is_true(probe:send_text("alive"))
    assert.are.same({ TEXT, "alive" }, { probe:recv_message() })
    if MEASURED then
      local grown = status_kib(server.pid, "VmSize") - before
      assert.is_true(grown < 64 * KiB, grown .. " KiB of address space")
    end
    for _, sock in ipairs(socks) do
      assert.is_false(sock:is_closed())
      sock:abort()
    end
    probe:abort()
    helper.stop_and_check(server)
  end)
end)
