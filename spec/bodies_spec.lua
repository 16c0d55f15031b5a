-- spec/bodies_spec.lua: how a request body is framed (RFC 9112 section
-- 6): what is refused before the app sees the request, with the exact
-- answer; and req.args, the query decoded.
local helper = require "helper"
local socket = require "socket"

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

-- The exact bytes of a 200 with body, on a connection kept alive.
local function ok(body)
  return ("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"):format(#body,
                                                                   body)
end

local function chunked(body, size)
  local parts = {}
  for i = 1, #body, size do
    local piece = body:sub(i, i + size - 1)
    parts[#parts + 1] = ("%x\r\n%s\r\n"):format(#piece, piece)
  end
  return table.concat(parts) .. "0\r\n\r\n"
end

describe("reading request bodies", function()
  local server = helper.with_server("spec/apps/bodies.lua",
                                    { BODY_TIMEOUT = 0.5 })

  local function exchange(request)
    local sock = assert(helper.connect(server.port))
    sock:send(request)
    local response = helper.read_raw_response(sock)
    return response, sock
  end

  local function last_failure()
    local response, sock = exchange("GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
    sock:close()
    return response:match("\r\n\r\n(.*)\n$")
  end

  it("gives req:body() a Content-Length body that came with the head, "
     .. "and serves the next request on the connection", function()
    local response, sock = exchange("POST /echo HTTP/1.1\r\nHost: x\r\n"
      .. "Content-Length: 11\r\n\r\nhello worldGET /fast HTTP/1.1\r\n"
      .. "Host: x\r\n\r\n")
    assert.are.equal(ok("hello world"), response)
    assert.are.equal(ok("fast\n"), helper.read_raw_response(sock))
    sock:close()
  end)

  it("waits in req:body() for a body sent in pieces", function()
    local body = helper.random_bytes(200000)
    local sock = assert(helper.connect(server.port))
    sock:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: "
              .. #body .. "\r\n\r\n" .. body:sub(1, 1000))
    socket.sleep(0.1)
    sock:send(body:sub(1001, 150000))
    socket.sleep(0.1)
    sock:send(body:sub(150001))
    assert.are.equal(ok(body), helper.read_raw_response(sock))
    sock:close()
  end)

  it("decodes a chunked body, extensions and trailer fields dropped",
     function()
    local response, sock = exchange("POST /echo HTTP/1.1\r\nHost: x\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n"
      .. "6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
      .. "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(ok("hello world"), response)
    assert.are.equal(ok("fast\n"), helper.read_raw_response(sock))
    sock:close()
  end)

  it("takes BWS between a chunk size and its extension or CRLF",
     function()
    local response, sock = exchange("POST /echo HTTP/1.1\r\nHost: x\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n5 \t;a=b\r\nhello\r\n"
      .. "6\t\r\n world\r\n0 \r\n\r\n")
    assert.are.equal(ok("hello world"), response)
    sock:close()
  end)

  it("decodes a chunked body sent a byte at a time", function()
    local body = ("chunked bytes "):rep(20)
    local sock = assert(helper.connect(server.port))
    helper.send_bytewise(sock, "POST /echo HTTP/1.1\r\nHost: x\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n" .. chunked(body, 7), 0)
    assert.are.equal(ok(body), helper.read_raw_response(sock))
    sock:close()
  end)

  it("reads the body of an HTTP/1.0 request, then closes", function()
    local response, sock = exchange("POST /echo HTTP/1.0\r\n"
      .. "Content-Length: 3\r\n\r\nabc")
    assert.are.equal("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
      .. "Connection: close\r\n\r\nabc", response)
    assert.is_true((helper.socket_closed(sock, 2)))
    sock:close()
  end)

  it("closes after an HTTP/1.0 request with Transfer-Encoding, even one "
     .. "asking for keep-alive: its framing is faulty (RFC 9112 6.1)",
     function()
    local response, sock = exchange("POST /echo HTTP/1.0\r\n"
      .. "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "3\r\nabc\r\n0\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
      .. "Connection: close\r\n\r\nabc", response)
    -- the request after it is never read
    assert.is_true((helper.socket_closed(sock, 2, true)))
    sock:close()
  end)

  it("counts a body req:body() holds against max_incomplete_bytes: past "
     .. "it 503, before the app or to its reader (EBUSY); what it held "
     .. "is given back",
     function()
    local busy = helper.start_server("spec/apps/bodies.lua",
                                     { MAX_INCOMPLETE_BYTES = 40000 })
    finally(function() helper.stop_and_check(busy) end)
    local function post(size)
      local sock = assert(helper.connect(busy.port))
      sock:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: "
                .. size .. "\r\n\r\n" .. ("b"):rep(size))
      local response = helper.read_raw_response(sock)
      sock:close()
      return response
    end
    local why = "503 Service Unavailable: the server holds too many "
      .. "incomplete bytes\n"
    assert.are.equal(("HTTP/1.1 503 Service Unavailable\r\n"
      .. "Content-Length: %d\r\nConnection: close\r\n%s\r\n%s")
      :format(#why, PLAIN, why), post(60000))
    -- a reader waiting for it learns why: its 100 Continue says it waits
    local sock = assert(helper.connect(busy.port))
    sock:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n"
              .. "Expect: 100-continue\r\n\r\n")
    assert.are.equal("HTTP/1.1 100 Continue\r\n\r\n", sock:receive(25))
    sock:send(("b"):rep(60000))
    assert.are.equal(("HTTP/1.1 503 Service Unavailable\r\n"
      .. "Content-Length: %d\r\nConnection: close\r\n%s\r\n%s")
      :format(#why, PLAIN, why), helper.read_raw_response(sock))
    sock:close()
    local told = ok("the server holds too many incomplete bytes EBUSY\n")
    assert.is_truthy(helper.wait_until(function()
      local sock = assert(helper.connect(busy.port))
      sock:send("GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
      local response = helper.read_raw_response(sock)
      sock:close()
      return response == told
    end))
    for _ = 1, 3 do
      assert.are.equal(ok(("b"):rep(30000)), post(30000))
    end
  end)

  it("streams a large body through req:read(n), in pieces of at most n "
     .. "bytes", function()
    local body = helper.random_bytes(3 * 1024 * 1024)
    local sum = 0
    for i = 1, #body, 4096 do sum = sum + body:byte(i) end
    for _, coding in ipairs { "length", "chunked" } do
      local sock = assert(helper.connect(server.port))
      sock:settimeout(10)
      local head = "POST /stream?n=5000&pause=1 HTTP/1.1\r\nHost: x\r\n"
      if coding == "length" then
        sock:send(head .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
      else
        sock:send(head .. "Transfer-Encoding: chunked\r\n\r\n"
                  .. chunked(body, 100000))
      end
      local _, _, response = helper.read_response(sock)
      assert.are.equal(("%d bytes, largest piece 5000, sum %d\n")
                       :format(#body, sum), response, coding)
      sock:close()
    end
  end)

  it("answers a request without a body: req:body() is \"\", req:read() "
     .. "nil", function()
    local response, sock = exchange("GET /none HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(ok("\"\" nil\n"), response)
    sock:close()
  end)

  it("raises for req:read(0)", function()
    local response, sock = exchange("POST /misuse HTTP/1.1\r\nHost: x\r\n"
      .. "Content-Length: 1\r\n\r\nx")
    assert.matches("false .*bad argument #1 to 'read' %(positive integer "
                   .. "expected, got integer%)", response)
    sock:close()
  end)

  describe("Expect: 100-continue", function()
    it("is answered 100 when the app reads, then the answer", function()
      local sock = assert(helper.connect(server.port))
      sock:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                .. "Expect: 100-continue\r\n\r\n")
      assert.are.equal("HTTP/1.1 100 Continue", sock:receive("*l"))
      assert.are.equal("", sock:receive("*l"))
      sock:send("hello")
      assert.are.equal(ok("hello"), helper.read_raw_response(sock))
      sock:close()
    end)

    it("gets no 100 when the app answers without reading: the answer "
       .. "closes the connection", function()
      local response, sock = exchange("POST /ignore HTTP/1.1\r\nHost: x\r\n"
        .. "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
      assert.are.equal("HTTP/1.1 202 Accepted\r\nContent-Length: 8\r\n"
        .. "Connection: close\r\n\r\nignored\n", response)
      assert.is_true((helper.socket_closed(sock, 2, true)))
      sock:close()
    end)
  end)

  describe("a body the app does not read", function()
    it("is discarded, and the next request served", function()
      for _, path in ipairs { "/ignore", "/ignore-later" } do
        local body = ("GET /never HTTP/1.1\r\n\r\n"):rep(4000)
        local sock = assert(helper.connect(server.port))
        sock:send("POST " .. path .. " HTTP/1.1\r\nHost: x\r\n"
          .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
          .. "POST " .. path .. " HTTP/1.1\r\nHost: x\r\n"
          .. "Transfer-Encoding: chunked\r\n\r\n" .. chunked(body, 3000)
          .. "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        local ignored = "HTTP/1.1 202 Accepted\r\nContent-Length: 8\r\n\r\n"
          .. "ignored\n"
        assert.are.equal(ignored, helper.read_raw_response(sock), path)
        assert.are.equal(ignored, helper.read_raw_response(sock), path)
        assert.are.equal(ok("fast\n"), helper.read_raw_response(sock), path)
        sock:close()
      end
    end)
  end)

  describe("bad bodies get the exact answer, and close", function()
    local function bad(status, reason, why)
      local body = ("%d %s: %s\n"):format(status, reason, why)
      return ("HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close"
        .. "\r\n%s\r\n%s"):format(status, reason, #body, PLAIN, body)
    end
    local cases = {
      { "a chunk size that is no hex number", "zz\r\nhello\r\n0\r\n\r\n",
        "chunk size expected" },
      { "hex digits followed by garbage", "5z\r\nhello\r\n0\r\n\r\n",
        "invalid chunk size" },
      { "a missing CRLF after chunk data", "5\r\nhelloX\r\n0\r\n\r\n",
        "chunk data not followed by CRLF" },
      { "a bare LF ending the size line", "5\nhello\r\n0\r\n\r\n",
        "invalid chunk size" },
      { "an over-long chunk size line",
        "5;" .. ("e"):rep(5000) .. "\r\nhello\r\n0\r\n\r\n",
        "chunk size line too long" },
      { "a chunk size over 64 bits", ("f"):rep(17) .. "\r\n",
        "chunk size too large" },
      -- after the size only BWS, then ";" or the CRLF (RFC 9112 7.1.1)
      { "a blank and no extension after the size",
        "5 x\r\nhello\r\n0\r\n\r\n", "invalid chunk extension" },
      { "a second number after the size", "5 5\r\nhello\r\n0\r\n\r\n",
        "invalid chunk extension" },
    }
    for _, case in ipairs(cases) do
      it("400 for " .. case[1], function()
        local response, sock = exchange("POST /echo HTTP/1.1\r\nHost: x\r\n"
          .. "Transfer-Encoding: chunked\r\n\r\n" .. case[2] .. NEXT)
        assert.are.equal(bad(400, "Bad Request", case[3]), response)
        assert.is_true((helper.socket_closed(sock, 2, true)))
        sock:close()
      end)
    end

    it("400 for a bad chunk after the app began reading, the reader told "
       .. "EINVAL", function()
      local sock = assert(helper.connect(server.port))
      sock:send("POST /echo HTTP/1.1\r\nHost: x\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
      socket.sleep(0.1)
      sock:send("5\r\nhelloX\r\n0\r\n\r\n")
      assert.are.equal(bad(400, "Bad Request",
                           "chunk data not followed by CRLF"),
                       helper.read_raw_response(sock))
      sock:close()
      assert.are.equal("invalid chunked request body EINVAL",
                       last_failure())
    end)

    it("413 for a chunked body over max_body_size, once it is over",
       function()
      local sock = assert(helper.connect(server.port))
      sock:settimeout(10)
      sock:send("POST /echo HTTP/1.1\r\nHost: x\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n")
      local piece = chunked(("x"):rep(1024 * 1024), 1024 * 1024)
      piece = piece:sub(1, -6)                 -- without the last chunk
      for _ = 1, 5 do
        if not sock:send(piece) then break end
      end
      assert.are.equal(bad(413, "Content Too Large",
                           "request body too large"),
                       helper.read_raw_response(sock))
      sock:close()
      assert.are.equal("request body too large ETOOLARGE", last_failure())
    end)

    it("408 for a body that stops arriving (body_timeout)", function()
      local sock = assert(helper.connect(server.port))
      local t0 = socket.gettime()
      sock:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                .. "\r\nhalf")
      assert.are.equal(bad(408, "Request Timeout",
                           "the request body did not arrive in time"),
                       helper.read_raw_response(sock))
      local took = socket.gettime() - t0
      assert.is_true(took >= 0.45 and took < helper.scaled(3), took)
      assert.is_true((helper.socket_closed(sock, 2, true)))
      sock:close()
      assert.are.equal("timeout ETIMEDOUT", last_failure())
    end)

    it("tells a reader whose client left ECLOSED", function()
      local sock = assert(helper.connect(server.port))
      sock:send("POST /slow-echo HTTP/1.1\r\nHost: x\r\n"
                .. "Content-Length: 10\r\n\r\nhalf")
      socket.sleep(0.3)
      sock:close()
      assert.is_true(helper.wait_until(function()
        return last_failure() == "closed ECLOSED"
      end, 3))
    end)
  end)

  it("serves Python's http.client: Content-Length and chunked bodies, "
     .. "100-continue", function()
    local output, status = helper.run_peer("http_body_client.py",
                                           { server.port })
    assert.are.equal(0, status, output)
    assert.are.equal("length 200 100000\nchunked 200 100000\n"
                     .. "keep-alive 200 fast\n", output)
  end)
end)
