-- spec/backplane_spec.lua: publish across processes through Redis
-- (app:use_backplane), with Redis going away and coming back.

local helper = require "helper"
local core = require "moonsocket.core"

local ask, close_all = helper.ask, helper.close_all

local start_redis = helper.start_redis

-- A server on spec/apps/pubsub.lua with a backplane to that Redis (a
-- port, or a whole URL).
local function start_node(redis, env)
  local full_env = { REDIS_URL = type(redis) == "number"
    and "redis://127.0.0.1:" .. redis or redis }
  for name, value in pairs(env or {}) do full_env[name] = value end
  return helper.start_server("spec/apps/pubsub.lua", full_env)
end

-- For teardown: stops every server, then Redis, then asserts each server
-- exited 0 with a clean log (so a failure leaves no process behind).
local function stop_all(redis, servers)
  for _, server in pairs(servers) do server:stop() end
  if redis then
    redis:kill("CONT")                -- in case a test left it stopped
    redis:stop()
  end
  for _, server in pairs(servers) do helper.stop_and_check(server) end
end

local function connect(server)
  return assert(helper.ws_connect(server.port))
end

-- Waits until the server's backplane is connected (or is not).
local function wait_connected(server, state)
  local ws = connect(server)
  local want = "bp " .. tostring(state ~= false)
  local ok = helper.wait_until(function() return ask(ws, "bp") == want end,
    helper.scaled(10), 0.05)
  close_all { ws }
  assert(ok, "backplane never reached '" .. want .. "':\n" .. server:log())
end

local function wait_log(server, text)
  local ok = helper.wait_until(function()
    return server:log():find(text, 1, true)
  end, helper.scaled(10), 0.05)
  assert(ok, "no '" .. text .. "' in the log:\n" .. server:log())
end

-- Nothing more is queued for ws: its next message answers this question.
local function assert_nothing_more(ws)
  assert.are.equal("topics room", ask(ws, "topics"))
end

-- Publishes to topic from `from` until `to`, its one subscriber (on
-- another server), receives one, for up to 10 s: what is published
-- while the backplane reconnects is lost.
local function wait_delivery(from, to, topic)
  assert.are.equal("sub " .. topic .. " true", ask(to, "sub " .. topic))
  for i = 1, 200 do
    local msg = "probe " .. i
    assert.are.equal("pub 0", ask(from, "pub " .. topic .. " " .. msg))
    local kind, got = to:recv_message(0.05)
    if kind then
      assert.are.equal(helper.TEXT, kind)
      -- an earlier probe may arrive late: every one at most once
      local seen = { [got] = true }
      repeat
        kind, got = to:recv_message(0.2)
        if kind then
          assert.is_nil(seen[got], "delivered twice: " .. got)
          seen[got] = true
        end
      until not kind
      assert.are.equal("unsub " .. topic .. " true",
        ask(to, "unsub " .. topic))
      return true
    end
  end
  return false
end

describe("backplane", function()
  local redis, redis_port, a, b

  setup(function()
    redis_port = helper.free_port()
    redis = start_redis(redis_port)
    a = start_node(redis_port)
    b = start_node(redis_port)
    wait_connected(a)
    wait_connected(b)
  end)

  teardown(function() stop_all(redis, { a, b }) end)

  it("logs the connection", function()
    wait_log(a, "backplane: connected to redis 127.0.0.1:" .. redis_port)
    wait_log(b, "backplane: connected to redis 127.0.0.1:" .. redis_port)
  end)

  it("a publish on one server reaches every subscriber of both once",
     function()
    local a1, a2, b1 = connect(a), connect(a), connect(b)
    for _, ws in ipairs { a1, a2, b1 } do
      assert.are.equal("sub room true", ask(ws, "sub room"))
    end
    local pub = connect(b)
    assert.are.equal("pub 1", ask(pub, "pub room héllo"))
    assert.are.equal("pub 1", ask(pub, "pubbin room \0\1\2"))
    for _, ws in ipairs { a1, a2, b1 } do
      assert.are.same({ helper.TEXT, "héllo" }, { ws:recv_message() })
      assert.are.same({ helper.BINARY, "\0\1\2" }, { ws:recv_message() })
    end
    -- and the other way round
    local pub_a = connect(a)
    assert.are.equal("pub 2", ask(pub_a, "pub room from a"))
    for _, ws in ipairs { a1, a2, b1 } do
      assert.are.same({ helper.TEXT, "from a" }, { ws:recv_message() })
    end
    -- large messages cross intact
    local big = ("x"):rep(200000)
    assert.are.equal("pub 1", ask(pub, "pubbig room 200000"))
    for _, ws in ipairs { a1, a2, b1 } do
      helper.assert_payload(big, select(2, ws:recv_message()))
    end
    -- no copy came back through Redis to its own server
    for _, ws in ipairs { a1, a2, b1 } do assert_nothing_more(ws) end
    close_all { a1, a2, b1, pub, pub_a }
  end)

  it("ws:publish reaches the other server's subscribers, not the sender",
     function()
    local a1, sender = connect(a), connect(b)
    ask(a1, "sub room")
    ask(sender, "sub room")
    assert.are.equal("wspub 0", ask(sender, "wspub room from b"))
    assert.are.same({ helper.TEXT, "from b" }, { a1:recv_message() })
    assert_nothing_more(sender)
    assert_nothing_more(a1)
    close_all { a1, sender }
  end)

  it("keeps serving locally while Redis is down, and recovers", function()
    local a1, b1 = connect(a), connect(b)
    ask(a1, "sub room")
    ask(b1, "sub room")
    local pub_a, pub_b = connect(a), connect(b)
    redis:kill("KILL")
    redis:stop()
    local unavailable = "backplane: redis 127.0.0.1:" .. redis_port
      .. " unavailable"
    wait_log(a, unavailable)
    wait_log(b, unavailable)
    -- local delivery goes on
    assert.are.equal("pub 1", ask(pub_a, "pub room local a"))
    assert.are.equal("pub 1", ask(pub_b, "pub room local b"))
    assert.are.same({ helper.TEXT, "local a" }, { a1:recv_message() })
    assert.are.same({ helper.TEXT, "local b" }, { b1:recv_message() })
    assert_nothing_more(a1)
    assert_nothing_more(b1)
    -- one line per outage, however many retries
    helper.sleep(1)
    local _, n = a:log():gsub("unavailable", "")
    assert.are.equal(1, n)
    close_all { a1, b1, pub_a, pub_b }

    redis = start_redis(redis_port)
    a1, b1, pub_a, pub_b = connect(a), connect(b), connect(a), connect(b)
    assert.is_true(wait_delivery(pub_b, a1, "probe"))
    assert.is_true(wait_delivery(pub_a, b1, "probe"))
    wait_log(a, "backplane: reconnected to redis 127.0.0.1:" .. redis_port)
    wait_log(b, "backplane: reconnected to redis 127.0.0.1:" .. redis_port)
    assert.truthy(a:log():find("reconnected to redis [^;]*; %d+ publishes "
      .. "during the outage reached this node only"))
    close_all { a1, b1, pub_a, pub_b }
  end)

  it("servers exit 0 on SIGTERM while Redis is down", function()
    redis:kill("KILL")
    redis:stop()
    redis = nil
    wait_connected(a, false)
    wait_connected(b, false)
    local server_a, server_b = a, b
    a, b = nil, nil
    helper.stop_and_check(server_a)
    helper.stop_and_check(server_b)
  end)
end)

describe("backplane without Redis at start", function()
  local redis, redis_port, a

  teardown(function() stop_all(redis, { a }) end)

  it("serves, then connects when Redis appears", function()
    redis_port = helper.free_port()
    a = start_node(redis_port)
    wait_log(a, "backplane: redis 127.0.0.1:" .. redis_port
      .. " unavailable (Connection refused)")
    local ws, pub = connect(a), connect(a)
    ask(ws, "sub room")
    assert.are.equal("pub 1", ask(pub, "pub room alone"))
    assert.are.same({ helper.TEXT, "alone" }, { ws:recv_message() })
    assert.are.equal("bp false", ask(pub, "bp"))
    close_all { ws, pub }
    redis = start_redis(redis_port)
    wait_connected(a)
    wait_log(a, "backplane: reconnected to redis 127.0.0.1:" .. redis_port
      .. "; 1 publishes during the outage reached this node only")
    -- a second node now hears it
    local b = start_node(redis_port)
    wait_connected(b)
    pub = connect(a)
    local b1 = connect(b)
    assert.is_true(wait_delivery(pub, b1, "probe"))
    close_all { pub, b1 }
    helper.stop_and_check(b)
  end)
end)

describe("backplane by host name", function()
  local redis, dns, a, b, c

  teardown(function()
    if dns then dns:stop() end
    stop_all(redis, { a, b, c })
  end)

  it("resolves the host on the loop; a name that fails is an outage",
     function()
    local port = helper.free_port()
    redis = start_redis(port)
    -- spec/peers/dns_server.py, answering after 0.2 s
    dns = helper.spawn({ "-u", "LD_PRELOAD", "/usr/bin/python3",
      "spec/peers/dns_server.py", "--delay", "0.2",
      "redis.test=127.0.0.1" }, {}, { ready = "dns on 127.0.0.1:(%d+)\n" })
    local env = { DNS = "127.0.0.1:" .. dns.port }
    a = start_node("redis://localhost:" .. port)
    b = start_node("redis://redis.test:" .. port, env)
    wait_connected(a)
    wait_connected(b)
    wait_log(a, "backplane: connected to redis localhost:" .. port)
    wait_log(b, "backplane: connected to redis redis.test:" .. port)
    local a1, pub = connect(a), connect(b)
    assert.is_true(wait_delivery(pub, a1, "room"))
    close_all { a1, pub }
    c = start_node("redis://nope.test:" .. port, env)
    wait_log(c, "backplane: redis nope.test:" .. port .. " unavailable "
      .. "(cannot resolve 'nope.test': name not found)")
    assert.is_truthy(dns:log():find("query redis.test A", 1, true))
  end)
end)

describe("backplane with a password and a database", function()
  local redis, a, b

  teardown(function() stop_all(redis, { a, b }) end)

  it("authenticates and selects; a wrong password is an outage",
     function()
    local port = helper.free_port()
    redis = start_redis(port, "--requirepass", "s@cret")
    local url = "redis://:s%40cret@127.0.0.1:" .. port .. "/2"
    a, b = start_node(url), start_node(url)
    wait_connected(a)
    wait_connected(b)
    local a1, pub = connect(a), connect(b)
    assert.is_true(wait_delivery(pub, a1, "room"))
    close_all { a1, pub }
    local wrong = start_node("redis://:nope@127.0.0.1:" .. port)
    wait_log(wrong, "unavailable (AUTH refused: WRONGPASS")
    helper.sleep(1)                  -- retries, but logs only once
    local _, lines = wrong:log():gsub("unavailable", "")
    assert.are.equal(1, lines)
    helper.stop_and_check(wrong)
  end)
end)

describe("backplane over max_pending", function()
  local redis, a, b

  teardown(function() stop_all(redis, { a, b }) end)

  it("drops what would exceed it while Redis does not answer", function()
    local port = helper.free_port()
    redis = start_redis(port)
    a, b = start_node(port), start_node(port, { BP_MAX_PENDING = 4096 })
    wait_connected(a)
    wait_connected(b)
    local a1, pub = connect(a), connect(b)
    assert.is_true(wait_delivery(pub, a1, "room"))
    ask(a1, "sub room")
    redis:kill("STOP")              -- Redis reads nothing, answers nothing
    -- about 1100 bytes per publish: the first three fit in 4 KiB
    for _ = 1, 20 do
      assert.are.equal("pub 0", ask(pub, "pubbig room 1000"))
    end
    wait_log(b, "backplane: more than max_pending (4096 bytes) waiting "
      .. "for redis; publishes reach this node only until it catches up")
    redis:kill("CONT")
    wait_log(b, "backplane: redis caught up; 17 publishes over "
      .. "max_pending reached this node only")
    for _ = 1, 3 do
      assert.are.same({ helper.TEXT, ("x"):rep(1000) },
        { a1:recv_message() })
    end
    assert_nothing_more(a1)
    close_all { a1, pub }
  end)
end)

describe("backplane with worker processes", function()
  local redis, a, b

  teardown(function() stop_all(redis, { a, b }) end)

  it("delivers once to every subscriber of every worker", function()
    local port = helper.free_port()
    redis = start_redis(port)
    a, b = start_node(port, { WORKERS = 2 }), start_node(port)
    -- a socket on each of a's workers
    local on = {}
    assert(helper.wait_until(function()
      local ws = connect(a)
      local worker = ask(ws, "pid"):match("(%d+)$")
      if on[worker] then
        close_all { ws }
      else
        on[worker] = ws
      end
      return on["1"] and on["2"]
    end, helper.scaled(10)), "no socket reached both workers")
    local w1, w2, b1 = on["1"], on["2"], connect(b)
    wait_connected(b)
    for _, ws in ipairs { w1, w2 } do
      assert(helper.wait_until(function() return ask(ws, "bp") == "bp true"
        end, helper.scaled(10), 0.05))
    end
    -- only the workers connect, not the master that forked them
    local _, connects = a:log():gsub("backplane: connected to redis", "")
    assert.are.equal(2, connects)
    for _, ws in ipairs { w1, w2, b1 } do ask(ws, "sub room") end
    -- from another node: once on each worker
    assert.are.equal("wspub 0", ask(b1, "wspub room from b"))
    for _, ws in ipairs { w1, w2 } do
      assert.are.same({ helper.TEXT, "from b" }, { ws:recv_message() })
    end
    -- from a worker: its sibling gets it once (relayed by the master,
    -- not again from Redis), the other node once
    assert.are.equal("wspub 0", ask(w1, "wspub room from w1"))
    assert.are.same({ helper.TEXT, "from w1" }, { w2:recv_message() })
    assert.are.same({ helper.TEXT, "from w1" }, { b1:recv_message() })
    for _, ws in ipairs { w1, w2, b1 } do assert_nothing_more(ws) end
    close_all { w1, w2, b1 }
  end)
end)

describe("core.backplane", function()
  local function message(f)
    local ok, err = pcall(f)
    assert.is_false(ok)
    return (err:gsub("^[^:]*:%d+: ", ""))     -- without the position
  end

  local function backplane(options)
    return message(function() return core.backplane(options) end)
  end

  it("rejects bad options with the standard wording", function()
    assert.are.equal("bad argument #1 to 'backplane' (table expected, got "
      .. "string)", backplane("redis://x"))
    assert.are.equal("bad argument #1 to 'backplane' (unknown option "
      .. "'url')", backplane({ url = "redis://x" }))
    for _, url in ipairs { "http://127.0.0.1:6379", "redis://", "redis:/x",
        "redis://host:0", "redis://host:65536", "redis://host:x",
        "redis://user:pw@host", "redis://host/x", "redis://[::1" } do
      assert.are.equal("bad argument #1 to 'backplane' (option 'redis': "
        .. "invalid URL '" .. url .. "' (redis://[:password@]host:port[/db]"
        .. " expected))", backplane({ redis = url }))
    end
    assert.are.equal("bad argument #1 to 'backplane' (option 'redis' must "
      .. "be a string)", backplane({ redis = 6379 }))
    assert.are.equal("bad argument #1 to 'backplane' (option 'max_pending' "
      .. "must be a size from 1024 to 1099511627776 bytes)",
      backplane({ max_pending = 10 }))
    local app = require("moonsocket").app()
    assert.matches("bad argument #1 to 'use_backplane' %(table of options "
      .. "expected, got nil%)", message(function() app:use_backplane() end))
  end)

  it("is closed once, by close, __close or __gc", function()
    local port = helper.free_port()
    do
      local bp <close> = core.backplane {
        redis = "redis://:s%40cret@127.0.0.1:" .. port .. "/3",
        channel_prefix = "t[1]*:", max_pending = 4096,
      }
      assert.are.equal("moonsocket.backplane (redis 127.0.0.1:" .. port
        .. ", connecting)", tostring(bp))
      assert.is_false(bp.connected)
      -- the loop never ran: Redis is not reached yet
      assert.are.same({ nil, "redis is unavailable", "EUNAVAILABLE" },
        { bp:publish("room", "x") })
      assert.are.equal(1, bp.unsent)
      assert.are.equal("a backplane is already in use", backplane {})
      assert.matches("bad argument #2 to 'publish' %(text is not UTF%-8",
        message(function() bp:publish("room", "\xff") end))
      assert.matches("bad argument #3 to 'publish' %(invalid option 'x'%)",
        message(function() bp:publish("room", "x", "x") end))
    end
    local bp = core.backplane { redis = "redis://[::1]:" .. port }
    bp:close()
    bp:close()
    assert.are.same({ nil, "the backplane is closed", "ECLOSED" },
      { bp:publish("room", "x", "binary") })
    assert.are.equal("moonsocket.backplane (redis ::1:" .. port
      .. ", closed)", tostring(bp))
    assert.matches("moonsocket.backplane expected",
      message(function() bp.publish({}, "room", "x") end))
  end)
end)
