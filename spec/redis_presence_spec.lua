-- spec/redis_presence_spec.lua: presence across nodes through Redis
-- (app:use_backplane): lists, counts and on_presence hear the members of
-- every node; a node killed with SIGKILL loses its members after
-- presence_ttl (spec/apps/presence.lua's protocol, a real redis-server).

local helper = require "helper"

local ask, close_all = helper.ask, helper.close_all

local TTL = 1

local function client(node)
  return assert(helper.ws_connect(node.port, "/ws"))
end

-- Asks until the answer is want (other nodes hear through Redis, a
-- moment later).
local function ask_until(ws, command, want, seconds)
  local got
  helper.wait_until(function()
    got = ask(ws, command)
    return got == want
  end, helper.scaled(seconds or 5), 0.05)
  assert.are.equal(want, got)
end

local function start_node(redis_port, workers)
  return helper.start_server("spec/apps/presence.lua", {
    REDIS_URL = "redis://127.0.0.1:" .. redis_port, PRESENCE_TTL = TTL,
    WORKERS = workers })
end

-- A client of node once its backplane is connected.
local function connected(node)
  local ws = client(node)
  ask_until(ws, "bp", "bp true", 10)
  return ws
end

describe("presence across nodes", function()
  local redis, redis_port, a, b, c

  setup(function()
    redis_port = helper.free_port()
    redis = helper.start_redis(redis_port)
    a = start_node(redis_port)
    b = start_node(redis_port)
  end)

  teardown(function()
    a:stop()
    b:stop()
    redis:stop()
    helper.stop_and_check(a)
    helper.stop_and_check(b)
    if c then          -- killed by the last test
      assert.are.equal(128 + 9, c:stop(), c:log())
      helper.assert_clean_log(c)
    end
  end)

  it("lists, counts and tells the members of every node", function()
    local on_a, on_b = connected(a), connected(b)
    assert.are.equal("events ", ask(on_a, "events"))
    local ann, bob = client(a), client(b)
    assert.are.equal("join true", ask(ann, "join room:1 ann"))
    ask_until(on_b, "who room:1", "who ann@0")     -- in this order
    assert.are.equal("join true", ask(bob, "join room:1 bob"))
    ask_until(on_a, "who room:1", "who ann@0,bob@0")
    ask_until(on_b, "who room:1", "who ann@0,bob@0")
    assert.are.equal("count 2", ask(on_a, "count room:1"))
    assert.are.equal("count 2", ask(on_b, "count room:1"))
    assert.are.equal("events join:room:1:ann,join:room:1:bob",
                     ask(on_a, "events"))
    -- a leave on one node reaches the other
    assert.are.equal("leave true", ask(bob, "leave room:1"))
    ask_until(on_a, "who room:1", "who ann@0")
    assert.are.equal("events leave:room:1:bob", ask(on_a, "events"))
    close_all { ann }
    ask_until(on_b, "count room:1", "count 0")
    assert.are.equal("events join:room:1:ann,join:room:1:bob,"
                     .. "leave:room:1:bob,leave:room:1:ann",
                     ask(on_b, "events"))
    close_all { on_a, on_b, bob }
  end)

  it("tells a node that starts later who is there", function()
    local ann = client(a)
    assert.are.equal("join true", ask(ann, "join room:2 ann"))
    c = start_node(redis_port)
    local on_c = connected(c)
    ask_until(on_c, "who room:2", "who ann@0")
    close_all { ann }
    ask_until(on_c, "count room:2", "count 0")
    close_all { on_c }
  end)

  it("forgets the members of a node killed with SIGKILL", function()
    local on_a = connected(a)
    ask(on_a, "events")                -- what the others left
    local cal = client(c)
    assert.are.equal("join true", ask(cal, "join room:3 cal"))
    ask_until(on_a, "who room:3", "who cal@0")
    assert.is_true(os.execute("kill -KILL " .. c.pid))
    cal:abort()
    -- gone within presence_ttl (plus a beat of the timer)
    ask_until(on_a, "count room:3", "count 0", TTL * 4)
    assert.are.equal("events join:room:3:cal,leave:room:3:cal",
                     ask(on_a, "events"))
    close_all { on_a }
  end)
end)

describe("presence across nodes of two workers", function()
  local redis, a, b

  setup(function()
    local port = helper.free_port()
    redis = helper.start_redis(port)
    a = start_node(port, 2)
    b = start_node(port)
  end)

  teardown(function()
    a:stop()
    b:stop()
    redis:stop()
    helper.stop_and_check(a)
    helper.stop_and_check(b)
  end)

  -- A client of node served by worker w.
  local function on_worker(node, w)
    for _ = 1, 400 do
      local ws = helper.ws_connect(node.port, "/ws")
      if ws and ask(ws, "pid") == "pid " .. w then return ws end
      if ws then ws:abort() else helper.sleep(0.05) end  -- not forked yet
    end
    error("no connection reached worker " .. w)
  end

  it("hears every worker's members, and forgets a dead worker's",
     function()
    local a1, a2 = on_worker(a, 1), on_worker(a, 2)
    for _, ws in ipairs { a1, a2 } do ask_until(ws, "bp", "bp true", 10) end
    local on_b = connected(b)
    local bob = client(b)
    assert.are.equal("join true", ask(a1, "join room:w ann"))
    assert.are.equal("join true", ask(a2, "join room:w amy"))
    assert.are.equal("join true", ask(bob, "join room:w bob"))
    ask_until(on_b, "who room:w", "who amy@2,ann@1,bob@0")
    ask_until(a1, "who room:w", "who amy@2,ann@1,bob@0")
    ask_until(a2, "who room:w", "who amy@2,ann@1,bob@0")
    -- worker 2 dies: its sibling hears it at once (the master), node b
    -- when its presence_ttl has passed; the master forks another
    a2:send_text("die")
    ask_until(a1, "who room:w", "who ann@1,bob@0")
    ask_until(on_b, "who room:w", "who ann@1,bob@0", TTL * 4)
    close_all { a1, on_b, bob }
  end)
end)
