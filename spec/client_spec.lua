-- spec/client_spec.lua: moonsocket.connect, run by spec/apps/client.lua
-- under the moonsocket binary, against our servers, raw peers and
-- python-websockets.

local helper = require "helper"

local CLIENT = "spec/apps/client.lua"
local CERTS = helper.example_certs()

local function run(scenario, url, env)
  return helper.run_app(CLIENT, { scenario, url }, env)
end

-- The "ok" lines of an echo scenario: every size, text and binary.
local function assert_echoes(output, max)
  for _, n in ipairs{ 0, 125, 126, 65536, 16 * 1024 * 1024 } do
    if n > (max or math.huge) then break end
    for _, kind in ipairs{ "text", "binary" } do
      assert.truthy(output:find("\nok\t" .. n .. "\t" .. kind .. "\n", 1,
        true), "no echo of " .. n .. " " .. kind .. " in:\n" .. output)
    end
  end
  assert.falsy(output:find("MISMATCH", 1, true), output)
end

describe("client against moonsocket", function()
  local server = helper.with_server("spec/apps/echo.lua")

  local url = function() return "ws://127.0.0.1:" .. server.port .. "/ws" end

  it("echoes 0 B to 16 MiB, text and binary, and closes 1000 (callbacks)",
    function()
      local output, status = run("echo", url())
      assert.are.equal(0, status, output)
      assert.truthy(output:find("^state\tconnecting\nopen\tnil\tfalse\n"),
        output)
      assert_echoes(output)
      assert.truthy(output:find("\nclose\t1000\tdone\tlocal\n$"), output)
    end)

  it("echoes in the coroutine form; receive after close tells why",
    function()
      local output, status = run("co_echo", url())
      assert.are.equal(0, status, output)
      assert_echoes(output)
      assert.truthy(output:find("\nsend\tsent\n", 1, true), output)
      assert.truthy(output:find(
        "\nreceive\tnil\tclosed\t4000\tco done\tlocal\t0\n$"), output)
    end)

  it("pings and gets the pong", function()
    local output, status = run("ping", url())
    assert.are.equal(0, status, output)
    assert.are.equal("state\tconnecting\nping\tsent\npong\tabc\n"
      .. "close\t1001\t\tlocal\n", output)
  end)

  it("aborts without a close frame: 1006, local, then ECLOSED", function()
    local output, status = run("abort", url())
    assert.are.equal(0, status, output)
    assert.are.equal("state\tconnecting\nsend\tsent\nclose\t1006\t\tlocal"
      .. "\nabort\ttrue\tclosed\nagain\tnil\tthe connection is closing or "
      .. "closed\tECLOSED\n", output)
  end)

  it("reports back-pressure: queued, then drain", function()
    -- the server reads nothing until the client has read 16 MiB, which
    -- it does only after its sends were queued
    local output, status = run("backpressure",
      "ws://127.0.0.1:" .. server.port .. "/stall")
    assert.are.equal(0, status, output)
    assert.are.equal("state\tconnecting\nsend\tqueued\ttrue\ndrain\t0\n"
      .. "close\t1000\t\tlocal\n", output)
  end)

  it("fails a refused connect with 1006 in both forms", function()
    local url2 = "ws://127.0.0.1:" .. helper.free_port() .. "/ws"
    local output = run("open", url2)
    assert.are.equal("state\tconnecting\nclose\t1006\t"
      .. "connect: Connection refused\terror\n", output)
    output = run("co_echo", url2)
    assert.are.equal("state\tconnecting\nreceive\tnil\tclosed\t1006\t\t"
      .. "error\t0\n", output)
  end)
end)

describe("client subprotocols", function()
  local server = helper.with_server("spec/apps/policy.lua")

  it("gets the subprotocol the server chose (our first offer)", function()
    local output, status = run("protocol",
      "ws://127.0.0.1:" .. server.port .. "/chat")
    assert.are.equal(0, status, output)
    assert.truthy(output:find("\nopen\tchat.v1\n", 1, true), output)
    assert.truthy(output:find("\nclose\t1000\t\tlocal\n", 1, true), output)
  end)
end)

describe("client permessage-deflate", function()
  local server = helper.with_server("spec/apps/deflate.lua")

  for _, path in ipairs{ "/ws", "/no-takeover", "/small-window" } do
    it("negotiates and echoes compressed messages on " .. path, function()
      local output, status = run("deflate",
        "ws://127.0.0.1:" .. server.port .. path)
      assert.are.equal(0, status, output)
      assert.truthy(output:find("\nopen\tnil\ttrue\n", 1, true), output)
      assert_echoes(output, 65536)
      assert.truthy(output:find("\nclose\t1000\tdone\tlocal\n$"), output)
    end)
  end

  it("goes on uncompressed where the server declines", function()
    local output = run("deflate", "ws://127.0.0.1:" .. server.port .. "/off")
    assert.truthy(output:find("\nopen\tnil\tfalse\n", 1, true), output)
    assert_echoes(output, 65536)
  end)
end)

describe("client over TLS", function()
  local server = helper.with_server("spec/apps/tls.lua",
    { CERT = CERTS .. "cert.pem", KEY = CERTS .. "key.pem" })

  it("verifies the server against a CA file, by name and address",
    function()
      for _, host in ipairs{ "localhost", "127.0.0.1" } do
        local output, status = run("echo",
          "wss://" .. host .. ":" .. server.port .. "/ws",
          { CAFILE = CERTS .. "cert.pem" })
        assert.are.equal(0, status, output)
        assert_echoes(output)
        assert.truthy(output:find("\nclose\t1000\tdone\tlocal\n$"), output)
      end
    end)

  it("refuses an untrusted certificate, or takes it with verify=false",
    function()
      local url = "wss://127.0.0.1:" .. server.port .. "/ws"
      local output = run("open", url)
      assert.are.equal("state\tconnecting\nclose\t1006\tTLS handshake: "
        .. "self-signed certificate\terror\n", output)
      output = run("co_echo", url, { NOVERIFY = "1" })
      assert_echoes(output)
    end)
end)

describe("client against raw servers", function()
  local function peer(mode)
    return helper.spawn({ "env", "-u", "LD_PRELOAD", "/usr/bin/python3",
      "spec/peers/raw_server.py", mode }, nil)
  end

  it("masks every frame with a fresh key", function()
    local p = peer("check")
    local output, status = run("lines", "ws://127.0.0.1:" .. p.port .. "/")
    p:stop()
    assert.are.equal(0, status, output)
    assert.truthy(p:log():find("summary: frames=22 masked=22 "
      .. "distinct_keys=22", 1, true), p:log())
  end)

  it("fails a masked frame from the server with 1002", function()
    local p = peer("masked")
    local output = run("open", "ws://127.0.0.1:" .. p.port .. "/")
    p:stop()
    assert.truthy(output:find("\nclose\t1002\tserver frame masked\terror\n",
      1, true), output)
    assert.truthy(p:log():find("client closed 1002", 1, true), p:log())
  end)

  it("times out a server that never answers", function()
    local p = peer("silent")
    local output = run("open", "ws://127.0.0.1:" .. p.port .. "/",
      { HANDSHAKE_TIMEOUT = "0.3" })
    p:stop()
    assert.are.equal("state\tconnecting\nclose\t1006\thandshake timeout\t"
      .. "timeout\n", output)
  end)
end)

describe("client against python-websockets", function()
  local server
  setup(function()
    server = helper.spawn({ "env", "-u", "LD_PRELOAD", "/usr/bin/python3",
      "spec/peers/echo_server.py" }, { PORT = 0 })
  end)
  teardown(function() server:stop() end)

  it("echoes 0 B to 16 MiB and closes 1000", function()
    local output, status = run("echo",
      "ws://127.0.0.1:" .. server.port .. "/ws")
    assert.are.equal(0, status, output)
    assert_echoes(output)
    assert.truthy(output:find("\nclose\t1000\tdone\tlocal\n$"), output)
  end)
end)

describe("examples/client", function()
  local server = helper.with_server("spec/apps/echo.lua")

  it("sends stdin lines, prints the echoes and closes 1000", function()
    local input = os.tmpname()
    local f = assert(io.open(input, "w"))
    f:write("hello\nwörld\n\nlast line")
    f:close()
    local url = "ws://127.0.0.1:" .. server.port .. "/ws"
    local pipe = assert(io.popen("env LUA_PATH='" .. helper.LUA_PATH .. "' "
      .. (os.getenv("MOONSOCKET_BIN") or "build/moonsocket")
      .. " examples/client/app.lua " .. url .. " <" .. input
      .. " 2>/dev/null", "r"))
    local output = pipe:read("a")
    local ok = pipe:close()
    os.remove(input)
    assert.is_true(ok)
    assert.are.equal("hello\nwörld\n\nlast line\n", output)
  end)

  it("runs from the tree with README.md's command", function()
    -- the indented command lines, continuations joined
    local readme = helper.read_file("README.md"):gsub("\\\n%s*", "")
    local command
    for line in readme:gmatch("\n    ([^\n]*)") do
      if line:find("build/moonsocket examples/client/app.lua", 1, true) then
        command = line
      end
    end
    assert.is_truthy(command, "README.md gives no in-tree command for "
      .. "examples/client")
    command = command:gsub("build/moonsocket", os.getenv("MOONSOCKET_BIN")
            or "build/moonsocket", 1)
      :gsub("127%.0%.0%.1:5000", "127.0.0.1:" .. server.port, 1)
    local errors = os.tmpname()
    local pipe = assert(io.popen("echo hi | " .. command .. " 2>"
      .. helper.shell_quote(errors), "r"))
    local output = pipe:read("a")
    local ok = pipe:close()
    local stderr = helper.read_file(errors)
    os.remove(errors)
    assert.is_true(ok, stderr)
    assert.are.equal("hi\n", output)
  end)
end)
