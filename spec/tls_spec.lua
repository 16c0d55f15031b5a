-- spec/tls_spec.lua: https and wss with OpenSSL in the core, against
-- Python's ssl and websockets and `openssl s_client`: echo up to 16 MiB,
-- 500 concurrent connections, versions, ALPN, SNI, SIGHUP reload, and
-- bad input (plain HTTP, garbage, aborted handshakes, bad certificates).
local helper = require "helper"

local dir

local function cert(cn, days)
  local c, k = dir .. "/" .. cn .. ".pem", dir .. "/" .. cn .. ".key"
  local out, status = helper.run_peer("make_cert.py", { cn, c, k, days })
  assert(status == 0, out)
  return c, k
end

local function s_client(port, args)
  local pipe = io.popen(("echo | timeout 10 openssl s_client -connect "
    .. "127.0.0.1:%d %s 2>&1"):format(port, args))
  local out = pipe:read("a")
  pipe:close()
  return out
end

local function run_app(env)
  local words = { "env", "LUA_PATH='lua/?.lua;lua/?/init.lua;;'" }
  for k, v in pairs(env) do words[#words + 1] = k .. "=" .. v end
  words[#words + 1] = (os.getenv("MOONSOCKET_BIN") or "build/moonsocket")
    .. " spec/apps/tls.lua 2>&1; echo \"exit $?\""
  local pipe = io.popen(table.concat(words, " "))
  local out = pipe:read("a")
  pipe:close()
  return out
end

describe("TLS", function()
setup(function()
  dir = os.tmpname()
  os.remove(dir)
  assert(os.execute(("mkdir -p %q"):format(dir)))
end)

teardown(function()
  os.execute(("rm -rf %q"):format(dir))
end)

describe("a TLS server", function()
  local server, alpha_cert, alpha_key

  setup(function()
    alpha_cert, alpha_key = cert("alpha")
    local beta_cert, beta_key = cert("beta")
    server = helper.start_server("spec/apps/tls.lua", {
      CERT = alpha_cert, KEY = alpha_key, SNI_NAME = "beta.test",
      SNI_CERT = beta_cert, SNI_KEY = beta_key })
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  it("echoes over wss, 0 B to 16 MiB (Python websockets)", function()
    local out, status = helper.run_peer("tls_client.py",
      { server.port, "echo" })
    assert.are.same({ 0, "ok 1000\n" }, { status, out })
  end)

  it("serves 500 concurrent wss connections", function()
    local out, status = helper.run_peer("tls_client.py",
      { server.port, "many", 500 })
    assert.are.same({ 0, "ok 500\n" }, { status, out })
  end)

  it("serves the page over https", function()
    local out = s_client(server.port, "-quiet -ign_eof <<'EOF'\n"
      .. "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nEOF")
    assert.matches("HTTP/1.1 200 OK", out)
  end)

  it("negotiates TLS 1.2 or 1.3 with ALPN h2 or http/1.1, never older",
     function()
    assert.matches("ALPN protocol: h2",
                   s_client(server.port, "-alpn h2,http/1.1"))
    assert.matches("ALPN protocol: http/1.1",
                   s_client(server.port, "-alpn http/1.1"))
    -- TLS 1.2 suites are ECDHE with AEAD only
    assert.matches("New, TLSv1%.2, Cipher is ECDHE%-",
                   s_client(server.port, "-tls1_2"))
    assert.matches("New, TLSv1%.3, Cipher is TLS_",
                   s_client(server.port, "-tls1_3"))
    assert.matches("alert protocol version",
                   s_client(server.port, "-tls1_1"))
    assert.matches("alert handshake failure", s_client(server.port,
      "-tls1_2 -cipher AES128-SHA"))
  end)

  it("picks the certificate by server name (SNI)", function()
    local default = helper.run_peer("tls_client.py",
      { server.port, "subject" })
    local beta = helper.run_peer("tls_client.py",
      { server.port, "subject", "beta.test" })
    assert.are.same({ "CN=alpha\n", "CN=beta\n" }, { default, beta })
  end)

  it("answers plain HTTP on the TLS port with a plain 400", function()
    local status, _, body, sock = helper.http(server.port,
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(400, status)
    assert.matches("this port speaks TLS", body)
    sock:close()
  end)

  it("reads the rest of plain HTTP before it closes (a lingering close)",
     function()
    local sock = assert(helper.connect(server.port))
    -- the 400 is written when the head's first bytes are read: without
    -- a lingering close, the unread rest makes the close a reset, and
    -- so does anything sent after it
    sock:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"
      .. string.rep("x", 262144))
    helper.sleep(0.2)
    local body = "400 Bad Request: this port speaks TLS (https, wss)\n"
    assert.are.equal(("HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n"
      .. "Connection: close\r\nContent-Type: text/plain; charset=utf-8"
      .. "\r\n\r\n%s"):format(#body, body), helper.read_raw_response(sock))
    helper.sleep(0.2)
    assert.are.same({ 4 }, { sock:send("more") })   -- still read
    assert.are.same({ true }, { helper.socket_closed(sock, 3) })  -- EOF
    sock:close()
  end)

  it("closes on garbage and on an aborted handshake, and goes on",
     function()
    local sock = helper.connect(server.port)
    -- random, but no record type (0): random bytes that happen to look
    -- like a record header or an SSLv2 hello wait for the rest instead
    sock:send("\0" .. helper.random_bytes(299))
    assert.is_true((helper.socket_closed(sock, 3, true)))
    sock:close()
    -- the first bytes of a ClientHello, then gone
    sock = helper.connect(server.port)
    sock:send("\22\3\1\2\0\1\0\1\252\3\3")
    sock:close()
    local out, status = helper.run_peer("tls_client.py",
      { server.port, "many", 3 })
    assert.are.same({ 0, "ok 3\n" }, { status, out })
    assert.matches("TLS connection failed", server:log())
  end)

  it("reloads certificates on SIGHUP, keeping open connections",
     function()
    local pipe = io.popen(("env -u LD_PRELOAD /usr/bin/python3 "
      .. "spec/peers/tls_client.py %d hold 1.5"):format(server.port))
    assert.are.equal("ok", pipe:read("l"))          -- open, echoed
    local gamma_cert, gamma_key = cert("gamma")
    assert(os.execute(("cp %q %q && cp %q %q"):format(gamma_cert,
      alpha_cert, gamma_key, alpha_key)))
    server:kill("HUP")
    assert.is_true(helper.wait_until(function()
      return server:log():find("SIGHUP: certificates of", 1, true) ~= nil
    end, 3))
    assert.are.equal("CN=gamma\n", (helper.run_peer("tls_client.py",
      { server.port, "subject" })))
    assert.are.equal("ok", pipe:read("l"))  -- the old one still echoes
    pipe:close()
  end)
end)

describe("TLS at startup", function()
  it("names a missing certificate file", function()
    local out = run_app { CERT = "/nonexistent/cert.pem",
                          KEY = "/nonexistent/key.pem" }
    assert.matches("cannot load certificate chain '/nonexistent/cert.pem'",
                   out)
    assert.matches("exit 1\n$", out)
  end)

  it("refuses an expired certificate", function()
    local c, k = cert("expired", -2)
    local out = run_app { CERT = c, KEY = k }
    assert.matches("certificate '" .. c:gsub("%p", "%%%0") .. "' has expired",
                   out)
  end)

  it("refuses a key that does not match", function()
    local c = cert("one")
    local _, k = cert("two")
    local out = run_app { CERT = c, KEY = k }
    assert.matches("cannot load private key '" .. k:gsub("%p", "%%%0")
      .. "': .*key values mismatch", out)
  end)
end)
end)
