-- spec/presence_spec.lua: ws:subscribe with presence, app:presence,
-- app:presence_count and app:on_presence, in one process and across
-- workers (spec/apps/presence.lua's protocol).

local helper = require "helper"

local ask, close_all = helper.ask, helper.close_all

local function client(port)
  return assert(helper.ws_connect(port, "/ws"))
end

-- Asks until the answer is want (what other workers hear comes through
-- the master, a moment later).
local function ask_until(ws, command, want)
  local got
  helper.wait_until(function()
    got = ask(ws, command)
    return got == want
  end, 5)
  assert.are.equal(want, got)
end

describe("presence, one process", function()
  local server, port

  setup(function()
    server = helper.start_server("spec/apps/presence.lua", {})
    port = server.port
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  it("lists, counts and tells who joins and leaves", function()
    local a, b, c = client(port), client(port), client(port)
    assert.are.equal("events ", ask(c, "events"))
    assert.are.equal("join true", ask(a, "join room:1 ann"))
    assert.are.equal("join true", ask(b, "join room:1 bob"))
    -- already subscribed: false, and no second presence
    assert.are.equal("join false", ask(b, "join room:1 bob2"))
    assert.are.equal("who ann@0,bob@0", ask(c, "who room:1"))
    assert.are.equal("count 2", ask(c, "count room:1"))
    assert.are.equal("count 0", ask(c, "count room:2"))
    assert.are.equal("who ", ask(c, "who room:2"))
    -- unsubscribing leaves; so does a dropped connection
    assert.are.equal("leave true", ask(a, "leave room:1"))
    b:abort()
    ask_until(c, "count room:1", "count 0")
    assert.are.equal("events join:room:1:ann,join:room:1:bob,"
                     .. "leave:room:1:ann,leave:room:1:bob",
                     ask(c, "events"))
    -- topics outside the handler's pattern are listed, not told
    assert.are.equal("join true", ask(a, "join lobby ann"))
    assert.are.equal("who ann@0", ask(c, "who lobby"))
    assert.are.equal("events ", ask(c, "events"))
    close_all { a, c }
  end)

  it("counts without making the list", function()
    local a, b, c = client(port), client(port), client(port)
    assert.are.equal("join true", ask(a, "join room:n ann"))
    assert.are.equal("join true", ask(b, "join room:n bob"))
    assert.are.equal("cost none", ask(c, "cost room:n count"))
    assert.are.equal("cost alloc", ask(c, "cost room:n list"))
    close_all { a, b, c }
  end)

  it("keeps the info table's strings, numbers, booleans and tables",
     function()
    local a = client(port)
    assert.are.equal("join true", ask(a, "joinwith room:info"))
    assert.are.equal("info {1=first:string;deep={list={1=1:integer;"
                     .. "2=2:integer;3=3:integer}};n=1.5:float;"
                     .. "name=n:string;no=false:boolean;yes=true:boolean}",
                     ask(a, "info room:info"))
    close_all { a }
  end)

  it("raises on info it cannot carry, subscribing to nothing", function()
    local a = client(port)
    ask(a, "events")
    assert.are.equal("bad false bad argument #2 to 'subscribe' (presence "
                     .. "must be a table, got string)",
                     ask(a, "bad room:bad string"))
    assert.are.equal("bad false bad argument #2 to 'subscribe' (presence "
                     .. "info holds a function (strings, numbers, booleans "
                     .. "and tables only))", ask(a, "bad room:bad fn"))
    assert.are.equal("bad false bad argument #2 to 'subscribe' (presence "
                     .. "info over 16384 bytes encoded)",
                     ask(a, "bad room:bad big"))
    assert.are.equal("count 0", ask(a, "count room:bad"))
    assert.are.equal("events ", ask(a, "events"))
    close_all { a }
  end)
end)

describe("presence with workers = 2", function()
  local server

  setup(function()
    server = helper.start_server("spec/apps/presence.lua", { WORKERS = 2 })
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  local function on_worker(w)
    for _ = 1, 400 do
      local ws = helper.ws_connect(server.port, "/ws")
      if ws and ask(ws, "pid") == "pid " .. w then return ws end
      if ws then ws:abort() end
      helper.sleep(0.02)                  -- forked or restarted soon
    end
    error("no connection reached worker " .. w .. "\n" .. server:log())
  end

  it("shows every worker's members in each, and their leaving", function()
    local a1, b2 = on_worker(1), on_worker(2)
    local c2 = on_worker(2)
    ask(a1, "events")
    ask(b2, "events")
    assert.are.equal("join true", ask(a1, "join room:w ann"))
    ask_until(b2, "who room:w", "who ann@1")
    assert.are.equal("join true", ask(b2, "join room:w bob"))
    ask_until(a1, "who room:w", "who ann@1,bob@2")
    ask_until(b2, "who room:w", "who ann@1,bob@2")
    assert.are.equal("count 2", ask(a1, "count room:w"))
    -- each worker's handler hears both
    assert.are.equal("events join:room:w:ann,join:room:w:bob",
                     ask(a1, "events"))
    assert.are.equal("events join:room:w:ann,join:room:w:bob",
                     ask(b2, "events"))
    b2:abort()
    ask_until(a1, "who room:w", "who ann@1")
    assert.are.equal("events leave:room:w:bob", ask(a1, "events"))
    -- a worker that dies takes its members with it, in the others too
    assert.are.equal("join true", ask(c2, "join room:w cat"))
    ask_until(a1, "who room:w", "who ann@1,cat@2")
    c2:send_text("die")
    ask_until(a1, "who room:w", "who ann@1")
    assert.are.equal("events join:room:w:cat,leave:room:w:cat",
                     ask(a1, "events"))
    -- the restarted worker knows who is there
    local d2 = on_worker(2)
    assert.are.equal("who ann@1", ask(d2, "who room:w"))
    assert.are.equal("count 1", ask(d2, "count room:w"))
    close_all { a1, d2 }
    c2:abort()
  end)
end)
