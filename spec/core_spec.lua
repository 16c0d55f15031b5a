-- Unit specs of the core's pure pieces, through the Lua module.
local core = require "moonsocket.core"

describe("accept_key", function()
  it("computes the RFC 6455 example (section 1.3)", function()
    assert.are.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                     core.accept_key("dGhlIHNhbXBsZSBub25jZQ=="))
  end)

  it("rejects keys that are not base64 of 16 bytes", function()
    local bad = {
      "", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ===",
      "dGhlIHNhbXBsZSBub25jZ",      -- 15 bytes, unpadded
      "dGhlIHNhbXBsZSBub25jZXg=",   -- 17 bytes
      "dGhlIHNhbXBsZSBub25j*Q==", "dGhlIHNhbXBsZSBub25jZQ==\0",
    }
    for _, key in ipairs(bad) do
      assert.are.same({ nil, "key is not base64 of 16 bytes" },
                      { core.accept_key(key) })
    end
  end)
end)

describe("utf8_valid", function()
  local cases = {
    { "", true }, { "hello", true }, { "κόσμε", true },
    { "\u{10FFFF}", true }, { "\u{D7FF}\u{E000}", true },
    { "\xF0\x90\x80\x80", true },
    { "\xC0\xAF", false },          -- overlong
    { "\xE0\x80\xAF", false },      -- overlong
    { "\xED\xA0\x80", false },      -- surrogate U+D800
    { "\xF4\x90\x80\x80", false },  -- above U+10FFFF
    { "\xF5\x80\x80\x80", false }, { "\xFF", false }, { "\x80", false },
    { "\xCE", false },              -- truncated
    { "abcdefgh\xCEabcdefgh", false },
    { string.rep("a", 1000) .. "\xE2\x82\xAC", true },
  }
  for _, case in ipairs(cases) do
    it(("judges %q"):format(case[1]:sub(1, 20)), function()
      assert.are.equal(case[2], core.utf8_valid(case[1]))
    end)
  end
end)

describe("parse_request", function()
  it("parses a request head", function()
    local raw = "GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nX-Y:  z \r\n\r\nrest"
    local n, req = core.parse_request(raw)
    assert.are.equal(#raw - 4, n)
    assert.are.same({ method = "GET", target = "/ws?x=1", minor_version = 1,
                      headers = { { "Host", "a" }, { "X-Y", "z" } } }, req)
  end)

  it("answers incomplete heads", function()
    assert.are.same({ nil, "incomplete" },
                    { core.parse_request("GET / HTTP/1.1\r\nHost: a\r\n") })
  end)

  local statuses = {
    { "garbage\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\nName : x\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400 },
    { "GET / HTTP/2.0\r\n\r\n", 505 },
    { "GET /" .. string.rep("a", 5000) .. " HTTP/1.1\r\n\r\n", 414 },
    { "GET / HTTP/1.1\r\n" .. string.rep("A: b\r\n", 65) .. "\r\n", 431 },
    { "GET / HTTP/1.1\r\nA: " .. string.rep("b", 9000) .. "\r\n\r\n", 431 },
  }
  for i, case in ipairs(statuses) do
    it(("answers case %d with %d"):format(i, case[2]), function()
      assert.are.same({ nil, case[2] }, { core.parse_request(case[1]) })
    end)
  end
end)

describe("listen", function()
  it("names a bad option and its range", function()
    assert.has_error(function()
      core.listen { handler = print, options = { max_message_size = 0 } }
    end, "option 'max_message_size' must be an integer from 1 to 1099511627776")
    assert.has_error(function()
      core.listen { handler = print, options = { no_such_option = 1 } }
    end, "unknown option 'no_such_option'")
    assert.has_error(function()
      core.listen { handler = print, options = { keep_request = 1 } }
    end, "option 'keep_request' must be a boolean")
  end)

  it("takes keep_request on routes only, not on clients", function()
    assert.has_no_error(function()
      core.route_options({ keep_request = true }, { keep_request = false })
    end)
    assert.has_error(function()
      core.connect { host = "127.0.0.1", port = 9, target = "/",
                     handler = {}, options = { keep_request = true } }
    end, "option 'keep_request' belongs to server routes")
  end)

  it("reports a port it cannot bind", function()
    local a = assert(core.listen { handler = print })
    local _, port = a:address()
    local ok, err, code = core.listen { handler = print, port = port }
    assert.is_nil(ok)
    assert.are.equal("ELISTEN", code)
    assert.matches("Address already in use", err)
    a:close()
  end)

  it("stops listening when a <close> variable leaves its scope", function()
    local port
    do
      local server <close> = assert(core.listen { handler = print })
      port = select(2, server:address())
      assert.is_truthy(require("socket").connect("127.0.0.1", port))
    end
    assert.is_nil(require("socket").connect("127.0.0.1", port))
  end)
end)
