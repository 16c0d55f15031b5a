-- spec/http_client_spec.lua: moonsocket.http, an HTTP/1.1 client that
-- waits without blocking the loop, against Python's http.server and
-- nginx.
local helper = require "helper"
local socket = require "socket"

local url_encode = function(s)
  return (s:gsub("[^%w%-._~]", function(c)
    return ("%%%02X"):format(c:byte())
  end))
end

-- What the app's /fetch on server reported for url with the query's
-- options.
local function fetch_from(server, url, query)
  local target = "/fetch?url=" .. url_encode(url)
  for name, value in pairs(query or {}) do
    target = target .. "&" .. name .. "=" .. url_encode(tostring(value))
  end
  local status, _, body, sock = helper.http(server.port, "GET " .. target
    .. " HTTP/1.1\r\nHost: x\r\n\r\n")
  if sock then sock:close() end
  assert.are.equal(200, status, body)
  return body
end

describe("moonsocket.http", function()
  local server = helper.with_server("spec/apps/http_client.lua")
  local upstream

  setup(function()
    upstream = helper.spawn({ "env", "-u", "LD_PRELOAD", "/usr/bin/python3",
                              "spec/peers/http_upstream.py" })
  end)
  teardown(function()
    if upstream then upstream:stop() end
  end)

  local function fetch(url, query) return fetch_from(server, url, query) end

  local function up(path)
    return ("http://127.0.0.1:%d%s"):format(upstream.port, path)
  end

  it("gets a body with Content-Length, the headers lowercased", function()
    local report = fetch(up("/hello"))
    assert.matches("^200 [%w,-]*content%-length,content%-type", report)
    assert.matches("\nhello\n$", report)
  end)

  it("reads a chunked body, dropping extensions and trailer", function()
    assert.matches("^200 [^\n]*\nfirst second third\n$",
                   fetch(up("/chunked")))
  end)

  it("reads a body that ends at the connection's close", function()
    local report = fetch(up("/close"))
    assert.are.equal(("until the end\n"):rep(1000),
                     report:match("^200 [^\n]*\n(.*)$"))
  end)

  it("sends a method, a body and headers", function()
    assert.matches("\nPOST payload ua=moonsocket/[%d.]+ x=yes\n$",
      fetch(up("/echo"), { method = "POST", body = "payload",
                           header = "yes" }))
    assert.matches("\nPUT  ua=", fetch(up("/echo"), { method = "PUT" }))
  end)

  it("keeps connections alive and reuses them", function()
    local function conns()
      return tonumber(fetch(up("/conns")):match("\n(%d+)\n$"))
    end
    local before = conns()
    for _ = 1, 5 do assert.matches("^200", fetch(up("/hello"))) end
    assert.are.equal(before, conns())
    for _ = 1, 3 do
      assert.matches("^200", fetch(up("/hello"), { keepalive = "off" }))
    end
    assert.are.equal(before + 3, conns())
  end)

  it("does not reuse a connection the server closed", function()
    assert.matches("\ndropping\n$", fetch(up("/drop-keepalive")))
    socket.sleep(0.1)
    assert.matches("\nhello\n$", fetch(up("/hello")))
  end)

  it("follows redirects only when asked", function()
    local to = "/redirect?to=" .. url_encode("/hello")
    assert.matches("^302 ", fetch(up(to)))
    assert.matches("\nhello\n$", fetch(up(to), { redirects = 1 }))
    local after_post = "/redirect?code=303&to=" .. url_encode("/echo")
    assert.matches("\nGET  ua=", fetch(up(after_post),
      { method = "POST", body = "x", redirects = 1 }))
  end)

  it("bounds the response body", function()
    assert.are.equal("ERR failed to read the response body: response body "
      .. "too large\n", fetch(up("/big?n=200000"), { max = 100000 }))
    assert.matches("^200", fetch(up("/big?n=100000"), { max = 100000 }))
  end)

  it("times out on a slow upstream, and serves others meanwhile",
     function()
    local sock = assert(helper.connect(server.port))
    local t0 = socket.gettime()
    sock:send("GET /fetch?url=" .. url_encode(up("/slow?s=3"))
              .. "&timeout=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local worst = 0
    for i = 1, 20 do
      local t = socket.gettime()
      ws:send_text("ping " .. i)
      local _, data = ws:recv_message(2)
      assert.are.equal("ping " .. i, data)
      worst = math.max(worst, socket.gettime() - t)
      socket.sleep(0.02)
    end
    ws:close()
    local _, _, body = helper.read_response(sock)
    sock:close()
    local took = socket.gettime() - t0
    assert.are.equal("ERR failed to read the response: timeout\n", body)
    assert.is_true(took > 0.9 and took < helper.scaled(2.5), took)
    assert.is_true(worst < helper.scaled(0.05), worst)
  end)

  it("runs 100 requests of a second each in parallel in about a second",
     function()
    local status, _, body, sock = helper.http(server.port,
      "GET /parallel?n=100&url=" .. url_encode(up("/slow?s=1"))
      .. " HTTP/1.1\r\nHost: x\r\n\r\n")
    sock:close()
    assert.are.equal(200, status)
    local ok, took = body:match("^(%d+) ok in ([%d.]+) s")
    assert.are.equal("100", ok, body)
    assert.is_true(tonumber(took) < helper.scaled(2.5), body)
  end)

  it("fails clearly: refused, a bad URL, misuse", function()
    local closed = helper.free_port()
    assert.are.equal(("ERR failed to connect to 127.0.0.1:%d: connection "
      .. "refused\n"):format(closed),
      fetch(("http://127.0.0.1:%d/"):format(closed)))
    assert.are.equal("ERR invalid URL 'ftp://x/': an http:// or https:// "
      .. "URL expected\n", fetch("ftp://x/"))
    local _, _, body, sock = helper.http(server.port, "GET /misuse?url=x "
      .. "HTTP/1.1\r\nHost: x\r\n\r\n")
    sock:close()
    assert.matches("unknown option 'nope'", body)
    assert.matches("bad argument #1 to 'request' %(string expected, got "
                   .. "number%)", body)
    assert.matches("bad option 'headers' %(the client writes 'Host'%)", body)
    assert.matches("bad option 'headers' %(invalid field 'X%-A'%)", body)
  end)
end)

describe("moonsocket.http against nginx", function()
  local missing = helper.nginx_missing()
  if missing then
    it("needs nginx", function() pending(missing) end)
    return
  end
  local server = helper.with_server("spec/apps/http_client.lua")
  local upstream, nginx, port, tls_port, certs, dir

  setup(function()
    upstream = helper.spawn({ "env", "-u", "LD_PRELOAD", "/usr/bin/python3",
                              "spec/peers/http_upstream.py" })
    port, tls_port = helper.free_port(), helper.free_port()
    certs = assert(io.popen("pwd")):read("l") .. "/"
            .. helper.example_certs()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local f = assert(io.open(dir .. "/static.txt", "w"))
    f:write(("static file\n"):rep(100))
    f:close()
    local locations = ([[
    location /static.txt { root %s; }
    location /conn { return 200 "$connection $connection_requests\n"; }
    location /up/ {
      proxy_pass http://127.0.0.1:%d/;
      proxy_http_version 1.1;
      proxy_buffering off;
    }]]):format(dir, upstream.port)
    nginx = helper.start_nginx(([[
  server {
    listen 127.0.0.1:%d;
    keepalive_requests 1000;
%s
  }
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %scert.pem;
    ssl_certificate_key %skey.pem;
%s
  }]]):format(port, locations, tls_port, certs, certs, locations))
    assert(helper.wait_until(function()
      local s = socket.connect("127.0.0.1", port)
      if s then s:close() end
      return s ~= nil
    end))
  end)

  teardown(function()
    if nginx then helper.stop_nginx(nginx) end
    if upstream then upstream:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local function fetch(url, query) return fetch_from(server, url, query) end

  local function at(path, tls)
    return ("%s://127.0.0.1:%d%s"):format(tls and "https" or "http",
                                          tls and tls_port or port, path)
  end

  it("gets a static file", function()
    assert.are.equal(("static file\n"):rep(100),
                     fetch(at("/static.txt")):match("^200 [^\n]*\n(.*)$"))
  end)

  it("reads a chunked response nginx proxies", function()
    local report = fetch(at("/up/chunked"))
    assert.matches("^200 [^\n]*transfer%-encoding", report)
    assert.matches("\nfirst second third\n$", report)
  end)

  it("reuses one connection for many requests", function()
    local first, n0 = fetch(at("/conn")):match("\n(%d+) (%d+)\n$")
    for i = 1, 4 do
      local conn, n = fetch(at("/conn")):match("\n(%d+) (%d+)\n$")
      assert.are.equal(first, conn)
      assert.are.equal(tonumber(n0) + i, tonumber(n))
    end
  end)

  it("times out on a slow upstream behind nginx", function()
    assert.are.equal("ERR failed to read the response: timeout\n",
                     fetch(at("/up/slow?s=3"), { timeout = 0.5 }))
  end)

  it("speaks https with verification against the CA given", function()
    assert.matches("\nhello\n$", fetch(at("/up/hello", true),
      { cafile = certs .. "cert.pem", server_name = "localhost" }))
  end)

  it("refuses a certificate it cannot verify", function()
    assert.matches("^ERR TLS handshake with 127%.0%.0%.1:%d+ failed: "
      .. ".*certificate verify failed", fetch(at("/up/hello", true)))
  end)
end)
