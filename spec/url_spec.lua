-- spec/url_spec.lua: moonsocket.url, percent-decoding and query strings.

local url = require "moonsocket.url"

describe("moonsocket.url.decode", function()
  it("decodes %XX and + as a space", function()
    assert.are.equal("a b/c?d=é", url.decode("a+b%2Fc%3fd%3D%C3%A9"))
  end)

  it("leaves a % without two hex digits as it is", function()
    assert.are.equal("100% sure %zz %4", url.decode("100%+sure+%zz+%4"))
  end)

  it("keeps %00 and other bytes as bytes", function()
    assert.are.equal("\0\255", url.decode("%00%FF"))
  end)

  it("returns a string without escapes as it is", function()
    assert.are.equal("plain", url.decode("plain"))
  end)

  it("raises on a non-string", function()
    assert.has_error(function() url.decode(42) end,
      "bad argument #1 to 'decode' (string expected, got number)")
  end)
end)

describe("moonsocket.url.parse_query", function()
  it("maps names to values, decoded", function()
    assert.are.same({ q = "hello world", ["a b"] = "1&2" },
      url.parse_query("q=hello+world&a%20b=1%262"))
  end)

  it("lists the values of a repeated name in order", function()
    assert.are.same({ tag = { "a", "b", "c" }, x = "1" },
      url.parse_query("tag=a&x=1&tag=b&tag=c"))
  end)

  it("gives true to a name without =, and '' to an empty value", function()
    assert.are.same({ flag = true, empty = "" },
      url.parse_query("flag&empty="))
  end)

  it("skips empty pairs", function()
    assert.are.same({ a = "1", b = "2" }, url.parse_query("&a=1&&b=2&"))
  end)

  it("reads at most max arguments (100 by default)", function()
    local parts = {}
    for i = 1, 150 do parts[i] = "k" .. i .. "=" .. i end
    local args = url.parse_query(table.concat(parts, "&"))
    local n = 0
    for _ in pairs(args) do n = n + 1 end
    assert.are.equal(100, n)
    assert.are.equal("100", args.k100)
    assert.is_nil(args.k101)
    assert.are.same({ k1 = "1", k2 = "2" },
      url.parse_query(table.concat(parts, "&"), 2))
  end)

  it("gives an empty table for nil", function()
    assert.are.same({}, url.parse_query(nil))
  end)

  it("raises on a non-string", function()
    assert.has_error(function() url.parse_query({}) end,
      "bad argument #1 to 'parse_query' (string expected, got table)")
  end)
end)
