-- spec/handshake_spec.lua: the opening handshake (RFC 6455 §4.2) and the
-- HTTP errors the server answers instead of a 101.

local helper = require "helper"

local APP = "spec/apps/echo.lua"
local RFC_KEY, RFC_ACCEPT =
  "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

describe("opening handshake", function()
  local server = helper.with_server(APP)

  -- Sends request, asserts the status, returns headers, body, socket.
  local function request(expected, raw, opts)
    local status, headers, body, sock = helper.http(server.port, raw, opts)
    assert.are.equal(expected, status, status and body or headers)
    return headers, body, sock
  end

  -- Asserts a 101 with the headers RFC 6455 §4.2.2 requires for `key`.
  local function assert_switching(headers, key)
    assert.are.equal("websocket", (headers.upgrade or ""):lower())
    assert.are.equal("upgrade", (headers.connection or ""):lower())
    assert.are.equal(helper.accept_for(key), headers["sec-websocket-accept"])
    -- Nothing was offered, so nothing may be selected (§4.2.2 step 5).
    assert.is_nil(headers["sec-websocket-protocol"])
    assert.is_nil(headers["sec-websocket-extensions"])
  end

  -- Asserts an error status and that the server then closes the stream.
  local function rejects(expected, raw, opts)
    local headers, body, sock = request(expected, raw, opts)
    local closed, err = helper.socket_closed(sock, 2, false)
    sock:close()
    assert.is_true(closed, "connection still open after " .. expected
      .. " (" .. tostring(err) .. ")")
    return headers, body
  end

  -- Asserts the upgraded connection echoes a message.
  local function assert_echoes(sock, headers)
    local ws = helper.wrap(sock, headers)
    assert.is_true(ws:send_text("after the handshake"))
    assert.are.same({ helper.TEXT, "after the handshake" },
      { ws:recv_message() })
    ws:close(1000)
    assert.are.equal(1000, ws:expect_close())
    ws:abort()
  end

  describe("accepts", function()
    it("a valid upgrade request with 101 and the right headers", function()
      local raw, key = helper.upgrade_request()
      local headers, _, sock = request(101, raw)
      assert_switching(headers, key)
      assert_echoes(sock, headers)
    end)

    it("the RFC 6455 §1.3 example key", function()
      local raw = helper.upgrade_request{ key = RFC_KEY }
      local headers, _, sock = request(101, raw)
      assert.are.equal(RFC_ACCEPT, headers["sec-websocket-accept"])
      sock:close()
    end)

    it("a request delivered one byte at a time", function()
      local raw, key = helper.upgrade_request()
      local headers, _, sock = request(101, raw, { bytewise = true })
      assert_switching(headers, key)
      assert_echoes(sock, headers)
    end)

    it("header names in any case", function()
      local raw = helper.upgrade_request{
        headers = { Host = false, Upgrade = false, Connection = false,
          ["Sec-WebSocket-Key"] = false, ["Sec-WebSocket-Version"] = false },
        extra = { "host: 127.0.0.1", "UPGRADE: websocket",
          "cOnNeCtIoN: Upgrade", "sec-websocket-key: " .. RFC_KEY,
          "SEC-WEBSOCKET-VERSION: 13" },
      }
      local headers, _, sock = request(101, raw)
      assert.are.equal(RFC_ACCEPT, headers["sec-websocket-accept"])
      sock:close()
    end)

    for _, value in ipairs{ "keep-alive, Upgrade", "Upgrade, keep-alive",
        "keep-alive,upgrade", "UPGRADE" } do
      it("Connection: " .. value, function()
        local raw, key = helper.upgrade_request{
          headers = { Connection = value } }
        local headers, _, sock = request(101, raw)
        assert_switching(headers, key)
        sock:close()
      end)
    end

    it("Upgrade: WebSocket (token compared case-insensitively)", function()
      local raw, key = helper.upgrade_request{
        headers = { Upgrade = "WebSocket" } }
      local headers, _, sock = request(101, raw)
      assert_switching(headers, key)
      sock:close()
    end)

    it("exactly 64 header fields", function()
      local extra = {}
      for i = 1, 64 - 5 do extra[i] = "X-Pad-" .. i .. ": " .. i end
      local raw, key = helper.upgrade_request{ extra = extra }
      local headers, _, sock = request(101, raw)
      assert_switching(headers, key)
      sock:close()
    end)

    it("a header block of about 4 KiB", function()
      local raw, key = helper.upgrade_request{
        extra = { "X-Pad: " .. ("p"):rep(4000) } }
      local headers, _, sock = request(101, raw)
      assert_switching(headers, key)
      sock:close()
    end)
  end)

  describe("answers 400 to", function()
    local cases = {
      { "a missing Sec-WebSocket-Key",
        { headers = { ["Sec-WebSocket-Key"] = false } } },
      { "an empty Sec-WebSocket-Key", { key = "" } },
      { "a Sec-WebSocket-Key that is not base64",
        { key = "!!!!!!!!!!!!!!!!!!!!!!==" } },
      { "a Sec-WebSocket-Key of 15 bytes",
        { key = helper.base64(("k"):rep(15)) } },
      { "a Sec-WebSocket-Key of 17 bytes",
        { key = helper.base64(("k"):rep(17)) } },
      { "a duplicate Sec-WebSocket-Key",
        { extra = { "Sec-WebSocket-Key: " .. RFC_KEY } } },
      { "a missing Host", { headers = { Host = false } } },
      { "a POST", { method = "POST" } },
      { "HTTP/1.0", { version = "HTTP/1.0" } },
      { "Connection without the upgrade token",
        { headers = { Connection = "keep-alive" } } },
      { "a missing Connection", { headers = { Connection = false } } },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        rejects(400, helper.upgrade_request(case[2]))
      end)
    end

    for _, raw in ipairs{
      "HELLO\r\n\r\n",
      "GET /ws\r\nHost: 127.0.0.1\r\n\r\n",
      "GET /ws HTTP/1.1 extra\r\nHost: 127.0.0.1\r\n\r\n",
      "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
    } do
      it(string.format("the request line %q", raw:match("^[^\r]*")),
        function()
          rejects(400, raw)
        end)
    end
  end)

  describe("answers 426", function()
    for _, version in ipairs{ "8", "12", "14" } do
      it("to Sec-WebSocket-Version: " .. version
          .. ", advertising version 13", function()
        local headers = rejects(426, helper.upgrade_request{
          headers = { ["Sec-WebSocket-Version"] = version } })
        assert.are.equal("13", headers["sec-websocket-version"])
      end)
    end

    it("to a wrong version delivered one byte at a time", function()
      local headers = rejects(426, helper.upgrade_request{
        headers = { ["Sec-WebSocket-Version"] = "12" } }, { bytewise = true })
      assert.are.equal("13", headers["sec-websocket-version"])
    end)

    it("to a plain GET without Upgrade, keeping the connection", function()
      local status, headers, _, sock = helper.http(server.port,
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
      assert.are.equal(426, status)
      assert.are.equal("websocket", headers.upgrade)
      assert.are.equal("13", headers["sec-websocket-version"])
      -- a well-formed HTTP request: the connection stays usable
      sock:send("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        .. "Connection: close\r\n\r\n")
      assert.are.equal(426, (helper.read_response(sock)))
      assert.is_true((helper.socket_closed(sock, 2)))
      sock:close()
    end)
  end)

  describe("answers 404", function()
    for _, path in ipairs{ "/", "/nope", "/ws/extra" } do
      it("to an upgrade on " .. path, function()
        rejects(404, helper.upgrade_request{ path = path })
      end)
    end
  end)

  describe("answers 431 to", function()
    it("a single header line over 8192 bytes", function()
      rejects(431, helper.upgrade_request{
        extra = { "X-Pad: " .. ("p"):rep(9000) } })
    end)

    it("a header block over 8192 bytes in short lines", function()
      local extra = {}
      for i = 1, 50 do extra[i] = "X-Pad-" .. i .. ": " .. ("p"):rep(200) end
      rejects(431, helper.upgrade_request{ extra = extra })
    end)

    it("a header block over 8192 bytes sent in 100-byte pieces", function()
      local raw = helper.upgrade_request{
        extra = { "X-Pad: " .. ("p"):rep(9000) } }
      local sock = assert(helper.connect(server.port))
      for first = 1, #raw, 100 do
        if not sock:send(raw, first, first + 99) then break end
        helper.sleep(0.001)
      end
      local status, _, body = helper.read_response(sock)
      local closed = helper.socket_closed(sock, 2)
      sock:close()
      assert.are.equal(431, status, body)
      assert.is_true(closed, "connection still open after 431")
    end)

    it("65 header fields", function()
      local extra = {}
      for i = 1, 65 - 5 do extra[i] = "X-Pad-" .. i .. ": " .. i end
      rejects(431, helper.upgrade_request{ extra = extra })
    end)
  end)

  describe("answers 414 to", function()
    it("a request target over 4096 bytes", function()
      rejects(414, helper.upgrade_request{
        path = "/ws?q=" .. ("a"):rep(5000) })
    end)
  end)

  it("keeps serving after all of the above", function()
    local ws = assert(helper.ws_connect(server.port))
    assert.is_true(ws:send_binary("still here"))
    assert.are.same({ helper.BINARY, "still here" }, { ws:recv_message() })
    ws:close(1000)
    assert.are.equal(1000, ws:expect_close())
    ws:abort()
  end)
end)
