-- spec/workers_spec.lua: app:listen{ workers = N }: forked workers on one
-- port, restarted when they die, publishing to each other, stopped by
-- the master's SIGTERM.

local helper = require "helper"
local moonsocket = require "moonsocket"

local ask, close_all = helper.ask, helper.close_all

-- The child processes of pid (from /proc: no subprocess, which the
-- sanitizer runs would preload their runtime into).
local function children(pid)
  local f = io.open(("/proc/%d/task/%d/children"):format(pid, pid))
  local list = {}
  if f then
    for n in f:read("a"):gmatch("%d+") do list[#list + 1] = tonumber(n) end
    f:close()
  end
  table.sort(list)
  return list
end

-- Opens n clients subscribed to topic; returns them and, by worker
-- number, how many each worker serves.
local function subscribers(port, n, topic)
  local list, by_worker = {}, {}
  for i = 1, n do
    local ws = assert(helper.ws_connect(port))
    local pid, worker = ask(ws, "pid"):match("^pid (%d+) (%d+)$")
    assert.is_truthy(pid)
    by_worker[worker] = (by_worker[worker] or 0) + 1
    assert.are.equal("sub " .. topic .. " true", ask(ws, "sub " .. topic))
    list[i] = ws
  end
  return list, by_worker
end

describe("workers", function()
  local server

  setup(function()
    server = helper.start_server("spec/apps/pubsub.lua", { WORKERS = 2 })
    assert.is_true(helper.wait_until(function()
      return #children(server.pid) == 2
    end, 10), server:log())
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  it("shares the port between two worker processes", function()
    local list, by_worker = subscribers(server.port, 24, "spread")
    assert.are.same({ "1", "2" }, (function()
      local keys = {}
      for k in pairs(by_worker) do keys[#keys + 1] = k end
      table.sort(keys)
      return keys
    end)())
    close_all(list)
  end)

  it("delivers a publish to the subscribers of every worker once",
    function()
      local list = subscribers(server.port, 16, "all")
      local pub = assert(helper.ws_connect(server.port))
      -- app:publish counts the sockets of its own worker only
      local n = tonumber(ask(pub, "pub all to everyone"):match("^pub (%d+)$"))
      assert.is_true(n >= 1 and n < 16)
      for _, ws in ipairs(list) do
        assert.are.same({ helper.TEXT, "to everyone" }, { ws:recv_message() })
      end
      -- exactly once: the next frame each gets is the answer to its own
      -- question
      for _, ws in ipairs(list) do
        assert.are.equal("subscribed all true", ask(ws, "subscribed all"))
      end
      -- ws:publish reaches the other workers, not the sender
      assert.is_truthy(ask(list[1], "wspub all from one"):match("^wspub %d+$"))
      for i = 2, #list do
        assert.are.same({ helper.TEXT, "from one" }, { list[i]:recv_message() })
      end
      assert.are.equal("subscribed all true", ask(list[1], "subscribed all"))
      close_all(list)
      pub:close(1000) pub:expect_close() pub:abort()
    end)

  it("restarts a worker that dies, and keeps serving", function()
    local before = children(server.pid)
    assert.are.equal(2, #before)
    os.execute("kill -KILL " .. before[1])
    local after
    assert.is_true(helper.wait_until(function()
      after = children(server.pid)
      return #after == 2 and after[1] ~= before[1] and after[2] ~= before[1]
    end, 10), server:log())
    assert.is_truthy(server:log():find("killed by signal 9; restarting",
      1, true))
    -- both workers serve again: a publish reaches every subscriber
    local list, by_worker = subscribers(server.port, 24, "again")
    assert.is_truthy(by_worker["1"] and by_worker["2"])
    local pub = assert(helper.ws_connect(server.port))
    ask(pub, "pub again back")
    for _, ws in ipairs(list) do
      assert.are.same({ helper.TEXT, "back" }, { ws:recv_message() })
    end
    close_all(list)
    pub:close(1000) pub:expect_close() pub:abort()
  end)

  it("stops every worker on SIGTERM: sockets get 1001, exit 0", function()
    local list = subscribers(server.port, 8, "bye")
    local pids = children(server.pid)
    server:kill("TERM")
    for _, ws in ipairs(list) do
      assert.are.equal(1001, ws:expect_close())
      ws:abort()
    end
    assert.is_true(helper.wait_until(function()
      return server:exited() ~= nil
    end, 10), server:log())
    assert.are.equal(0, server:exited())
    for _, pid in ipairs(pids) do     -- gone, not even a zombie
      assert.is_nil(io.open("/proc/" .. pid .. "/stat"))
    end
    assert.is_truthy(server:log():find("every worker has exited", 1, true))
  end)
end)

describe("workers option", function()
  it("is checked by listen", function()
    local app = moonsocket.app()
    assert.has_error(function() app:listen { workers = 0 } end,
      "bad argument #1 to 'listen' (option 'workers' must be \"auto\" or "
      .. "an integer from 1 to 256)")
    assert.has_error(function() app:listen { workers = "many" } end,
      "bad argument #1 to 'listen' (option 'workers' must be \"auto\" or "
      .. "an integer from 1 to 256)")
  end)
end)
