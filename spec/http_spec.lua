-- spec/http_spec.lua: the HTTP edges of the core over raw sockets: an
-- upgrade that carries a body, response headers from Lua, absolute-form
-- targets, HTTP/1.0 keep-alive, the lingering close and reason phrases;
-- and, to an app with WebSocket routes, Host checks, pipelining and the
-- middleware pipeline.
local helper = require "helper"

local socket = require "socket"

local PLAIN = "Content-Type: text/plain; charset=utf-8\r\n"

-- The exact bytes of an error response the core makes.
local function core_error(status, reason, why, close)
  local body = ("%d %s: %s\n"):format(status, reason, why)
  return ("HTTP/1.1 %d %s\r\nContent-Length: %d\r\n%s%s\r\n%s"):format(
    status, reason, #body, close and "Connection: close\r\n" or "", PLAIN,
    body)
end

-- Sends request on a new connection; returns the first response's bytes
-- and the socket.
local function exchange(port, request)
  local sock = assert(helper.connect(port))
  sock:send(request)
  return helper.read_raw_response(sock), sock
end

describe("HTTP edges", function()
  local server = helper.with_server("spec/apps/http.lua",
    { CLOSE_TIMEOUT = 10, HANDSHAKE_TIMEOUT = 10 })

  describe("an upgrade request with a body", function()
    -- a masked text frame "smuggled", which an echo would send back
    local frame = helper.build_frame{ payload = "smuggled" }

    local bodies = {
      { "Content-Length", { "Content-Length: " .. #frame }, frame },
      { "chunked", { "Transfer-Encoding: chunked" },
        ("%x\r\n%s\r\n0\r\n\r\n"):format(#frame, frame) },
      { "Content-Length beside chunked",
        { "Content-Length: " .. #frame, "Transfer-Encoding: chunked" },
        frame, "Content-Length beside Transfer-Encoding" },
    }
    for _, case in ipairs(bodies) do
      it("is refused with 400 and closed (" .. case[1] .. ")", function()
        local request = helper.upgrade_request{ extra = case[2] }
        local response, sock = exchange(server.port, request .. case[3])
        assert.are.equal(core_error(400, "Bad Request", case[4] or
          "an upgrade request must not carry a body", true), response)
        assert.is_true((helper.socket_closed(sock, 3)))
        sock:close()
      end)
    end

    it("is upgraded when its Content-Length is 0", function()
      local request = helper.upgrade_request{ extra = { "Content-Length: 0" } }
      local sock = assert(helper.connect(server.port))
      sock:send(request)
      assert.are.equal(101, (helper.read_response(sock)))
      local ws = helper.wrap(sock)
      ws:send_text("echo")
      assert.are.same({ helper.TEXT, "echo" }, { ws:recv_message() })
      ws:abort()
    end)
  end)

  describe("response headers from Lua", function()
    local function answer(name)
      local response, sock = exchange(server.port,
        "GET /header/" .. name .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      sock:close()
      return response
    end

    local SERVER_ERROR = core_error(500, "Internal Server Error",
                                    "the application failed", false)

    for name, field in pairs { ["transfer-encoding"] = "Transfer-Encoding",
        ["content-length"] = "Content-Length", connection = "Connection",
        upgrade = "Upgrade" } do
      it("may not set " .. field .. ": 500, logged", function()
        assert.are.equal(SERVER_ERROR, answer(name))
        assert.matches("request handler returned an invalid response: "
          .. "the core writes header '" .. field:gsub("%-", "%%-") .. "'",
          server:log())
      end)
    end

    local values = { vt = "X-Vt", ff = "X-Ff", del = "X-Del", soh = "X-Soh",
                     nul = "X-Nul", lf = "X-Lf" }
    for name, field in pairs(values) do
      it("may not put a control character (" .. name .. ") in a value",
         function()
        assert.are.equal(SERVER_ERROR, answer(name))
        assert.matches("request handler returned an invalid response: "
          .. "header '" .. field:gsub("%-", "%%-") .. "' has a control "
          .. "character in its value", server:log())
      end)
    end

    local names = { space = "X Space", colon = "X:Colon", empty = "",
                    slash = "X/Slash", cr = "X\\rCr" }
    for name, shown in pairs(names) do
      it("names header fields with tokens only (" .. name .. ")", function()
        assert.are.equal(SERVER_ERROR, answer(name))
        assert.matches("request handler returned an invalid response: "
          .. "header name '" .. shown:gsub("%p", "%%%0") .. "' is not a "
          .. "token", server:log())
      end)
    end

    it("lets HTAB and obs-text through", function()
      assert.are.equal("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
        .. "X-Tab: a\tb\r\n\r\nok", answer("tab"))
      assert.are.equal("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
        .. "X-Utf8: caf\xC3\xA9\r\n\r\nok", answer("utf8"))
    end)
  end)

  describe("an absolute-form target (RFC 9112 section 3.2.2)", function()
    local function info(target, host)
      local response, sock = exchange(server.port, ("GET %s HTTP/1.1\r\n"
        .. "Host: %s\r\nConnection: close\r\n\r\n"):format(target, host))
      sock:close()
      return response
    end

    local function ok(body)
      return ("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close"
        .. "\r\nContent-Type: text/plain\r\n\r\n%s"):format(#body, body)
    end

    it("is routed by its path, the host taken from it", function()
      assert.are.equal(ok("path=/info query=a=1 target=http://example.com"
        .. "/info?a=1 host=example.com\n"),
        info("http://example.com/info?a=1", "other"))
      assert.are.equal(ok("path=/info query=nil target=HTTPS://Example.com"
        .. ":8443/info host=Example.com:8443\n"),
        info("HTTPS://Example.com:8443/info", "other"))
    end)

    it("has the path / when it has none", function()
      assert.are.equal(ok("path=/ query=nil target=http://h host=h\n"),
        info("http://h", "x"))
      assert.are.equal(ok("path=/ query=q target=http://h?q host=h\n"),
        info("http://h?q", "x"))
    end)

    it("is refused without a host or with userinfo", function()
      for _, target in ipairs { "http:///info", "http://user@h/info",
                                "http://:80/info" } do
        local response, sock = exchange(server.port, ("GET %s HTTP/1.1\r\n"
          .. "Host: x\r\n\r\n"):format(target))
        assert.are.equal(core_error(400, "Bad Request", "malformed request",
          true), response, target)
        sock:close()
      end
    end)

    it("upgrades to a WebSocket", function()
      local request = helper.upgrade_request{ path = "http://127.0.0.1/ws" }
      local sock = assert(helper.connect(server.port))
      sock:send(request)
      assert.are.equal(101, (helper.read_response(sock)))
      local ws = helper.wrap(sock)
      ws:send_text("absolute")
      assert.are.same({ helper.TEXT, "absolute" }, { ws:recv_message() })
      ws:abort()
    end)
  end)

  describe("HTTP/1.0", function()
    it("keeps a connection that asks for keep-alive, and says so",
       function()
      local sock = assert(helper.connect(server.port))
      local body = "path=/info query=nil target=/info host=nil\n"
      local expected = ("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
        .. "Connection: keep-alive\r\nContent-Type: text/plain\r\n\r\n%s")
        :format(#body, body)
      for _ = 1, 2 do
        sock:send("GET /info HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert.are.equal(expected, helper.read_raw_response(sock))
      end
      sock:send("GET /info HTTP/1.0\r\n\r\n")
      assert.are.equal(expected:gsub("keep%-alive", "close"),
                       helper.read_raw_response(sock))
      assert.is_true((helper.socket_closed(sock, 3)))
      sock:close()
    end)
  end)

  describe("the lingering close (RFC 9112 section 9.6)", function()
    it("reads what follows an answer that closes, then closes after a"
      .. " bounded amount", function()
      local sock = assert(helper.connect(server.port))
      sock:send("GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        .. "Content-Length: 100000000\r\n\r\n" .. string.rep("b", 65536))
      local body = "path=/info query=nil target=/info host=x\n"
      assert.are.equal(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
        .. "Connection: close\r\nContent-Type: text/plain\r\n\r\n%s")
        :format(#body, body), helper.read_raw_response(sock))
      -- the server goes on reading, up to its bound: the rest of the
      -- body is refused well before close_timeout (10 s)
      local chunk = string.rep("b", 65536)
      local t0, sent, err = socket.gettime(), 65536, nil
      sock:settimeout(0.5)
      while socket.gettime() - t0 < 4 do
        local n, e, partial = sock:send(chunk)
        if not n then
          sent, err = sent + (partial or 0), e
          if e ~= "timeout" then break end
        else
          sent = sent + #chunk
        end
      end
      sock:close()
      assert.is_truthy(err == "closed" or err == "connection reset by peer"
        or err == "broken pipe", tostring(err))
      assert.is_true(sent > 1048576, tostring(sent))
    end)
  end)

  describe("status lines", function()
    local REASONS = {
      [100] = "Continue", [101] = "Switching Protocols", [200] = "OK",
      [201] = "Created", [202] = "Accepted",
      [203] = "Non-Authoritative Information", [204] = "No Content",
      [205] = "Reset Content", [206] = "Partial Content",
      [300] = "Multiple Choices", [301] = "Moved Permanently",
      [302] = "Found", [303] = "See Other", [304] = "Not Modified",
      [305] = "Use Proxy", [307] = "Temporary Redirect",
      [308] = "Permanent Redirect", [400] = "Bad Request",
      [401] = "Unauthorized", [402] = "Payment Required",
      [403] = "Forbidden", [404] = "Not Found",
      [405] = "Method Not Allowed", [406] = "Not Acceptable",
      [407] = "Proxy Authentication Required", [408] = "Request Timeout",
      [409] = "Conflict", [410] = "Gone", [411] = "Length Required",
      [412] = "Precondition Failed", [413] = "Content Too Large",
      [414] = "URI Too Long", [415] = "Unsupported Media Type",
      [416] = "Range Not Satisfiable", [417] = "Expectation Failed",
      [421] = "Misdirected Request", [422] = "Unprocessable Content",
      [426] = "Upgrade Required", [429] = "Too Many Requests",
      [431] = "Request Header Fields Too Large",
      [500] = "Internal Server Error", [501] = "Not Implemented",
      [502] = "Bad Gateway", [503] = "Service Unavailable",
      [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
    }

    it("carry the reason phrase of every status RFC 9110 defines",
       function()
      local sock = assert(helper.connect(server.port))
      local codes = {}
      for code in pairs(REASONS) do
        if code >= 200 then codes[#codes + 1] = code end
      end
      table.sort(codes)
      for _, code in ipairs(codes) do
        sock:send("GET /status/" .. code .. " HTTP/1.1\r\nHost: x\r\n\r\n")
        local bodiless = code == 204 or code == 304
        assert.are.equal(("HTTP/1.1 %d %s\r\n%s\r\n"):format(code,
          REASONS[code], bodiless and "" or "Content-Length: 0\r\n"),
          helper.read_raw_response(sock))
      end
      sock:close()
    end)
  end)
end)

describe("HTTP requests to a WebSocket app", function()
  local server = helper.with_server("spec/apps/probe.lua",
    { MAX_BACKPRESSURE = 262144, KEEP_ALIVE = 0, CLOSE_TIMEOUT = 0.5,
      HANDSHAKE_TIMEOUT = 0.5 })

  it("answers 400 to an HTTP/1.1 request without one Host", function()
    for _, head in ipairs { "GET /events HTTP/1.1\r\n\r\n",
        "GET /events HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" } do
      local status, _, _, sock = helper.http(server.port, head)
      assert.are.equal(400, status)
      sock:close()
    end
    local status, _, _, sock = helper.http(server.port,
      "GET /events HTTP/1.0\r\n\r\n")
    assert.are.equal(200, status)      -- HTTP/1.0 needs none
    sock:close()
  end)

  it("ignores an empty line before a request", function()
    local status, _, _, sock = helper.http(server.port,
      "\r\nGET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(200, status)
    sock:close()
  end)

  it("runs middleware before the routes", function()
    local status, headers, body, sock = helper.http(server.port,
      "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(200, status)
    assert.are.equal("text/plain", headers["content-type"])
    assert.are.equal(#body, tonumber(headers["content-length"]))
    -- keep-alive: a second request on the same connection
    sock:send("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(404, (helper.read_response(sock)))
    sock:close()
  end)

  it("answers pipelined requests in order", function()
    local sock = helper.connect(server.port)
    sock:send("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert.are.equal(404, (helper.read_response(sock)))
    assert.are.equal(200, (helper.read_response(sock)))
    assert.are.equal(426, (helper.read_response(sock)))
    assert.is_true((helper.socket_closed(sock, 2)))
    sock:close()
  end)

  it("answers 500 when middleware fails or returns a bad header", function()
    for _, path in ipairs { "/fail", "/bad-header" } do
      local status, _, _, sock = helper.http(server.port,
        "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.are.equal(500, status)
      sock:close()
    end
    assert.matches("middleware failed on purpose", server:log())
  end)
end)
