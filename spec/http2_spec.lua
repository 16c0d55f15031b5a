-- spec/http2_spec.lua: HTTP/2 (RFC 9113) for requests, against Python's
-- h2 (spec/peers/h2_client.py), nghttp and h2load (nghttp2-client): ALPN h2 on
-- TLS, prior knowledge on plain TCP, the pipeline (middleware, static
-- files, waiting handlers, bodies, errors), the limits (streams, header
-- fields, Rapid Reset) and the refusal of a port without HTTP/2.
local helper = require "helper"

local dir

local function h2(where, ...)
  local out, status = helper.run_peer("h2_client.py", { where, ... })
  assert.are.equal(0, status, out)
  return out
end

local function nghttp(url, file)
  local cmd = ("env -u LD_PRELOAD timeout 20 nghttp %s > %s 2>/dev/null")
    :format(helper.shell_quote(url), helper.shell_quote(file))
  return os.execute(cmd)
end

-- h2load (nghttp2-client) against url: its "requests:" and "status
-- codes:" lines, and the bytes of data it counted.
local function h2load(url, ...)
  local cmd = ("env -u LD_PRELOAD timeout 60 h2load %s %s 2>&1")
    :format(table.concat({ ... }, " "), helper.shell_quote(url))
  local pipe = io.popen(cmd)
  local out = pipe:read("a")
  pipe:close()
  return (out:match("\n(requests: [^\n]*)") or out) .. "\n"
    .. (out:match("\n(status codes: [^\n]*)") or "") .. "\n"
    .. (out:match("%((%d+)%) data") or "no data")
end

-- An HTTP/1.1 GET on a raw socket: the status line.
local function http11(port, path)
  local sock = helper.connect(port)
  sock:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n"
            .. "Connection: close\r\n\r\n")
  local line = sock:receive("*l")
  sock:close()
  return line
end

describe("HTTP/2", function()
  local tls_server, plain_server, tls_port

  setup(function()
    local c, k
    dir, c, k = helper.temp_cert("h2")
    local f = assert(io.open(dir .. "/a.txt", "w"))
    f:write("static file content\n")
    f:close()
    f = assert(io.open(dir .. "/big.bin", "wb"))
    f:write(helper.binary_of_size(300000))
    f:close()
    -- the defaults: HTTP/2 on the TLS port, not on the plain one
    tls_server = helper.start_server("spec/apps/http2.lua",
      { CERT = c, KEY = k, STATIC_DIR = dir })
    tls_port = helper.wait_until(function()
      return tonumber(tls_server:log():match("tls port (%d+)"))
    end)
    assert(tls_port, tls_server:log())
    plain_server = helper.start_server("spec/apps/http2.lua",
      { HTTP2 = "on", STATIC_DIR = dir, MAX_HEADERS = 20,
        MAX_HEADER_SIZE = 2048 })
  end)

  teardown(function()
    if tls_server then helper.stop_and_check(tls_server) end
    if plain_server then helper.stop_and_check(plain_server) end
    os.execute(("rm -rf %q"):format(dir))
  end)

  describe("on TLS, negotiated by ALPN", function()
    it("answers a GET through the middleware, req.version \"2\"", function()
      local out = h2("tls:" .. tls_port, "get", "/hello")
      assert.are.equal("200\ncontent-length: 19\n"
        .. "content-type: text/plain\nx-middleware: yes\nx-version: 2\n",
        out:match("^(.-)body"))
      assert.truthy(out:find("hello example.test\n", 1, true))
    end)

    it("chooses http/1.1 for a client that offers only that", function()
      local pipe = io.popen(("echo | timeout 10 openssl s_client -connect "
        .. "127.0.0.1:%d -alpn http/1.1 2>&1"):format(tls_port))
      local out = pipe:read("a")
      pipe:close()
      assert.truthy(out:find("ALPN protocol: http/1.1", 1, true), out)
    end)

    it("serves a static file to nghttp", function()
      local file = dir .. "/got.bin"
      assert.is_true(nghttp(("https://127.0.0.1:%d/big.bin"):format(
        tls_port), file))
      helper.assert_payload(helper.read_file(dir .. "/big.bin"),
                            helper.read_file(file), "the file")
    end)
  end)

  it("serves static files to h2load: many streams on a few connections, "
     .. "every request whole", function()
    local ok = "requests: %d total, %d started, %d done, %d succeeded, "
      .. "0 failed, 0 errored, 0 timeout\n"
      .. "status codes: %d 2xx, 0 3xx, 0 4xx, 0 5xx\n%d"
    local function expect(n, size)
      return ok:format(n, n, n, n, n, n * size)
    end
    -- 4 connections, 16 streams at once each
    assert.are.equal(expect(2000, 20), h2load(("https://127.0.0.1:%d/a.txt")
      :format(tls_port), "-n 2000 -c 4 -m 16"))
    -- answers larger than the windows, 10 at once on each connection
    assert.are.equal(expect(40, 300000),
      h2load(("https://127.0.0.1:%d/big.bin"):format(tls_port),
             "-n 40 -c 2 -m 10"))
    assert.are.equal(expect(2000, 20), h2load(("http://127.0.0.1:%d/a.txt")
      :format(plain_server.port), "-n 2000 -c 4 -m 16"))
  end)

  describe("on plain TCP", function()
    it("is off by default: the preface gets GOAWAY HTTP_1_1_REQUIRED",
       function()
      assert.are.equal("settings 0\ngoaway 13\n",
                       h2(tostring(tls_server.port), "preface"))
      assert.are.equal("HTTP/1.1 200 OK", http11(tls_server.port, "/hello"))
      assert.truthy(tls_server:log():find("HTTP/2 preface on a port without "
        .. "HTTP/2: GOAWAY HTTP_1_1_REQUIRED", 1, true))
    end)

    it("with http2 = true, speaks it with prior knowledge", function()
      local out = h2(tostring(plain_server.port), "get", "/hello")
      assert.truthy(out:find("^200\n"), out)
      assert.truthy(out:find("x-version: 2\n", 1, true), out)
      -- and HTTP/1.1 beside it
      assert.are.equal("HTTP/1.1 200 OK", http11(plain_server.port, "/hello"))
    end)

    it("gives the request its fields: Host from :authority, cookies joined",
       function()
      local out = h2(tostring(plain_server.port), "get", "/headers",
                     "cookie=a=1", "cookie=b=2", "x-one=1")
      assert.truthy(out:find("\ncookie=a=1; b=2\n", 1, true), out)
      assert.truthy(out:find("\nhost=example.test\n", 1, true), out)
      assert.truthy(out:find("\nx-one=1\n", 1, true), out)
    end)

    it("answers static files, HEAD, 204, 404 and a failing handler",
       function()
      local file = dir .. "/got.txt"
      assert.is_true(nghttp(("http://127.0.0.1:%d/a.txt"):format(
        plain_server.port), file))
      assert.are.equal("static file content\n", helper.read_file(file))
      assert.truthy(h2(tostring(plain_server.port), "get", "/nocontent")
        :find("^204\n"))
      assert.truthy(h2(tostring(plain_server.port), "get", "/nowhere")
        :find("^404\n"))
      assert.truthy(h2(tostring(plain_server.port), "get", "/fail")
        :find("^500\n"))
      assert.truthy(plain_server:log():find("error in request handler", 1,
                                            true))
    end)

    it("sends a 1 MiB answer within the flow-control windows", function()
      local out = h2(tostring(plain_server.port), "get", "/big")
      local len = out:match("\nbody (%d+) ")
      assert.are.equal("1048576", len)
    end)

    it("reads a request body for req:body(), within max_body_size",
       function()
      assert.are.equal("200 3000\n",
                       h2(tostring(plain_server.port), "post", "/echo", 3000))
      assert.truthy(h2(tostring(plain_server.port), "post", "/echo", 5000)
        :find("^413 "))
    end)

    it("answers 413 to a content-length over max_body_size before any of "
       .. "the body comes, as over HTTP/1.1", function()
      assert.truthy(h2(tostring(plain_server.port), "open", "/echo",
                       "content-length=5000"):find("^413\n"))
      assert.truthy(h2(tostring(plain_server.port), "open", "/echo",
        "content-length=99999999999999"):find("^413\n"))
    end)

    it("answers before a body ends, then asks the client to stop sending "
       .. "it: RST_STREAM NO_ERROR after the whole answer", function()
      local port = tostring(plain_server.port)
      -- past max_body_size: 413, then the reset; the connection goes on,
      -- its window not spent on the bytes refused, nor on DATA that was
      -- in flight when the reset came (7 MiB, past the window)
      assert.are.equal("413 46 data end reset 0\nget 200\npost 200 3000\n",
                       h2(port, "early", "/echo", 5000))
      -- a handler that answers without reading the body
      assert.are.equal("200 19 data end reset 0\nget 200\npost 200 3000\n",
                       h2(port, "early", "/hello", 1000))
    end)

    it("streams a body to a handler that reads slowly: flow control holds "
       .. "the client, the other streams go on", function()
      local server = helper.start_server("spec/apps/http2.lua",
        { HTTP2 = "on", MAX_BODY_SIZE = 8 << 20 })
      finally(function() helper.stop_and_check(server) end)
      -- the handler reads 1 KiB and waits: the client may send no more
      -- than the stream's window (64 KiB, what an HTTP/1.1 body holds
      -- unread), a GET on the same connection is answered meanwhile, and
      -- once the handler reads, the 4 MiB arrive whole
      assert.are.equal("held 65536\nother 200\n200 read 4194304\n",
                       h2(tostring(server.port), "held", 4 << 20))
    end)

    it("counts the bytes a stream holds against max_incomplete_bytes",
       function()
      local server = helper.start_server("spec/apps/http2.lua",
        { HTTP2 = "on", MAX_BODY_SIZE = 1 << 20,
          MAX_INCOMPLETE_BYTES = 40000 })
      finally(function() helper.stop_and_check(server) end)
      -- req:body() holds the whole body: past the bound, 503
      assert.are.equal("503 68\n",
                       h2(tostring(server.port), "post", "/echo", 60000))
      -- and the handler reading it learns why
      assert.are.equal("503 68\n", h2(tostring(server.port), "post",
                                      "/echo", 60000, "started"))
      assert.truthy(helper.wait_until(function()
        return server:log():find("no body: the server holds too many "
                                 .. "incomplete bytes EBUSY", 1, true)
      end), server:log())
      -- what a stream held is given back: under the bound, again and
      -- again
      for _ = 1, 3 do
        assert.are.equal("200 30000\n",
                         h2(tostring(server.port), "post", "/echo", 30000))
      end
    end)

    it("answers 408 to a body that stops arriving, its reader told why",
       function()
      local server = helper.start_server("spec/apps/http2.lua",
        { HTTP2 = "on", BODY_TIMEOUT = 0.3 })
      finally(function() helper.stop_and_check(server) end)
      assert.are.equal("408\n", h2(tostring(server.port), "stall", "/echo",
                                   100))
      assert.truthy(helper.wait_until(function()
        return server:log():find("no body: timeout ETIMEDOUT", 1, true)
      end), server:log())
    end)

    it("refuses CONNECT (no extended CONNECT yet)", function()
      assert.are.equal("501\n", h2(tostring(plain_server.port), "connect"))
    end)
  end)

  describe("limits", function()
    it("answers 100 concurrent streams that wait in the app", function()
      assert.are.equal("200 100\n",
                       h2(tostring(plain_server.port), "many", "/later", 100))
    end)

    it("refuses streams past max_concurrent_streams", function()
      assert.are.equal("200 100\nreset 7 50\n",
                       h2(tostring(plain_server.port), "many", "/later", 150))
    end)

    it("answers 431 past max_headers and max_header_size", function()
      local fields = {}
      for i = 1, 25 do fields[i] = "x-f" .. i .. "=1" end
      assert.truthy(h2(tostring(plain_server.port), "get", "/hello",
                       table.unpack(fields)):find("^431\n"))
      assert.truthy(h2(tostring(plain_server.port), "get", "/hello",
                       "x-big=" .. ("a"):rep(3000)):find("^431\n"))
      -- far past them, the stream is reset (an HPACK bomb decodes no
      -- further)
      assert.are.equal("reset 2", (h2(tostring(plain_server.port), "get",
        "/hello", "x-big=" .. ("a"):rep(20000)):match("^[^\n]*")))
    end)

    it("holds a client's next requests while its answers unsent pass "
       .. "max_backpressure, then answers them as it reads", function()
      local before = tonumber(h2(tostring(plain_server.port), "get",
                                 "/bigs"):match("\nbigs (%d+)"))
      -- 1 MiB answers, max_backpressure 1 MiB: the first two are
      -- answered, the 18 others wait, not 20 MiB held at once
      local out = h2(tostring(plain_server.port), "unread", "/big", 20,
                     "/bigs")
      assert.are.equal("bigs " .. (before + 2),
                       out:match("\n(bigs %d+)\n"), out)
      assert.truthy(out:find("\n200 20\n$"), out)
    end)

    it("ends a Rapid Reset flood with GOAWAY ENHANCE_YOUR_CALM", function()
      assert.are.equal("goaway 11\n",
                       h2(tostring(plain_server.port), "flood", 2000))
      assert.truthy(plain_server:log():find("GOAWAY ENHANCE_YOUR_CALM", 1,
                                            true))
      -- and serves the next connection
      assert.truthy(h2(tostring(plain_server.port), "get", "/hello")
        :find("^200\n"))
    end)
  end)

  it("checks the listen option", function()
    local moonsocket = require "moonsocket"
    local ok, err = pcall(moonsocket.app {}.listen, moonsocket.app {},
                          { port = 0, http2 = "yes" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("option 'http2' must be a boolean", 1,
                                     true), err)
  end)
end)

describe("an HTTP/2 peer that stalls", function()
  local server = helper.with_server("spec/apps/http2.lua",
    { HTTP2 = "on", SEND_WINDOW_TIMEOUT = 1, HANDSHAKE_TIMEOUT = 1 })

  -- a frame: length, type, flags, stream, payload (RFC 9113 4.1)
  local function frame(kind, flags, stream, payload)
    return string.pack(">I3BBI4", #payload, kind, flags, stream) .. payload
  end

  local PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" .. frame(4, 0, 0, "")

  -- Reads until the server ends the connection: true, or false and why.
  local function ends(sock)
    sock:settimeout(helper.scaled(5))
    local _, err, partial
    repeat
      _, err, partial = sock:receive(65536)
    until err ~= nil and (err ~= "timeout" or partial == "")
    return err == "closed" or err == "connection reset by peer", err
  end

  it("is closed when a request head does not end within "
     .. "handshake_timeout, as over HTTP/1.1", function()
    local sock = assert(helper.connect(server.port))
    -- HEADERS without END_HEADERS: a CONTINUATION must follow, and
    -- nothing else may (section 6.10); none comes
    sock:send(PREFACE .. frame(1, 1, 1, "\x82\x86"))
    assert.is_true(ends(sock))
    sock:close()
    assert.truthy(server:log():find("HTTP/2: a request head did not "
      .. "arrive within handshake_timeout", 1, true), server:log())
  end)

  it("is closed after send_window_timeout with its windows wide open",
     function()
    local sock = assert(helper.connect(server.port))
    -- SETTINGS_INITIAL_WINDOW_SIZE 2^31 - 1, the connection's as large:
    -- only the TCP connection, which it does not read, holds our bytes
    local out = { PREFACE,
      frame(4, 0, 0, string.pack(">I2I4", 4, 0x7fffffff)),
      frame(8, 0, 0, string.pack(">I4", 0x7fffffff - 65535)) }
    -- GET /big (1 MiB): :method GET, :scheme http, :path and
    -- :authority literal (RFC 7541 6.2.2); END_STREAM, END_HEADERS
    local head = "\x82\x86\x04\x04/big\x01\x01x"
    for i = 1, 20 do out[#out + 1] = frame(1, 5, 2 * i - 1, head) end
    sock:send(table.concat(out))
    assert.truthy(helper.wait_until(function()
      return server:log():find("read nothing", 1, true)
    end, helper.scaled(20)), server:log())
    -- what the kernel holds of ours, then the end (a reset: the
    -- connection was cut, not drained)
    assert.is_true(ends(sock))
    sock:close()
  end)
end)
