-- spec/redis_presence_spec.lua: presence across nodes through Redis
-- (app:use_backplane): lists, counts and on_presence hear the members of
-- every node; a node killed with SIGKILL loses its members after
-- presence_ttl (spec/apps/presence.lua's protocol, a real redis-server).

local socket = require "socket"
local helper = require "helper"

local ask, close_all = helper.ask, helper.close_all
local resp_command, resp_reply = helper.resp_command, helper.resp_reply
local redis_call = helper.redis_call

local TTL = 1
local CHANNEL = "moonsocket:presence"

-- Integers in network byte order, as presence messages carry them.
local function be(n, bytes)
  local out = {}
  for i = bytes, 1, -1 do
    out[i] = string.char(n & 0xff)
    n = n >> 8
  end
  return table.concat(out)
end

local function info_string(s)
  return "s" .. be(#s, 4) .. s
end

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

local function start_node(redis_port, workers, log_events, ttl)
  return helper.start_server("spec/apps/presence.lua", {
    REDIS_URL = "redis://127.0.0.1:" .. redis_port,
    PRESENCE_TTL = ttl or TTL, WORKERS = workers, LOG_EVENTS = log_events })
end

-- A client of node once its backplane is connected.
local function connected(node)
  local ws = client(node)
  ask_until(ws, "bp", "bp true", 10)
  return ws
end

-- A client of node served by worker w.
local function on_worker(node, w)
  for _ = 1, 400 do
    local ws = helper.ws_connect(node.port, "/ws")
    if ws and ask(ws, "pid") == "pid " .. w then return ws end
    if ws then ws:abort() else helper.sleep(0.05) end  -- not forked yet
  end
  error("no connection reached worker " .. w)
end

-- The events a client of a node was told, sorted.
local function sorted_events(ws)
  local list = {}
  for e in ask(ws, "events"):sub(8):gmatch("[^,]+") do list[#list + 1] = e end
  table.sort(list)
  return table.concat(list, ",")
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

  it("publishes presence info in network byte order", function()
    local sub = assert(helper.connect(redis_port))
    assert(sub:send(resp_command("SUBSCRIBE", CHANNEL)))
    assert.are.same({ "subscribe", CHANNEL, 1 }, resp_reply(sub))
    local ann = connected(a)
    local topic = "room:e"
    local function joined_message()
      while true do
        local push = resp_reply(sub)
        local msg = push[3]
        if msg:sub(2, 2) == "J" and msg:sub(31, 30 + #topic) == topic then
          return msg
        end
      end
    end
    assert.are.equal("join true", ask(ann, "joinnum room:e 258"))
    local msg = joined_message()
    -- kind, process, node, member, topic's length, topic, info
    assert.are.equal("\3J", msg:sub(1, 2))
    assert.are.equal(be(#topic, 4) .. topic, msg:sub(27, 30 + #topic))
    assert.are.equal("{" .. info_string("n") .. "i" .. be(258, 8) .. "}",
                     msg:sub(31 + #topic))
    assert.are.equal("join true", ask(ann, "joinnum room:e2 -1.5"))
    topic = "room:e2"
    msg = joined_message()
    -- -1.5 in IEEE 754 binary64 is bfd8000000000000
    assert.are.equal("{" .. info_string("n") .. "n" ..
                     "\191\248\0\0\0\0\0\0}", msg:sub(31 + #topic))
    sub:close()
    close_all { ann }
  end)

  it("reads presence info sent in network byte order", function()
    local on_a = connected(a)
    ask(on_a, "events")
    local topic = "room:f"
    local head = be(0x0102030405060708, 8) .. be(0x1112131415161718, 8)
      .. be(42, 8)
    local info = "{" .. info_string("name") .. info_string("eve")
      .. info_string("worker") .. "i" .. be(7, 8)
      .. info_string("neg") .. "i" .. be(-2, 8)
      .. info_string("x") .. "n" .. "\63\248\0\0\0\0\0\0" .. "}"
    local want = "info {name=eve:string;neg=-2:integer;worker=7:integer;"
      .. "x=1.5:float}"
    local got
    helper.wait_until(function()
      -- the join, told again with each beat: a known member stays one
      redis_call(redis_port, "PUBLISH", CHANNEL,
                 "\3J" .. head .. be(#topic, 4) .. topic .. info)
      got = ask(on_a, "info room:f")
      return got == want
    end, helper.scaled(5), 0.05)
    assert.are.equal(want, got)
    assert.are.equal("count 1", ask(on_a, "count room:f"))
    redis_call(redis_port, "PUBLISH", CHANNEL, "\3L" .. head)
    ask_until(on_a, "count room:f", "count 0")
    assert.are.equal("events join:room:f:eve,leave:room:f:eve",
                     ask(on_a, "events"))
    close_all { on_a }
  end)

  it("drops the members a whole list of their process leaves out",
     function()
    local on_a = connected(a)
    ask(on_a, "events")
    local head = be(0x2122232425262728, 8) .. be(0x3132333435363738, 8)
    local function send(kind, n, name)
      local msg = "\3" .. kind .. head .. be(n, 8)
      if name then
        msg = msg .. be(6, 4) .. "room:g{" .. info_string("name")
          .. info_string(name) .. "}"
      end
      redis_call(redis_port, "PUBLISH", CHANNEL, msg)
    end
    -- eve and fay, told one by one, then in a whole list
    send("J", 1, "eve")
    send("J", 2, "fay")
    send("B", 1)
    send("J", 1, "eve")
    send("J", 2, "fay")
    send("E", 1)
    -- a list whose beginning was not heard drops nothing
    send("J", 1, "eve")
    send("E", 2)
    ask_until(on_a, "count room:g", "count 2")
    -- fay's leave was lost: the next whole list leaves her out
    send("B", 3)
    send("J", 1, "eve")
    send("E", 3)
    ask_until(on_a, "count room:g", "count 1")
    assert.are.equal("info {name=eve:string}", ask(on_a, "info room:g"))
    assert.are.equal("events join:room:g:eve,join:room:g:fay,"
                     .. "leave:room:g:fay", ask(on_a, "events"))
    send("L", 1)
    ask_until(on_a, "count room:g", "count 0")
    close_all { on_a }
  end)

  it("answers a request for its members with a whole list", function()
    local sub = assert(helper.connect(redis_port))
    assert(sub:send(resp_command("SUBSCRIBE", CHANNEL)))
    assert.are.same({ "subscribe", CHANNEL, 1 }, resp_reply(sub))
    local ann = connected(a)
    assert.are.equal("join true", ask(ann, "join room:h ann"))
    local head = be(0x4142434445464748, 8) .. be(0x5152535455565758, 8)
    redis_call(redis_port, "PUBLISH", CHANNEL, "\3S" .. head .. be(0, 8))
    -- every process answers with a whole list: B, its members, E (the
    -- same number); a's is ann's
    local lists = {}                  -- process -> what it sent since B
    local found = helper.wait_until(function()
      local msg = resp_reply(sub)[3]
      local kind, process = msg:sub(2, 2), msg:sub(3, 10)
      if kind == "B" then
        lists[process] = { "B", msg:sub(19, 26) }
      elseif lists[process] and kind == "J" then
        table.insert(lists[process], "J " .. msg:sub(31, 36))
      elseif lists[process] and kind == "E" then
        local list = lists[process]
        assert.are.equal(list[2], msg:sub(19, 26))
        lists[process] = nil
        return list[3] == "J room:h" and list
      end
    end, helper.scaled(5), 0)
    assert.is_truthy(found, "no whole list with ann")
    assert.are.equal(3, #found)
    sub:close()
    close_all { ann }
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

describe("presence when a node's link to Redis ends", function()
  local redis, redis_port, a, b

  setup(function()
    redis_port = helper.free_port()
    redis = helper.start_redis(redis_port)
    a = start_node(redis_port, nil, 1)
    b = start_node(redis_port)
  end)

  teardown(function()
    redis:stop()
    helper.stop_and_check(a)
    helper.stop_and_check(b)
  end)

  -- bob on node b, and a client of node a that saw him join.
  local function bob_seen_by_a(topic)
    local on_a, bob = connected(a), connected(b)
    ask(on_a, "events")
    assert.are.equal("join true", ask(bob, "join " .. topic .. " bob"))
    ask_until(on_a, "who " .. topic, "who bob@0")
    assert.are.equal("events join:" .. topic .. ":bob", ask(on_a, "events"))
    return on_a, bob
  end

  it("tells a leave of each other node's member when closed", function()
    local on_a, bob = bob_seen_by_a("room:c")
    assert.are.equal("bpclose", ask(on_a, "bpclose"))
    assert.are.equal("bp false", ask(on_a, "bp"))
    -- at once, not after presence_ttl: the list and the events agree
    assert.are.equal("who ", ask(on_a, "who room:c"))
    assert.are.equal("events leave:room:c:bob", ask(on_a, "events"))
    -- this node's own members stay, and are told of nobody else
    assert.are.equal("join true", ask(on_a, "join room:c ann"))
    assert.are.equal("who ann@0", ask(on_a, "who room:c"))
    assert.are.equal("events join:room:c:ann", ask(on_a, "events"))
    close_all { on_a, bob }
    helper.stop_and_check(a)
  end)

  it("tells a leave of each other node's member at shutdown", function()
    a:stop()                          -- stopped already, unless it failed
    a = start_node(redis_port, nil, 1)
    local on_a, bob = bob_seen_by_a("room:s")
    close_all { on_a }
    helper.stop_and_check(a)
    local said = {}
    for line in a:log():gmatch("presence (%S+)") do said[#said + 1] = line end
    assert.are.same({ "join:room:s:bob", "leave:room:s:bob" }, said)
    close_all { bob }
  end)

  it("tells every leave when a leave's handler closes the backplane",
     function()
    a:stop()
    a = start_node(redis_port)
    local on_a = connected(a)
    assert.are.equal("closeonleave", ask(on_a, "closeonleave"))
    -- members of two other processes, which then fall silent
    for i, name in ipairs { "eve", "fay" } do
      local head = be(i, 8) .. be(100 + i, 8) .. be(1, 8)
      redis_call(redis_port, "PUBLISH", CHANNEL, "\3J" .. head .. be(6, 4)
                 .. "room:x{" .. info_string("name") .. info_string(name)
                 .. "}")
    end
    -- after presence_ttl the first is dropped; its leave's handler
    -- closes the backplane, which drops the other there and then
    ask_until(on_a, "count room:x", "count 0", TTL * 4)
    assert.are.equal("bp false", ask(on_a, "bp"))
    local events = ask(on_a, "events")
    assert.is_truthy(events == "events join:room:x:eve,join:room:x:fay,"
                     .. "leave:room:x:eve,leave:room:x:fay" or
                     events == "events join:room:x:eve,join:room:x:fay,"
                     .. "leave:room:x:fay,leave:room:x:eve", events)
    close_all { on_a }
    helper.stop_and_check(a)
  end)

  -- Last: the Redis started again inherits the clients' sockets, whose
  -- close then does not reach the servers until it stops.
  it("tells the leaves when the link is lost, and the joins when it is "
     .. "back", function()
    a:stop()
    a = start_node(redis_port, nil, 1)
    local on_a, bob = bob_seen_by_a("room:l")
    redis:kill("KILL")
    redis:stop()
    ask_until(on_a, "bp", "bp false")
    -- bob's node is silent: gone after presence_ttl, with its leave
    ask_until(on_a, "who room:l", "who ", TTL * 4)
    assert.are.equal("events leave:room:l:bob", ask(on_a, "events"))
    redis = helper.start_redis(redis_port)
    ask_until(on_a, "who room:l", "who bob@0", 15)
    assert.are.equal("events join:room:l:bob", ask(on_a, "events"))
    close_all { on_a, bob }
  end)
end)

describe("presence when a node closes its backplane", function()
  -- long: what is dropped within a fraction of it was told, not expired
  local LONG = helper.scaled(30)
  local redis, redis_port, a, b

  setup(function()
    redis_port = helper.free_port()
    redis = helper.start_redis(redis_port)
    b = start_node(redis_port, nil, nil, LONG)
  end)

  teardown(function()
    if a then a:stop() end
    b:stop()
    redis:stop()
    helper.stop_and_check(b)
  end)

  -- ann and amy present on node a (workers: one on each), as node b's
  -- client on_b sees; returns on_b and ann's and amy's clients.
  local function members_on_a(topic, workers)
    if a then a:stop() end
    a = start_node(redis_port, workers, nil, LONG)
    local on_b = connected(b)
    ask(on_b, "events")
    local ann, amy
    if workers then ann, amy = on_worker(a, 1), on_worker(a, 2)
    else ann, amy = client(a), client(a) end
    for _, ws in ipairs { ann, amy } do ask_until(ws, "bp", "bp true", 10) end
    assert.are.equal("join true", ask(ann, "join " .. topic .. " ann"))
    assert.are.equal("join true", ask(amy, "join " .. topic .. " amy"))
    ask_until(on_b, "count " .. topic, "count 2")
    assert.are.equal("join:" .. topic .. ":amy,join:" .. topic .. ":ann",
                     sorted_events(on_b))
    return on_b, ann, amy
  end

  -- on_b hears both leave at once, long before presence_ttl.
  local function told_leaves(on_b, topic, since)
    ask_until(on_b, "count " .. topic, "count 0", LONG / 6)
    assert.is_true(socket.gettime() - since < LONG / 3)
    assert.are.equal("leave:" .. topic .. ":amy,leave:" .. topic .. ":ann",
                     sorted_events(on_b))
  end

  it("tells the others its members leave on bp:close()", function()
    local on_b, ann, amy = members_on_a("room:q")
    local since = socket.gettime()
    assert.are.equal("bpclose", ask(ann, "bpclose"))
    told_leaves(on_b, "room:q", since)
    -- still present on node a itself, which stopped telling anyone
    assert.are.equal("count 2", ask(amy, "count room:q"))
    close_all { on_b, ann, amy }
    helper.stop_and_check(a)
  end)

  -- a's members (of `workers` worker processes) are told gone to b
  -- when a shuts down
  local function leaves_at_shutdown(topic, workers)
    local on_b, ann, amy = members_on_a(topic, workers)
    local since = socket.gettime()
    a:kill("TERM")
    close_all { ann, amy }          -- the last leaves, as the node stops
    told_leaves(on_b, topic, since)
    helper.wait_until(function() return a:exited() end, LONG)
    helper.stop_and_check(a)
    close_all { on_b }
  end

  it("tells the others its members leave at shutdown", function()
    leaves_at_shutdown("room:t")
  end)

  it("tells the others every worker's members leave at shutdown",
     function()
    leaves_at_shutdown("room:u", 2)
  end)
end)
