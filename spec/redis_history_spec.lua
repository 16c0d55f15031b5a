-- spec/redis_history_spec.lua: topic history kept in Redis (app:history
-- with app:use_backplane): positions from Redis, exact recovery on any
-- worker of any node, and publishes and recoveries failing visibly while
-- Redis is away (spec/apps/history.lua's protocol, a real redis-server).

local socket = require "socket"
local helper = require "helper"

local ask, close_all = helper.ask, helper.close_all
local recv_positioned, split_pos = helper.recv_positioned, helper.split_pos

local function start_node(redis_port, workers, size, ttl)
  return helper.start_server("spec/apps/history.lua", {
    REDIS_URL = "redis://127.0.0.1:" .. redis_port, HSIZE = size or 1000,
    HTTL = ttl, WORKERS = workers })
end

-- A client of node served by worker w (any without workers).
local function on_worker(node, w)
  for _ = 1, 400 do
    local ws = helper.ws_connect(node.port, "/ws")
    if ws and (not w or ask(ws, "pid") == "pid " .. w) then return ws end
    if ws then ws:abort() else helper.sleep(0.05) end   -- not forked yet
  end
  error("no connection reached worker " .. w)
end

-- Waits until worker w of node has its backplane connected (or not).
local function wait_bp(node, w, state)
  local want = "bp " .. tostring(state ~= false)
  local ws = on_worker(node, w)
  local ok = helper.wait_until(function() return ask(ws, "bp") == want end,
    helper.scaled(10), 0.05)
  close_all { ws }
  assert(ok, "backplane never reached '" .. want .. "':\n" .. node:log())
end

-- A publish's reply: n and its position.
local function published(ws, topic, data)
  local reply = ask(ws, "pub " .. topic .. " " .. data)
  local n, p = reply:match("^pub (%d+) (%x+:%d+)$")
  assert.is_truthy(n, reply)
  return tonumber(n), p
end

describe("history in redis, two nodes of two workers", function()
  local redis, a, b

  setup(function()
    local port = helper.free_port()
    redis = helper.start_redis(port)
    a = start_node(port, 2)
    b = start_node(port, 2)
    for _, node in ipairs { a, b } do
      for w = 1, 2 do wait_bp(node, w) end
    end
  end)

  teardown(function()
    a:stop()
    b:stop()
    redis:stop()
    helper.stop_and_check(a)
    helper.stop_and_check(b)
  end)

  it("gives one sequence of positions to publishes on every worker",
     function()
    local subs = { on_worker(a, 1), on_worker(a, 2), on_worker(b, 1),
                   on_worker(b, 2) }
    for _, ws in ipairs(subs) do
      assert.are.equal("sub h:seq true", ask(ws, "sub h:seq"))
    end
    local pubs = { on_worker(a, 1), on_worker(b, 2), on_worker(a, 2),
                   on_worker(b, 1) }
    local epoch
    for i = 1, 40 do
      local _, p = published(pubs[i % 4 + 1], "h:seq", "m" .. i)
      local e, off = split_pos(p)
      epoch = epoch or e
      assert.are.same({ epoch, i }, { e, off })
    end
    -- every worker of every node delivers them in Redis's order
    for _, ws in ipairs(subs) do
      for i = 1, 40 do
        assert.are.same({ epoch, i, "m" .. i }, { recv_positioned(ws) })
      end
    end
    close_all(subs)
    close_all(pubs)
  end)

  it("counts the publisher's own subscribers and skips ws:publish's ws",
     function()
    local a1, a1b, b1 = on_worker(a, 1), on_worker(a, 1), on_worker(b, 1)
    for _, ws in ipairs { a1, a1b, b1 } do
      assert.are.equal("sub h:own true", ask(ws, "sub h:own"))
    end
    -- a1's own message comes back from Redis to a1b, not to a1
    local reply = ask(a1, "wspub h:own hi")
    local n, p = reply:match("^wspub (%d+) (%x+:%d+)$")
    assert.are.equal("1", n, reply)
    local epoch, off = split_pos(p)
    assert.are.same({ epoch, off, "hi" }, { recv_positioned(a1b) })
    assert.are.same({ epoch, off, "hi" }, { recv_positioned(b1) })
    assert.are.equal("echo x", ask(a1, "echo x"))   -- nothing before it
    close_all { a1, a1b, b1 }
  end)

  it("recovers the 500 published on node B on node A's other worker",
     function()
    local sub = on_worker(a, 1)
    local reply = ask(sub, "since h:r")
    assert.is_truthy(reply:find("^since true false "), reply)
    local pub = on_worker(b, 1)
    local _, first = published(pub, "h:r", "first")
    local epoch, off0 = split_pos(first)
    assert.are.same({ epoch, off0, "first" }, { recv_positioned(sub) })
    sub:abort()                               -- dropped
    local burst = ask(pub, "burst h:r 500")
    assert.are.equal(("burst %s:%d"):format(epoch, off0 + 500), burst)
    -- back on node A, the other worker, with its position
    local again = on_worker(a, 2)
    again:send_text("since h:r " .. first)
    local next_off, answered = off0 + 1, false
    while next_off <= off0 + 500 or not answered do
      local kind, msg = again:recv_message(helper.scaled(5))
      assert.are.equal(helper.TEXT, kind, msg)
      if msg:find("^since ") then
        -- the worker may have had all of them, or be receiving the last
        -- ones: they come after the answer, live
        assert.is_truthy(msg:find("^since true true " .. epoch .. ":"), msg)
        answered = true
      else
        local e, off, data = msg:match("^(%x+):(%d+) (.*)$")
        assert.are.same({ epoch, next_off, "b" .. (next_off - off0) },
                        { e, tonumber(off), data })
        next_off = next_off + 1
      end
    end
    -- then the live ones, exactly once
    local _, live = published(pub, "h:r", "live")
    assert.are.equal(("%s:%d"):format(epoch, off0 + 501), live)
    assert.are.same({ epoch, off0 + 501, "live" }, { recv_positioned(again) })
    assert.are.equal("echo done", ask(again, "echo done"))
    close_all { again, pub }
  end)

  it("gives a topic nothing was published to its epoch from Redis",
     function()
    local sub = on_worker(a, 1)
    local reply = ask(sub, "since h:empty")
    local epoch, off = split_pos(reply:match("^since true false (%S+)$"))
    assert.are_not.equal(("0"):rep(16), epoch)
    assert.are.equal(0, off)
    sub:abort()
    local pub = on_worker(b, 2)
    for i = 1, 3 do
      assert.are.equal(("%s:%d"):format(epoch, i),
                       select(2, published(pub, "h:empty", "m" .. i)))
    end
    for _, node in ipairs { a, b } do
      local back = on_worker(node, 1)
      assert.is_true(back:send_text(("since h:empty %s:0"):format(epoch)))
      for i = 1, 3 do
        assert.are.same({ epoch, i, "m" .. i }, { recv_positioned(back) })
      end
      assert.are.equal(("since true true %s:3"):format(epoch),
                       select(2, back:recv_message()))
      back:abort()
    end
    close_all { pub }
  end)

  it("gives a callback handler's ready its epoch from Redis", function()
    local cb = assert(helper.ws_connect(a.port, "/cb"))
    local epoch, off = split_pos(ask(cb, "ready h:cbempty")
                                 :match("^ready true false (%S+)$"))
    assert.are_not.equal(("0"):rep(16), epoch)
    assert.are.equal(0, off)
    cb:abort()
    local pub = on_worker(b, 2)
    for i = 1, 3 do
      assert.are.equal(("%s:%d"):format(epoch, i),
                       select(2, published(pub, "h:cbempty", "m" .. i)))
    end
    for _, node in ipairs { a, b } do
      local back = assert(helper.ws_connect(node.port, "/cb"))
      assert.is_true(back:send_text(("ready h:cbempty %s:0"):format(epoch)))
      for i = 1, 3 do
        assert.are.same({ epoch, i, "m" .. i }, { recv_positioned(back) })
      end
      assert.are.equal(("ready true true %s:3"):format(epoch),
                       select(2, back:recv_message()))
      back:abort()
    end
    close_all { pub }
  end)
end)

describe("history in redis, a node that began later", function()
  local redis, redis_port, a, c

  setup(function()
    redis_port = helper.free_port()
    redis = helper.start_redis(redis_port)
    a = start_node(redis_port)
    wait_bp(a)
  end)

  teardown(function()
    a:stop()
    if c then c:stop() end
    redis:stop()
    helper.stop_and_check(a)
    if c then helper.stop_and_check(c) end
  end)

  it("reads what it did not keep from Redis", function()
    local pub = on_worker(a)
    local epoch
    for i = 1, 20 do
      local _, p = published(pub, "h:late", "m" .. i)
      epoch = split_pos(p)
    end
    close_all { pub }                  -- Redis inherits no socket of ours
    c = start_node(redis_port)
    wait_bp(c)
    pub = on_worker(a)
    for i = 21, 25 do published(pub, "h:late", "m" .. i) end
    -- c kept 21 to 25 at most: 11 to 20 come from Redis, then the rest
    local ws = on_worker(c)
    ws:send_text(("since h:late %s:10"):format(epoch))
    for i = 11, 25 do
      assert.are.same({ epoch, i, "m" .. i }, { recv_positioned(ws) })
    end
    assert.are.equal(("since true true %s:25"):format(epoch),
                     select(2, ws:recv_message()))
    local _, live = published(pub, "h:late", "live")
    assert.are.equal(epoch .. ":26", live)
    assert.are.same({ epoch, 26, "live" }, { recv_positioned(ws) })
    assert.are.equal("echo x", ask(ws, "echo x"))
    -- a callback handler cannot wait for Redis: what c did not keep is
    -- not recovered
    local cb = assert(helper.ws_connect(c.port, "/cb"))
    local reply = ask(cb, ("since h:none %s:3"):format(epoch))
    assert.are.equal("since true false 0000000000000000:0", reply)
    -- unless it gives ready: the answer comes once Redis's read is here
    local cb2 = assert(helper.ws_connect(c.port, "/cb"))
    assert.is_true(cb2:send_text(("ready h:late %s:5"):format(epoch)))
    for i = 6, 26 do
      assert.are.same({ epoch, i, i == 26 and "live" or "m" .. i },
                      { recv_positioned(cb2) })
    end
    assert.are.equal(("ready true true %s:26"):format(epoch),
                     select(2, cb2:recv_message()))
    -- a position of another epoch is not recovered, from Redis either
    reply = ask(ws, "since h:late 0123456789abcdef:3")
    assert.are.equal(("since false false %s:26"):format(epoch), reply)
    local fresh = on_worker(c)
    reply = ask(fresh, "since h:late 0123456789abcdef:3")
    assert.are.equal(("since true false %s:26"):format(epoch), reply)
    close_all { ws, cb, cb2, fresh, pub }
  end)
end)

describe("history in redis, size and ttl", function()
  local TTL = helper.scaled(2)
  local redis, redis_port, node, timed

  setup(function()
    redis_port = helper.free_port()
    redis = helper.start_redis(redis_port)
    node = start_node(redis_port, nil, 5)
    timed = start_node(redis_port, nil, 5, TTL)
    wait_bp(node)
    wait_bp(timed)
  end)

  teardown(function()
    node:stop()
    timed:stop()
    redis:stop()
    helper.stop_and_check(node)
    helper.stop_and_check(timed)
  end)

  it("trims the stream to about size (MAXLEN ~)", function()
    local pub = on_worker(node)
    for i = 1, 300 do published(pub, "h:cap", "m" .. i) end
    local n = helper.redis_call(redis_port, "XLEN", "moonsocket:history:h:cap")
    -- whole nodes of the stream go: at most one node's (100) more
    assert.is_true(n >= 5 and n <= 5 + 100, "XLEN " .. n)
    -- the offset counts on regardless
    local _, p = published(pub, "h:cap", "last")
    assert.are.equal(301, select(2, split_pos(p)))
    close_all { pub }
  end)

  it("lets the position and the stream expire after ttl", function()
    local pub = on_worker(timed)
    published(pub, "h:gone", "m")
    local keys = { "moonsocket:position:h:gone", "moonsocket:history:h:gone" }
    for _, key in ipairs(keys) do
      local ms = helper.redis_call(redis_port, "PTTL", key)
      assert.is_true(ms > 0 and ms <= TTL * 1000, key .. " PTTL " .. ms)
    end
    assert.is_truthy(helper.wait_until(function()
      return helper.redis_call(redis_port, "EXISTS", keys[1], keys[2]) == 0
    end, helper.scaled(5), 0.05))
    close_all { pub }
  end)

  it("recovers nothing older than ttl from Redis", function()
    local pub = on_worker(timed)
    local t0 = socket.gettime()
    local _, p1 = published(pub, "h:aged", "m1")
    local epoch = split_pos(p1)
    -- ttl is time: m2 comes later, so that m1 is older than ttl and m2
    -- not, for a while
    helper.sleep(TTL * 0.6)
    local _, p2 = published(pub, "h:aged", "m2")
    local t2 = socket.gettime()
    close_all { pub }                  -- Redis inherits no socket of ours
    local late = start_node(redis_port, nil, 5, TTL)
    wait_bp(late)
    helper.sleep(math.max(0, t0 + TTL * 1.1 - socket.gettime()))
    -- a node that kept neither reads them from Redis: only m2
    local ws = on_worker(late)
    assert.are.equal("since true false " .. p2,
                     ask(ws, ("since h:aged %s:0"):format(epoch)))
    local back = on_worker(late)
    back:send_text("since h:aged " .. p1)
    assert.are.same({ epoch, 2, "m2" }, { recv_positioned(back) })
    assert.are.equal("since true true " .. p2, select(2, back:recv_message()))
    assert.is_true(socket.gettime() < t2 + TTL, "m2 outlived ttl: too slow")
    close_all { ws, back }
    late:stop()
    helper.stop_and_check(late)
  end)
end)

describe("history in redis while redis is away", function()
  local redis, redis_port, node

  setup(function()
    redis_port = helper.free_port()
    redis = helper.start_redis(redis_port)
    node = start_node(redis_port)
    wait_bp(node)
  end)

  teardown(function()
    node:stop()
    redis:stop()
    helper.stop_and_check(node)
  end)

  it("fails publishes and recoveries, then works again", function()
    local ws, sub = on_worker(node), on_worker(node)
    assert.are.equal("sub h:o true", ask(sub, "sub h:o"))
    local n, p1 = published(ws, "h:o", "before")
    assert.are.equal(1, n)
    local epoch = split_pos(p1)
    assert.are.same({ epoch, 1, "before" }, { recv_positioned(sub) })
    close_all { ws, sub }
    redis:stop()
    wait_bp(node, nil, false)
    ws = on_worker(node)
    assert.are.equal("pub nil redis is unavailable EUNAVAILABLE",
                     ask(ws, "pub h:o during"))
    -- a callback handler is told at once too
    local cb = assert(helper.ws_connect(node.port, "/cb"))
    assert.are.equal("pub nil redis is unavailable EUNAVAILABLE",
                     ask(cb, "pub h:o during"))
    local reply = ask(ws, "since h:o " .. p1)
    assert.is_truthy(reply:find("^since true false "), reply)
    -- a topic without history is served as ever
    assert.are.equal("plain 0", ask(ws, "plain h2 x"))
    close_all { ws, cb }
    -- Redis back (empty): a new epoch, and positions again
    redis = helper.start_redis(redis_port)
    wait_bp(node)
    ws = on_worker(node)
    local _, p2 = published(ws, "h:o", "after")
    local epoch2, off2 = split_pos(p2)
    assert.are_not.equal(epoch, epoch2)
    assert.are.equal(1, off2)
    reply = ask(ws, "since h:o " .. p1)
    assert.is_truthy(reply:find("^since true false " .. p2), reply)
    close_all { ws }
  end)

  it("fails a publish Redis leaves unanswered for 5 s, then recovers",
     function()
    local ws = on_worker(node)
    local _, first = published(ws, "h:hung", "first")
    assert.is_true(os.execute("kill -STOP " .. redis.pid))
    local ok, err = pcall(function()
      assert.is_true(ws:send_text("pub h:hung held"))
      -- the loop serves on meanwhile
      local other = on_worker(node)
      assert.are.equal("echo on", ask(other, "echo on"))
      close_all { other }
      local kind, reply = ws:recv_message(helper.scaled(10))
      assert.are.equal(helper.TEXT, kind, node:log())
      assert.are.equal("pub nil redis gave no position within 5 s "
                       .. "EUNAVAILABLE", reply)
    end)
    assert.is_true(os.execute("kill -CONT " .. redis.pid))
    assert(ok, err)
    wait_bp(node)
    local _, p = published(ws, "h:hung", "after")
    local epoch, last = split_pos(p)
    assert.is_truthy(node:log():find("no answer within 5 s", 1, true))
    -- the node forgot its history in the outage; Redis kept it: a
    -- client recovers from Redis (and "held" is there if Redis ran it)
    local again = on_worker(node)
    again:send_text("since h:hung " .. first)
    local off = select(2, split_pos(first))
    for i = off + 1, last do
      local e, o, data = recv_positioned(again)
      assert.are.same({ epoch, i }, { e, o })
      assert.are.equal(i == last and "after" or "held", data)
    end
    assert.are.equal("since true true " .. p,
                     select(2, again:recv_message()))
    close_all { ws, again }
  end)

  -- last: the node keeps its history in the process from then on
  it("fails what waits for Redis when the backplane closes", function()
    local ws, ctl = on_worker(node), on_worker(node)
    assert.is_true(os.execute("kill -STOP " .. redis.pid))
    local ok, err = pcall(function()
      assert.is_true(ws:send_text("pub h:closing held"))
      assert.are.equal("timeout", select(2, ws:recv_message(0.2)))
      assert.are.equal("bpclose", ask(ctl, "bpclose"))
      assert.are.equal("pub nil the backplane is closed EUNAVAILABLE",
                       select(2, ws:recv_message()))
    end)
    assert.is_true(os.execute("kill -CONT " .. redis.pid))
    assert(ok, err)
    -- without a backplane, positions are this process's again
    local _, p = published(ws, "h:closing", "local")
    assert.are.equal(1, select(2, split_pos(p)))
    close_all { ws, ctl }
  end)
end)
