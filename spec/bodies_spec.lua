-- spec/bodies_spec.lua: how a request body is framed (RFC 9112 section
-- 6): what is refused before the app sees the request, with the exact
-- answer; and req.args, the query decoded.
local helper = require "helper"

local PLAIN = "Content-Type: text/plain; charset=utf-8\r\n"

local function core_error(status, reason, why)
  local body = ("%d %s: %s\n"):format(status, reason, why)
  return ("HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n"
    .. "%s\r\n%s"):format(status, reason, #body, PLAIN, body)
end

local NEXT = "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"

-- Sends a POST with the extra header lines and body, then a request
-- that must never be answered; returns the one response and whether
-- the connection then closed.
local function post(port, fields, body)
  local sock = assert(helper.connect(port))
  sock:send("POST /fast HTTP/1.1\r\nHost: x\r\n" .. fields .. "\r\n"
            .. body .. NEXT)
  local response = helper.read_raw_response(sock)
  local closed = helper.socket_closed(sock, 2, true)
  sock:close()
  return response, closed
end

describe("request body framing", function()
  local server = helper.with_server("spec/apps/pipeline.lua")
  local bad = {
    { "Content-Length beside Transfer-Encoding",
      "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
      "5\r\nhello\r\n0\r\n\r\n",
      "Content-Length beside Transfer-Encoding" },
    { "Transfer-Encoding beside Content-Length",
      "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
      "5\r\nhello\r\n0\r\n\r\n",
      "Content-Length beside Transfer-Encoding" },
    { "two different Content-Length values",
      "Content-Length: 5\r\nContent-Length: 6\r\n", "hello!",
      "Content-Length values differ" },
    { "a Content-Length that is no number",
      "Content-Length: 5x\r\n", "hello", "invalid Content-Length" },
    { "a negative Content-Length",
      "Content-Length: -1\r\n", "", "invalid Content-Length" },
    { "a transfer coding other than chunked",
      "Transfer-Encoding: gzip\r\n", "hello",
      "only the chunked transfer coding is accepted" },
    { "chunked applied twice",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
      "0\r\n\r\n", "only the chunked transfer coding is accepted" },
  }
  for _, case in ipairs(bad) do
    it("answers 400 and closes for " .. case[1], function()
      local response, closed = post(server.port, case[2], case[3])
      assert.are.equal(core_error(400, "Bad Request", case[4]), response)
      assert.is_true(closed)
    end)
  end

  it("answers 413 and closes for a Content-Length over max_body_size, "
     .. "reading none of the body as a request", function()
    local body = NEXT .. ("x"):rep(101 - #NEXT)
    local response, closed = post(server.port,
      "Content-Length: " .. #body .. "\r\n", body)
    assert.are.equal(core_error(413, "Content Too Large",
                                "request body too large"), response)
    assert.is_true(closed)
  end)

  it("accepts two equal Content-Length values", function()
    local response = post(server.port,
      "Content-Length: 0\r\nContent-Length: 0\r\n", "")
    assert.are.equal("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfast\n",
                     response)
  end)
end)

describe("req.args", function()
  local server = helper.with_server("spec/apps/pipeline.lua")

  it("is the query decoded: %XX, + as a space, repeated names a list",
  function()
    local status, _, body = helper.http(server.port,
      "GET /args?a=1&b=x+y%21&a=2&c HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(200, status)
    assert.are.equal("a=1,2&b=x y!&c=true\n", body)
  end)

  it("is empty without a query", function()
    local status, _, body = helper.http(server.port,
      "GET /args HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(200, status)
    assert.are.equal("\n", body)
  end)
end)
