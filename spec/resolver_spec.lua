-- spec/resolver_spec.lua: moonsocket.resolve and moonsocket.resolver
-- against a DNS server of our own (spec/peers/dns_server.py), the cache,
-- the timeout, what needs no DNS at all, misuse, workers, and
-- moonsocket.connect resolving its host on the loop.

local helper = require "helper"

local TEXT = helper.TEXT
local now = require("socket").gettime

-- A DNS server on 127.0.0.1 (spec/peers/dns_server.py) with the
-- arguments; dns.port is its port, dns:log() its queries.
local function start_dns(args)
  local argv = { "-u", "LD_PRELOAD", "/usr/bin/python3",
                 "spec/peers/dns_server.py" }
  for _, arg in ipairs(args) do argv[#argv + 1] = arg end
  return helper.spawn(argv, {}, { ready = "dns on 127.0.0.1:(%d+)\n" })
end

-- The queries the DNS server got for name (A and AAAA each count).
local function queries(dns, name)
  local n = 0
  for line in dns:log():gmatch("[^\n]+") do
    if line:match("^query (%S+) ") == name then n = n + 1 end
  end
  return n
end

-- Runs code as a script with the runner, after locals moonsocket, DNS
-- (dns's "127.0.0.1:PORT") and say (a line of output starting "> ");
-- returns its output and status.
local function script(code, dns)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write("local moonsocket = require 'moonsocket'\n",
          "local DNS = ", string.format("%q", dns and
                                        "127.0.0.1:" .. dns.port or ""),
          "\nlocal function say(...) io.stdout:write('> ', ",
          "table.concat({ ... }, ' '), '\\n') io.stdout:flush() end\n",
          code)
  f:close()
  local output, status = helper.run_app(path)
  os.remove(path)
  return output, status
end

-- The lines of output that start with "> ", without it.
local function said(output)
  local lines = {}
  for line in output:gmatch("[^\n]+") do
    local text = line:match("^> (.*)")
    if text then lines[#lines + 1] = text end
  end
  return lines
end

describe("moonsocket.resolve against a DNS server", function()
  local dns, server

  setup(function()
    dns = start_dns { "--delay", "1", "known.test=192.0.2.1,192.0.2.2",
                      "slow.test=192.0.2.7", "cached.test=192.0.2.8",
                      "six.test=2001:db8::6" }
    server = helper.start_server("spec/apps/resolver.lua",
                                 { DNS = "127.0.0.1:" .. dns.port })
  end)

  teardown(function()
    if dns then dns:stop() end
    helper.stop_and_check(server)
  end)

  local function ask(ws, name)
    assert.is_true(ws:send_text(name))
    local kind, text = ws:recv_message(helper.scaled(10))
    assert.are.equal(TEXT, kind, text)
    return text
  end

  it("gives the addresses of a name the server knows", function()
    local ws = assert(helper.ws_connect(server.port, "/resolve"))
    assert.are.equal("ok 192.0.2.1,192.0.2.2", ask(ws, "known.test"))
    assert.are.equal(2, queries(dns, "known.test"))    -- A and AAAA
    assert.are.equal("ok 2001:db8::6", ask(ws, "six.test"))
    ws:abort()
  end)

  it("serves other sockets while a lookup waits", function()
    local ws = assert(helper.ws_connect(server.port, "/resolve"))
    local echo = assert(helper.ws_connect(server.port, "/echo"))
    local start = now()
    assert.is_true(ws:send_text("slow.test"))
    helper.sleep(0.1)
    for i = 1, 3 do
      local sent = now()
      assert.is_true(echo:send_text("hi " .. i))
      assert.are.same({ TEXT, "hi " .. i }, { echo:recv_message() })
      assert.is_true(now() - sent < helper.scaled(0.2),
                     "the echo waited for the lookup")
    end
    assert.is_true(now() - start < helper.scaled(0.8))
    assert.are.same({ TEXT, "ok 192.0.2.7" },
                    { ws:recv_message(helper.scaled(10)) })
    assert.is_true(now() - start >= 0.9, "answered before the server did")
    ws:abort()
    echo:abort()
  end)

  it("fails an unknown name with a message naming it", function()
    local ws = assert(helper.ws_connect(server.port, "/resolve"))
    assert.are.equal("fail cannot resolve 'nope.test': name not found "
                     .. "ERESOLVE", ask(ws, "nope.test"))
    ws:abort()
  end)

  it("answers from the cache within the TTL, without a query", function()
    local ws = assert(helper.ws_connect(server.port, "/resolve"))
    local start = now()
    assert.are.equal("ok 192.0.2.8", ask(ws, "cached.test"))
    assert.is_true(now() - start >= 0.9)
    assert.are.equal(2, queries(dns, "cached.test"))
    start = now()
    assert.are.equal("ok 192.0.2.8", ask(ws, "cached.test"))
    assert.is_true(now() - start < helper.scaled(0.2), "not from the cache")
    assert.are.equal(2, queries(dns, "cached.test"))
    ws:abort()
  end)
end)

describe("moonsocket.resolve in scripts", function()
  it("times out on a server that never answers", function()
    local dns = start_dns { "--silent" }
    local out, status = script([[
      assert(moonsocket.resolver { servers = { DNS }, timeout = 0.5 })
      moonsocket.spawn(function()
        local start = moonsocket.core.now()
        local addrs, err, code = moonsocket.resolve("quiet.test")
        say(tostring(addrs), err, code)
        local took = moonsocket.core.now() - start
        say(tostring(took >= 0.45 and took < 1.5), took)
      end)
      moonsocket.run()
    ]], dns)
    dns:stop()
    assert.are.equal(0, status, out)
    local lines = said(out)
    assert.are.equal("nil cannot resolve 'quiet.test': timed out ERESOLVE",
                     lines[1])
    assert.matches("^true ", lines[2])
    assert.is_true(queries(dns, "quiet.test") >= 2, dns:log())
  end)

  it("bounds a lookup by the timeout given, and a socket's connect by "
     .. "the socket's timeout", function()
    local dns = start_dns { "--silent" }
    local out, status = script([[
      assert(moonsocket.resolver { servers = { DNS }, timeout = 20 })
      moonsocket.spawn(function()
        local start = moonsocket.core.now()
        local addrs, err, code = moonsocket.resolve("quiet.test", 0.3)
        say(tostring(addrs), err, code)
        local s = moonsocket.socket.tcp()
        s:settimeout(0.3)
        local ok, why = s:connect("quiet.test", 80)
        say(tostring(ok), why)
        local took = moonsocket.core.now() - start
        say(tostring(took >= 0.55 and took < 1.5), took)
        local ok = pcall(moonsocket.resolve, "quiet.test", -1)
        say(tostring(ok))
      end)
      moonsocket.run()
    ]], dns)
    dns:stop()
    assert.are.equal(0, status, out)
    local lines = said(out)
    assert.are.equal("nil cannot resolve 'quiet.test': timed out ERESOLVE",
                     lines[1])
    assert.are.equal("nil cannot resolve 'quiet.test': timed out", lines[2])
    assert.matches("^true ", lines[3])
    assert.are.equal("false", lines[4])
  end)

  it("resolves localhost and addresses without asking a server",
     function()
    local dns = start_dns { "--silent" }
    local out, status = script([[
      assert(moonsocket.resolver { servers = { DNS }, timeout = 5 })
      moonsocket.spawn(function()
        local start = moonsocket.core.now()
        for _, name in ipairs { "localhost", "127.0.0.1", "::1",
                                "2001:DB8:0::1", "192.0.2.200" } do
          say(name, table.concat(assert(moonsocket.resolve(name)), ","))
        end
        say(tostring(moonsocket.core.now() - start < 0.5))
      end)
      moonsocket.run()
    ]], dns)
    dns:stop()
    assert.are.equal(0, status, out)
    assert.are.same({ "localhost 127.0.0.1", "127.0.0.1 127.0.0.1",
                      "::1 ::1", "2001:DB8:0::1 2001:db8::1",
                      "192.0.2.200 192.0.2.200", "true" }, said(out))
    assert.is_falsy(dns:log():find("query", 1, true), dns:log())
  end)

  it("keeps `cache` answers at most, and none with cache = false",
     function()
    local dns = start_dns { "--delay", "0", "a.test=192.0.2.1",
                            "b.test=192.0.2.2", "c.test=192.0.2.3" }
    local out, status = script([[
      moonsocket.spawn(function()
        assert(moonsocket.resolver { servers = { DNS }, cache = 1 })
        for _, name in ipairs { "a.test", "b.test", "a.test", "a.test" } do
          say(name, table.concat(assert(moonsocket.resolve(name)), ","))
        end
        assert(moonsocket.resolver { servers = { DNS }, cache = false })
        for _ = 1, 2 do
          say("c.test", table.concat(assert(moonsocket.resolve("c.test"))))
        end
      end)
      moonsocket.run()
    ]], dns)
    dns:stop()
    assert.are.equal(0, status, out)
    assert.are.same({ "a.test 192.0.2.1", "b.test 192.0.2.2",
                      "a.test 192.0.2.1", "a.test 192.0.2.1",
                      "c.test 192.0.2.3", "c.test 192.0.2.3" }, said(out))
    -- b pushed a out of the one entry; a's second answer was kept
    assert.are.equal(4, queries(dns, "a.test"))
    assert.are.equal(2, queries(dns, "b.test"))
    assert.are.equal(4, queries(dns, "c.test"))
  end)

  it("a cancelled thread gives up its lookup and the loop ends", function()
    local dns = start_dns { "--silent" }
    local start = now()
    local out, status = script([[
      assert(moonsocket.resolver { servers = { DNS }, timeout = 20 })
      local th = moonsocket.spawn(function()
        moonsocket.resolve("quiet.test")
        say("never")
      end)
      moonsocket.after(0.1, function() say("cancel", tostring(th:cancel())) end)
      moonsocket.run()
      say("ran")
    ]], dns)
    dns:stop()
    assert.are.equal(0, status, out)
    assert.are.same({ "cancel true", "ran" }, said(out))
    assert.is_true(now() - start < helper.scaled(3), "the loop waited for "
                   .. "the lookup")
  end)

  it("is not reconfigured while lookups are under way", function()
    local dns = start_dns { "--delay", "0.3", "a.test=192.0.2.1" }
    local out, status = script([[
      assert(moonsocket.resolver { servers = { DNS } })
      moonsocket.spawn(function()
        say(table.concat(assert(moonsocket.resolve("a.test"))))
        say(tostring(moonsocket.resolver { servers = { DNS } }))
      end)
      local ok, err, code = moonsocket.resolver { servers = { DNS } }
      say(tostring(ok), err, code)
      moonsocket.run()
    ]], dns)
    dns:stop()
    assert.are.equal(0, status, out)
    assert.are.same({ "nil lookups are under way: configure the resolver "
                      .. "before resolving EBUSY", "192.0.2.1", "true" },
                    said(out))
  end)

  it("raises on misuse, naming what is wrong", function()
    local out, status = script([[
      local function try(fn)
        local ok, err = pcall(fn)
        say(tostring(ok), (tostring(err):gsub("^[^:]*:%d+: ", "")))
      end
      local resolver = moonsocket.resolver
      try(function() moonsocket.resolve("localhost") end)
      moonsocket.spawn(function()
        try(function() moonsocket.resolve(42) end)
        try(function() moonsocket.resolve("") end)
      end)
      try(function() moonsocket.resolver() end)
      try(function() resolver { timeout = 0 } end)
      try(function() resolver { timeout = "5x" } end)
      try(function() resolver { cache = -1 } end)
      try(function() resolver { cache = true } end)
      try(function() resolver { servers = {} } end)
      try(function() resolver { servers = "127.0.0.1" } end)
      try(function() resolver { servers = { "dns.example" } } end)
      try(function() resolver { servers = { "127.0.0.1:0" } } end)
      try(function() resolver { servers = { 53 } } end)
      try(function() resolver { server = { "127.0.0.1" } } end)
      moonsocket.run()
    ]])
    assert.are.equal(0, status, out)
    local forms = '("192.0.2.53", "192.0.2.53:5353", "2001:db8::53" or '
      .. '"[2001:db8::53]:5353")'
    assert.are.same({
      "false resolve() waits only in a coroutine moonsocket runs (a "
        .. "function handler, a timer callback, a thread, middleware); in a "
        .. "callback handler or outside run() it would stop the loop",
      "false bad argument #1 to 'resolve' (string expected, got number)",
      "false bad argument #1 to 'resolve' (a host name or an address "
        .. "expected)",
      "false bad argument #1 to 'resolver' (table expected, got no value)",
      "false option 'timeout' must be a number of seconds from 0.01 to "
        .. "300.0",
      "false option 'timeout' must be a number of seconds from 0.01 to "
        .. "300.0",
      "false option 'cache' must be false or a number of answers from 0 "
        .. "to 4096",
      "false option 'cache' must be false or a number of answers from 0 "
        .. "to 4096",
      "false option 'servers' must list 1 to 8 addresses",
      "false option 'servers' must be a list of addresses " .. forms,
      "false option 'servers': 'dns.example' is not an address with an "
        .. "optional port " .. forms,
      "false option 'servers': '127.0.0.1:0' is not an address with an "
        .. "optional port " .. forms,
      "false option 'servers': number is not an address with an optional "
        .. "port " .. forms,
      "false unknown option 'server'",
    }, said(out))
  end)
end)

describe("moonsocket.resolve at shutdown", function()
  it("cancels the lookups Lua waits for", function()
    local dns = start_dns { "--delay", "0.3", "slow.test=192.0.2.7" }
    local server = helper.start_server("spec/apps/resolver.lua",
                                       { DNS = "127.0.0.1:" .. dns.port })
    local ws = assert(helper.ws_connect(server.port, "/shutdown"))
    assert.is_true(ws:send_text("slow.test"))
    -- the close frame left unanswered keeps the loop running (for the
    -- shutdown's 2 s) past the DNS server's answer
    local frame = assert(ws:read_frame())
    assert.are.equal(helper.CLOSE, frame.opcode)
    helper.sleep(1)
    ws:abort()
    -- it ends by itself: a SIGTERM now could land as the process exits
    assert(helper.wait_until(function() return server:exited() end,
                             helper.scaled(5)), "the server did not exit")
    helper.stop_and_check(server)
    dns:stop()
    assert.are.equal(2, queries(dns, "slow.test"))
    assert.is_falsy(server:log():find("answered", 1, true), server:log())
  end)
end)

describe("moonsocket.resolve with workers", function()
  it("each worker asks on sockets of its own", function()
    -- the master's lookup is under way when the workers fork: without
    -- sockets of their own they would read each other's answers
    local dns = start_dns { "--delay", "0.3", "master.test=192.0.2.1",
                            "one.test=192.0.2.11", "two.test=192.0.2.12" }
    local out, status = script([[
      assert(moonsocket.resolver { servers = { DNS }, timeout = 3 })
      moonsocket.spawn(function()
        say("master", table.concat(assert(moonsocket.resolve("master.test"))))
      end)
      local app = moonsocket.app {}
      app:on_start(function(worker)
        local name = worker == 1 and "one.test" or "two.test"
        for _ = 1, 2 do
          local addrs, err = moonsocket.resolve(name)
          say("worker", worker, addrs and table.concat(addrs) or err)
          moonsocket.core.resolver { servers = { DNS }, cache = false }
        end
      end)
      assert(app:listen { port = 0, workers = 2 })
      moonsocket.after(1.5, function() os.execute("kill -TERM $PPID") end)
      moonsocket.run()
    ]], dns)
    dns:stop()
    assert.are.equal(0, status, out)
    local lines = said(out)
    table.sort(lines)
    assert.are.same({ "master 192.0.2.1",
                      "worker 1 192.0.2.11", "worker 1 192.0.2.11",
                      "worker 2 192.0.2.12", "worker 2 192.0.2.12" }, lines)
  end)
end)

describe("moonsocket.connect resolving its host", function()
  local CLIENT = "spec/apps/client.lua"
  local server = helper.with_server("spec/apps/echo.lua")
  local PINGED = "state\tconnecting\nping\tsent\npong\tabc\n"
    .. "close\t1001\t\tlocal\n"

  -- Runs the client's ping against host (with a DNS server's answers);
  -- asserts it went as it does against an address.
  local function ping(host, dns)
    local output, status = helper.run_app(CLIENT,
      { "ping", "ws://" .. host .. ":" .. server.port .. "/ws" },
      dns and { DNS = "127.0.0.1:" .. dns.port } or nil)
    if dns then dns:stop() end
    assert.are.equal(0, status, output)
    assert.are.equal(PINGED, output)
  end

  it("connects to localhost", function()
    ping("localhost")
  end)

  it("connects to a name its DNS server gives", function()
    ping("echo.test", start_dns { "--delay", "0.2", "echo.test=127.0.0.1" })
  end)

  it("tries the host's addresses in turn", function()
    -- nothing listens on 127.0.0.2: refused, then 127.0.0.1 answers
    ping("two.test",
         start_dns { "--delay", "0", "two.test=127.0.0.2,127.0.0.1" })
  end)

  it("closes 1006 naming a host that cannot be resolved", function()
    local dns = start_dns { "--delay", "0" }
    local output, status = helper.run_app(CLIENT,
      { "open", "ws://nope.test:" .. server.port .. "/ws" },
      { DNS = "127.0.0.1:" .. dns.port })
    dns:stop()
    assert.are.equal(0, status, output)
    assert.are.equal("state\tconnecting\nclose\t1006\tcannot resolve "
      .. "'nope.test': name not found\terror\n", output)
  end)

  it("gives up the lookup at handshake_timeout", function()
    local dns = start_dns { "--silent" }
    local start = now()
    local output, status = helper.run_app(CLIENT,
      { "open", "ws://quiet.test:" .. server.port .. "/ws" },
      { DNS = "127.0.0.1:" .. dns.port, HANDSHAKE_TIMEOUT = 0.3 })
    dns:stop()
    assert.are.equal(0, status, output)
    assert.are.equal("state\tconnecting\nclose\t1006\thandshake timeout\t"
      .. "timeout\n", output)
    assert.is_true(now() - start < helper.scaled(3), "the loop waited for "
                   .. "the lookup")
  end)
end)
