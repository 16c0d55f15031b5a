-- spec/framing_spec.lua: data framing (RFC 6455 §5), UTF-8 checks (§8.1),
-- the closing handshake (§7) and message limits, for both echo apps.

local helper = require "helper"

local TEXT, BINARY, CONT = helper.TEXT, helper.BINARY, helper.CONTINUATION
local CLOSE, PING, PONG = helper.CLOSE, helper.PING, helper.PONG
local MiB = 1024 * 1024
local CLOSE_TIMEOUT = 1

local APPS = { "spec/apps/echo.lua", "spec/apps/co_echo.lua" }

for _, app in ipairs(APPS) do
  describe("framing (" .. app .. ")", function()
    local server = helper.with_server(app, { CLOSE_TIMEOUT = CLOSE_TIMEOUT })
    local ws

    before_each(function()
      ws = assert(helper.ws_connect(server.port))
    end)

    after_each(function()
      ws:abort()
    end)

    -- Sends frames (tables for build_frame) and expects a close with code.
    local function expect_failure(code, frames)
      for _, frame in ipairs(frames) do
        assert.is_true(ws:send_frame(frame))
      end
      ws:expect_close(code)
    end

    local function close_cleanly()
      ws:close(1000)
      assert.are.equal(1000, ws:expect_close())
    end

    describe("echoes", function()
      for _, size in ipairs{ 0, 125, 126, 65535, 65536, 16 * MiB } do
        it("a text message of " .. size .. " bytes", function()
          local text = helper.text_of_size(size)
          assert.is_true(ws:send_text(text))
          local opcode, payload = ws:recv_message()
          assert.are.equal(TEXT, opcode, payload)
          helper.assert_payload(text, payload)
          close_cleanly()
        end)

        it("a binary message of " .. size .. " bytes", function()
          local data = helper.binary_of_size(size)
          assert.is_true(ws:send_binary(data))
          local opcode, payload = ws:recv_message()
          assert.are.equal(BINARY, opcode, payload)
          helper.assert_payload(data, payload)
          close_cleanly()
        end)
      end

      it("with one unmasked frame, FIN set and RSV clear (§5.1)", function()
        assert.is_true(ws:send_text("frame"))
        assert.are.same({ fin = true, rsv = 0, opcode = TEXT,
          masked = false, payload = "frame" }, ws:read_frame())
        close_cleanly()
      end)

      it("three frames sent in one TCP segment, in order", function()
        assert.is_true(ws:send_raw(
          helper.build_frame{ opcode = TEXT, payload = "one" }
          .. helper.build_frame{ opcode = BINARY, payload = "two" }
          .. helper.build_frame{ opcode = TEXT, payload = "three" }))
        assert.are.same({ TEXT, "one" }, { ws:recv_message() })
        assert.are.same({ BINARY, "two" }, { ws:recv_message() })
        assert.are.same({ TEXT, "three" }, { ws:recv_message() })
        close_cleanly()
      end)

      it("a frame delivered one byte at a time", function()
        local frame = helper.build_frame{ opcode = TEXT,
          payload = helper.text_of_size(300) }
        assert.is_true(helper.send_bytewise(ws.sock, frame))
        assert.are.same({ TEXT, helper.text_of_size(300) },
          { ws:recv_message() })
        close_cleanly()
      end)

      it("a frame whose 64-bit length header arrives byte by byte",
        function()
          local data = helper.binary_of_size(70000)
          local frame = helper.build_frame{ opcode = BINARY, payload = data }
          local header = 2 + 8 + 4      -- 64-bit length and masking key
          assert.is_true(helper.send_bytewise(ws.sock, frame:sub(1, header)))
          assert.is_true(ws:send_raw(frame:sub(header + 1)))
          local opcode, payload = ws:recv_message()
          assert.are.equal(BINARY, opcode)
          helper.assert_payload(data, payload)
          close_cleanly()
        end)

      -- from 4 KiB on, a message is written into the block of its
      -- string: once its last frame has come at least half way (a cut
      -- after 15,000 bytes), or on the last bytes (after 5,000)
      for _, cut in ipairs{ 5000, 15000 } do
        it("a 20,000-byte frame cut after " .. cut .. " bytes", function()
          local text = helper.text_of_size(20000)
          local frame = helper.build_frame{ opcode = TEXT, payload = text }
          assert.is_true(ws:send_raw(frame:sub(1, cut)))
          helper.sleep(0.05)
          assert.is_true(ws:send_raw(frame:sub(cut + 1)))
          local opcode, payload = ws:recv_message()
          assert.are.equal(TEXT, opcode)
          helper.assert_payload(text, payload)
          close_cleanly()
        end)
      end

      it("two long messages in one TCP segment", function()
        local one = helper.binary_of_size(10000)
        local two = helper.text_of_size(30000)
        assert.is_true(ws:send_raw(
          helper.build_frame{ opcode = BINARY, payload = one }
          .. helper.build_frame{ opcode = TEXT, payload = two }))
        local opcode, payload = ws:recv_message()
        assert.are.equal(BINARY, opcode)
        helper.assert_payload(one, payload)
        opcode, payload = ws:recv_message()
        assert.are.equal(TEXT, opcode)
        helper.assert_payload(two, payload)
        close_cleanly()
      end)

      it("a code point split across two TCP segments", function()
        local frame = helper.build_frame{ opcode = TEXT,
          payload = "price: \xE2\x82\xAC" }
        local cut = #frame - 1      -- inside the 3-byte euro sign
        assert.is_true(ws:send_raw(frame:sub(1, cut)))
        helper.sleep(0.05)
        assert.is_true(ws:send_raw(frame:sub(cut + 1)))
        assert.are.same({ TEXT, "price: \xE2\x82\xAC" },
          { ws:recv_message() })
        close_cleanly()
      end)
    end)

    describe("fragmented messages (§5.4)", function()
      it("reassembles three text fragments, answering a ping in between",
        function()
          assert.is_true(ws:send_frame{ opcode = TEXT, fin = false,
            payload = "frag" })
          assert.is_true(ws:send_frame{ opcode = PING, payload = "mid" })
          assert.is_true(ws:send_frame{ opcode = CONT, fin = false,
            payload = "men" })
          assert.is_true(ws:send_frame{ opcode = CONT, payload = "ted" })
          assert.are.same({ PONG, "mid" }, { ws:recv_message() })
          assert.are.same({ TEXT, "fragmented" }, { ws:recv_message() })
          close_cleanly()
        end)

      it("reassembles binary fragments, empty ones included", function()
        assert.is_true(ws:send_frame{ opcode = BINARY, fin = false,
          payload = "" })
        assert.is_true(ws:send_frame{ opcode = CONT, fin = false,
          payload = "\0\1\2" })
        assert.is_true(ws:send_frame{ opcode = CONT, fin = false,
          payload = "" })
        assert.is_true(ws:send_frame{ opcode = CONT, payload = "\255" })
        assert.are.same({ BINARY, "\0\1\2\255" }, { ws:recv_message() })
        close_cleanly()
      end)

      it("accepts a code point split across fragments", function()
        assert.is_true(ws:send_frame{ opcode = TEXT, fin = false,
          payload = "a\xF0\x9D" })
        assert.is_true(ws:send_frame{ opcode = CONT, fin = false,
          payload = "\x84" })
        assert.is_true(ws:send_frame{ opcode = CONT, payload = "\x9Ez" })
        assert.are.same({ TEXT, "a\xF0\x9D\x84\x9Ez" },
          { ws:recv_message() })
        close_cleanly()
      end)

      it("reassembles a 1 MiB message sent in 64 KiB fragments", function()
        local text = helper.text_of_size(MiB)
        local step = 64 * 1024
        for first = 1, #text, step do
          assert.is_true(ws:send_frame{
            opcode = first == 1 and TEXT or CONT,
            fin = first + step > #text,
            payload = text:sub(first, first + step - 1) })
        end
        local opcode, payload = ws:recv_message()
        assert.are.equal(TEXT, opcode)
        helper.assert_payload(text, payload)
        close_cleanly()
      end)
    end)

    describe("control frames (§5.5)", function()
      for _, payload in ipairs{ "", "ping!", ("p"):rep(125) } do
        it("answers a ping of " .. #payload .. " bytes with its payload",
          function()
            assert.is_true(ws:ping(payload))
            assert.are.same({ fin = true, rsv = 0, opcode = PONG,
              masked = false, payload = payload }, ws:read_frame())
            close_cleanly()
          end)
      end

      it("ignores an unsolicited pong", function()
        assert.is_true(ws:send_frame{ opcode = PONG, payload = "hi" })
        assert.is_true(ws:send_text("after pong"))
        assert.are.same({ TEXT, "after pong" }, { ws:recv_message() })
        close_cleanly()
      end)
    end)

    describe("closes with 1002 on", function()
      local cases = {
        { "an unmasked frame",
          { { opcode = TEXT, payload = "hi", mask = false } } },
        { "RSV1 set", { { opcode = TEXT, payload = "hi", rsv = 4 } } },
        { "RSV2 set", { { opcode = TEXT, payload = "hi", rsv = 2 } } },
        { "RSV3 set", { { opcode = TEXT, payload = "hi", rsv = 1 } } },
        { "RSV set on a ping", { { opcode = PING, rsv = 4 } } },
        { "a ping with 126 bytes",
          { { opcode = PING, payload = ("p"):rep(126) } } },
        { "a pong with 126 bytes",
          { { opcode = PONG, payload = ("p"):rep(126) } } },
        { "a close with 126 bytes",
          { { opcode = CLOSE,
            payload = helper.close_payload(1000, ("r"):rep(124)) } } },
        { "a fragmented ping", { { opcode = PING, fin = false } } },
        { "a fragmented close",
          { { opcode = CLOSE, fin = false,
            payload = helper.close_payload(1000) } } },
        { "a continuation without a message",
          { { opcode = CONT, payload = "orphan" } } },
        { "a text frame inside a fragmented message",
          { { opcode = TEXT, fin = false, payload = "a" },
            { opcode = TEXT, payload = "b" } } },
        { "a binary frame inside a fragmented message",
          { { opcode = BINARY, fin = false, payload = "a" },
            { opcode = BINARY, fin = false, payload = "b" } } },
        { "a close payload of one byte",
          { { opcode = CLOSE, payload = "\3" } } },
      }
      for _, opcode in ipairs{ 3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF } do
        cases[#cases + 1] = { string.format("opcode 0x%X", opcode),
          { { opcode = opcode, payload = "x" } } }
      end
      for _, code in ipairs{ 0, 999, 1004, 1005, 1006, 1015, 1016, 2999,
          5000, 65535 } do
        cases[#cases + 1] = { "close code " .. code,
          { { opcode = CLOSE, payload = helper.close_payload(code) } } }
      end
      for _, case in ipairs(cases) do
        it(case[1], function()
          expect_failure(1002, case[2])
        end)
      end
    end)

    describe("closes with 1007 (§8.1) on", function()
      local cases = {
        { "a lone 0xFF", "ab\xFFcd" },
        { "an overlong encoding", "\xC0\xAF" },
        { "a surrogate", "\xED\xA0\x80" },
        { "a code point above U+10FFFF", "\xF4\x90\x80\x80" },
        { "a continuation byte without a lead", "ok\x80" },
        { "a sequence cut at the end of the message", "euro \xE2\x82" },
      }
      for _, case in ipairs(cases) do
        it(case[1], function()
          expect_failure(1007, { { opcode = TEXT, payload = case[2] } })
        end)
      end

      it("invalid UTF-8 split across fragments", function()
        expect_failure(1007, {
          { opcode = TEXT, fin = false, payload = "ab\xE2" },
          { opcode = CONT, payload = "(z" } })
      end)

      it("invalid bytes before the frame is complete (fail fast)",
        function()
          local payload = "abcd\xFF" .. ("e"):rep(95)
          local frame = helper.build_frame{ opcode = TEXT, payload = payload }
          local header = 2 + 4          -- 7-bit length and masking key
          assert.are.equal(header + 100, #frame)
          assert.is_true(ws:send_raw(frame:sub(1, header + 10)))
          ws:expect_close(1007)
        end)

      it("a long message whose last byte is not UTF-8", function()
        expect_failure(1007, { { opcode = TEXT,
          payload = helper.text_of_size(10000) .. "\xFF" } })
      end)

      it("a long last fragment whose last byte is not UTF-8", function()
        expect_failure(1007, {
          { opcode = TEXT, fin = false, payload = "ab" },
          { opcode = CONT, payload = helper.text_of_size(20000) .. "\xC0" } })
      end)

      it("invalid bytes in the first fragment (fail fast)", function()
        expect_failure(1007, {
          { opcode = TEXT, fin = false, payload = "abcd\xFFefgh" } })
      end)

      it("a close reason that is not UTF-8", function()
        expect_failure(1007, { { opcode = CLOSE,
          payload = helper.close_payload(1000, "bye \xFF") } })
      end)
    end)

    describe("closing handshake (§7)", function()
      for _, code in ipairs{ 1000, 1001, 1002, 1003, 1007, 1008, 1009,
          1010, 1011, 3000, 4999 } do
        it("echoes close code " .. code, function()
          assert.is_true(ws:close(code, "reason"))
          assert.are.equal(code, ws:expect_close())
        end)
      end

      it("answers an empty close with an empty close or 1000", function()
        assert.is_true(ws:close())
        local code = ws:expect_close()
        assert.is_true(code == nil or code == 1000,
          "got close code " .. tostring(code))
      end)

      it("echoes a close that arrives inside a fragmented message",
        function()
          assert.is_true(ws:send_frame{ opcode = TEXT, fin = false,
            payload = "unfinished" })
          assert.is_true(ws:close(1000, "bye"))
          assert.are.equal(1000, ws:expect_close())
        end)

      it("drops TCP when the client never answers its close", function()
        assert.is_true(ws:send_frame{ opcode = TEXT, mask = false })
        local frame = assert(ws:read_frame())
        assert.are.same({ CLOSE, 1002 },
          { frame.opcode, (string.unpack(">I2", frame.payload)) })
        assert.is_true(ws:is_closed(CLOSE_TIMEOUT + 2))
      end)
    end)
  end)

  describe("message size limit (" .. app .. ")", function()
    local server = helper.with_server(app,
      { MAX_MESSAGE_SIZE = 1000, CLOSE_TIMEOUT = CLOSE_TIMEOUT })
    local ws

    before_each(function()
      ws = assert(helper.ws_connect(server.port))
    end)

    after_each(function()
      ws:abort()
    end)

    it("echoes a message of exactly the limit", function()
      local data = helper.binary_of_size(1000)
      assert.is_true(ws:send_binary(data))
      assert.are.same({ BINARY, data }, { ws:recv_message() })
      ws:close(1000)
      assert.are.equal(1000, ws:expect_close())
    end)

    it("echoes two fragments that add up to the limit", function()
      assert.is_true(ws:send_frame{ opcode = TEXT, fin = false,
        payload = ("a"):rep(500) })
      assert.is_true(ws:send_frame{ opcode = CONT,
        payload = ("b"):rep(500) })
      assert.are.same({ TEXT, ("a"):rep(500) .. ("b"):rep(500) },
        { ws:recv_message() })
      ws:close(1000)
      assert.are.equal(1000, ws:expect_close())
    end)

    it("closes with 1009 on a binary frame of 1001 bytes", function()
      assert.is_true(ws:send_binary(helper.binary_of_size(1001)))
      ws:expect_close(1009)
    end)

    it("closes with 1009 on a text frame of 1001 bytes", function()
      assert.is_true(ws:send_text(helper.text_of_size(1001)))
      ws:expect_close(1009)
    end)

    it("closes with 1009 on two fragments of 600 bytes", function()
      assert.is_true(ws:send_raw(
        helper.build_frame{ opcode = BINARY, fin = false,
          payload = helper.binary_of_size(600) }
        .. helper.build_frame{ opcode = CONT,
          payload = helper.binary_of_size(600) }))
      ws:expect_close(1009)
    end)
  end)
end
