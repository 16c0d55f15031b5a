-- spec/static_spec.lua: moonsocket.static over raw HTTP: types, lengths,
-- validators and 304, HEAD, 405, 404, keep-alive and pipelining, and no
-- way out of the root (.., %2e%2e, symbolic links, NUL).
local helper = require "helper"

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function get(port, path, headers, method)
  local lines = { (method or "GET") .. " " .. path .. " HTTP/1.1",
                  "Host: x", "Connection: close" }
  for name, value in pairs(headers or {}) do
    lines[#lines + 1] = name .. ": " .. value
  end
  local status, h, body, sock = helper.http(port,
    table.concat(lines, "\r\n") .. "\r\n\r\n")
  if sock then sock:close() end
  return status, h, body
end

describe("static files", function()
  local server, root, outside
  local big = helper.binary_of_size(5 * 1024 * 1024 + 7)

  setup(function()
    root = os.tmpname()
    os.remove(root)
    outside = root .. "-outside"
    assert(os.execute(("mkdir -p %q/sub %q/evil.example %q"):format(root,
      root, outside)))
    write(root .. "/index.html", "<!doctype html><title>t</title>")
    write(root .. "/style.css", "body{}")
    write(root .. "/app.js", "1")
    write(root .. "/data.bin", big)
    write(root .. "/sub/index.html", "sub index")
    write(root .. "/plain", "no extension")
    write(outside .. "/secret.txt", "secret")
    assert(os.execute(("ln -s %q/secret.txt %q/leak.txt"):format(outside,
      root)))
    assert(os.execute(("ln -s %q %q/outdir"):format(outside, root)))
    assert(os.execute(("ln -s style.css %q/alias.css"):format(root)))
    -- a directory whose index is a link out of the root
    assert(os.execute(("mkdir %q/trap && ln -s %q/secret.txt "
                       .. "%q/trap/index.html"):format(root, outside, root)))
    write(root .. "/mid.bin", string.rep("m", 1536 * 1024))
    write(root .. "/large.bin", string.rep("l", 8 * 1024 * 1024))
    server = helper.start_server("spec/apps/static.lua",
      { STATIC_DIR = root, HANDSHAKE_TIMEOUT = 0.3 })
  end)

  teardown(function()
    helper.stop_and_check(server)
    os.execute(("rm -rf %q %q"):format(root, outside))
  end)

  it("serves index.html for / with its type and length", function()
    local status, headers, body = get(server.port, "/")
    assert.are.equal(200, status)
    assert.are.equal("<!doctype html><title>t</title>", body)
    assert.are.equal("text/html; charset=utf-8", headers["content-type"])
    assert.are.equal(tostring(#body), headers["content-length"])
    assert.are.equal("nosniff", headers["x-content-type-options"])
    assert.are.equal("no-cache", headers["cache-control"])
    assert.matches('^"[%x%-]+"$', headers.etag)
    assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$",
                   headers["last-modified"])
  end)

  it("names common types", function()
    local cases = { ["/style.css"] = "text/css; charset=utf-8",
                    ["/app.js"] = "text/javascript; charset=utf-8",
                    ["/plain"] = "application/octet-stream",
                    ["/sub/"] = "text/html; charset=utf-8" }
    for path, ctype in pairs(cases) do
      local status, headers = get(server.port, path)
      assert.are.equal(200, status, path)
      assert.are.equal(ctype, headers["content-type"], path)
    end
  end)

  it("sends a large file intact", function()
    local status, headers, body = get(server.port, "/data.bin")
    assert.are.equal(200, status)
    assert.are.equal(tostring(#big), headers["content-length"])
    helper.assert_payload(big, body)
  end)

  it("answers 304 to a current ETag or date, 200 otherwise", function()
    local _, headers = get(server.port, "/style.css")
    local status, h304, body = get(server.port, "/style.css",
      { ["If-None-Match"] = headers.etag })
    assert.are.equal(304, status)
    assert.are.equal("", body)
    assert.is_nil(h304["content-length"])
    assert.are.equal(headers.etag, h304.etag)
    assert.are.equal(304, (get(server.port, "/style.css",
      { ["If-None-Match"] = '"other", W/' .. headers.etag })))
    assert.are.equal(200, (get(server.port, "/style.css",
      { ["If-None-Match"] = '"other"' })))
    assert.are.equal(304, (get(server.port, "/style.css",
      { ["If-Modified-Since"] = headers["last-modified"] })))
    assert.are.equal(200, (get(server.port, "/style.css",
      { ["If-Modified-Since"] = "Sun, 06 Nov 1994 08:49:37 GMT" })))
    -- If-None-Match wins over If-Modified-Since (RFC 7232 section 6)
    assert.are.equal(200, (get(server.port, "/style.css",
      { ["If-None-Match"] = '"other"',
        ["If-Modified-Since"] = headers["last-modified"] })))
  end)

  it("answers HEAD with the headers of GET and no body", function()
    local sock = helper.connect(server.port)
    sock:send("HEAD /style.css HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n")
    local line = sock:receive("*l")
    assert.are.equal("HTTP/1.1 200 OK", line)
    local length
    repeat
      line = sock:receive("*l")
      length = length or line:match("^Content%-Length: (%d+)$")
    until line == ""
    assert.are.equal("6", length)
    -- the next bytes are the second response, not a body
    local status, _, body = helper.read_response(sock)
    assert.are.same({ 200, "1" }, { status, body })
    sock:close()
  end)

  it("answers 405 with Allow to other methods", function()
    local status, headers = get(server.port, "/style.css", nil, "POST")
    assert.are.equal(405, status)
    assert.are.equal("GET, HEAD", headers.allow)
  end)

  it("answers 404 to missing files", function()
    assert.are.equal(404, (get(server.port, "/missing.html")))
    assert.are.equal(404, (get(server.port, "/style.css/x")))
  end)

  it("goes on with a pipeline after a reply over max_backpressure",
     function()
    -- 1.5 MiB pauses reading the pipeline; the queue may empty at once
    local sock = helper.connect(server.port)
    sock:send("GET /mid.bin HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n")
    local status, _, body = helper.read_response(sock)
    assert.are.same({ 200, 1536 * 1024 }, { status, #body })
    status, _, body = helper.read_response(sock)
    assert.are.same({ 200, "1" }, { status, body })
    sock:close()
  end)

  it("keeps sending to a slow reader past handshake_timeout", function()
    -- 8 MiB at 3 MB/s: far longer than the 0.3 s handshake_timeout, and
    -- more than loopback's socket buffers hold
    local out, status = helper.run_peer("slow_reader.py",
      { server.port, "/large.bin", 3000000 })
    assert.are.equal(0, status, out)
    assert.are.equal("HTTP/1.1 200 OK " .. 8 * 1024 * 1024 .. "\n", out)
  end)

  it("redirects a directory without its slash", function()
    local status, headers = get(server.port, "/sub?x=1")
    assert.are.equal(301, status)
    assert.are.equal("/sub/?x=1", headers.location)
  end)

  it("redirects to a path, never to another host (//host)", function()
    for path, location in pairs { ["//evil.example"] = "/evil.example/",
        ["///evil.example?q"] = "/evil.example/?q",
        ["http://x//evil.example"] = "/evil.example/" } do
      local sock = assert(helper.connect(server.port))
      sock:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.are.equal("HTTP/1.1 301 Moved Permanently\r\n"
        .. "Content-Length: 0\r\nLocation: " .. location .. "\r\n\r\n",
        helper.read_raw_response(sock), path)
      sock:close()
    end
  end)

  it("never serves a file outside the root", function()
    for _, path in ipairs { "/../" .. outside:match("[^/]+$") .. "/secret.txt",
        "/%2e%2e/" .. outside:match("[^/]+$") .. "/secret.txt",
        "/sub/%2E%2E/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd",
        "/leak.txt", "/outdir/secret.txt", "/./style.css",
        "/sub/..\\style.css", "/trap/", "/trap/index.html" } do
      local status, _, body = get(server.port, path)
      assert.are.equal(404, status, path)
      assert.does_not.match("secret", body)
    end
    assert.are.equal(200, (get(server.port, "/alias.css")))  -- inside
  end)

  it("answers 400 to NUL bytes and malformed escapes", function()
    for _, path in ipairs { "/index.html%00.css", "/%zz", "/a%2", "/a%" } do
      assert.are.equal(400, (get(server.port, path)), path)
    end
  end)

  it("keeps HTTP/1.1 connections alive and answers in order", function()
    local sock = helper.connect(server.port)
    sock:send("GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /data.bin HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n")
    local function next_response()
      local status, _, body = helper.read_response(sock)
      return status, body
    end
    assert.are.same({ 200, "body{}" }, { next_response() })
    local status, body = next_response()
    assert.are.equal(200, status)
    helper.assert_payload(big, body)
    assert.are.equal(404, (next_response()))
    assert.are.same({ 200, "1" }, { next_response() })
    assert.is_false((helper.socket_closed(sock, 0.2)))   -- still open
    sock:close()
  end)
end)
