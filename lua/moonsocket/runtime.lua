-- moonsocket.runtime: coroutines that wait on the loop.  Timer
-- callbacks and threads run in coroutines taken from a pool; any
-- coroutine moonsocket runs (these, and function handlers) may wait:
-- sleep, join a thread, take from a queue.  A wait yields; what it
-- waits for resumes it (wake), and the loop serves everyone meanwhile.
local core = require "moonsocket.core"

local co_close = coroutine.close
local co_create = coroutine.create
local co_resume = coroutine.resume
local co_running = coroutine.running
local co_yield = coroutine.yield
local error = error
local format = string.format
local pack = table.pack
local pairs = pairs
local setmetatable = setmetatable
local tostring = tostring
local traceback = debug.traceback
local type = type
local unpack = table.unpack
local xpcall = xpcall

local timer = core.timer
local core_wait, core_wake = core.wait, core.wake
local running_handler = core.running_handler

local _M = { _VERSION = "0.1.0" }

local IDLE = {}           -- what a pooled coroutine yields between tasks
local POOL_MAX = 64       -- idle coroutines kept for the next task

local managed = setmetatable({}, { __mode = "k" })  -- ours: co -> true
local handlers = setmetatable({}, { __mode = "k" }) -- handler co -> ws
local waiting = setmetatable({}, { __mode = "k" })  -- co -> how to stop
local pool, npool = {}, 0

------------------------------------------------------------------------
-- Waiting and waking
------------------------------------------------------------------------

local WHERE = " waits only in a coroutine moonsocket runs (a function "
  .. "handler, a timer callback, a thread, middleware); in a callback "
  .. "handler or outside run() it would stop the loop"

-- The running coroutine when it is one that may wait, else nil.
local function can_wait()
  local co, main = co_running()
  if not main then
    if managed[co] then return co end
    local ws = running_handler()
    if ws then
      handlers[co] = ws
      return co
    end
  end
  return nil
end
_M.can_wait = can_wait

-- The running coroutine, which must be one that may wait: else raises
-- naming what wanted to wait, at the caller's caller.
local function waiter(what)
  local co = can_wait()
  if co then return co end
  error(what .. WHERE, 3)
end
_M.waiter = waiter

-- Wait until wake(co, ...): returns wake's values.  stop, a timer or a
-- function, is what ends the wait early when the thread is cancelled.
local function wait(co, stop)
  waiting[co] = stop or true
  if managed[co] then return co_yield() end
  return core_wait()
end
_M.wait = wait

-- Resume a managed co; back to the pool when its task has ended.
local function resume(co, ...)
  local ok, res = co_resume(co, ...)
  if ok and res == IDLE and npool < POOL_MAX then
    npool = npool + 1
    pool[npool] = co
  end
end

-- Resume co with ... if it still waits; once only.
local function wake(co, ...)
  if not waiting[co] then return end
  waiting[co] = nil
  if not managed[co] then return core_wake(handlers[co], ...) end
  resume(co, ...)
end
_M.wake = wake

------------------------------------------------------------------------
-- Running tasks in pooled coroutines
------------------------------------------------------------------------

-- A pooled coroutine: runs a task, yields IDLE, runs the next.  Tasks
-- catch their own errors.
local function worker(fn, ...)
  fn(...)
  return worker(co_yield(IDLE))
end

-- Run fn(...) in a coroutine that may wait; returns once it has ended
-- or waits.
local function run(fn, ...)
  local co
  if npool > 0 then
    co, pool[npool], npool = pool[npool], nil, npool - 1
  else
    co = co_create(worker)
    managed[co] = true
  end
  resume(co, fn, ...)
end
_M.run = run

-- coroutine(fn): a coroutine of fn that may wait, as the pool's do
-- (the request pipeline keeps its own).
function _M.coroutine(fn)
  local co = co_create(fn)
  managed[co] = true
  return co
end

local function report(what, ok, err)
  if not ok then
    core.log("error", format("error in %s: %s", what, tostring(err)))
  end
  return ok
end

-- What a timer runs: the callback, its error logged.
local function timer_task(fn, ...)
  report("timer callback", xpcall(fn, traceback, ...))
end

------------------------------------------------------------------------
-- Timers and sleep
------------------------------------------------------------------------

local function check_seconds(fname, seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 then
    error(format("bad argument #1 to '%s' (seconds expected, got %s)",
                 fname, type(seconds) == "number" and tostring(seconds)
                 or type(seconds)), 3)
  end
end

local function check_fn(fname, fn)
  if type(fn) ~= "function" then
    error(format("bad argument #2 to '%s' (function expected, got %s)",
                 fname, type(fn)), 3)
  end
end

-- after(seconds, fn, ...): fn(...) once, in its own coroutine.
function _M.after(seconds, fn, ...)
  check_seconds("after", seconds)
  check_fn("after", fn)
  return timer(seconds, 0, run, timer_task, fn, ...)
end

-- every(seconds, fn, ...): fn(...) every seconds until cancelled.
function _M.every(seconds, fn, ...)
  check_seconds("every", seconds)
  if seconds <= 0 then
    error("bad argument #1 to 'every' (a period above 0 expected)", 2)
  end
  check_fn("every", fn)
  return timer(seconds, seconds, run, timer_task, fn, ...)
end

-- sleep(seconds): the running coroutine waits; the loop goes on.
function _M.sleep(seconds)
  check_seconds("sleep", seconds)
  local co = waiter("sleep()")
  wait(co, timer(seconds, 0, wake, co))
end

------------------------------------------------------------------------
-- Threads
------------------------------------------------------------------------

local thread_mt = { __name = "moonsocket.thread" }
thread_mt.__index = thread_mt

function thread_mt:__tostring()
  return format("moonsocket.thread (%s): %p", self.status, self)
end

-- The thread ended: tell those that join it.
local function settle(th, status, ...)
  th.status, th.co = status, nil
  th.results = pack(...)
  local joiners = th.joiners
  th.joiners = nil
  for i = 1, joiners and #joiners or 0 do
    if status == "done" then wake(joiners[i], true, ...)
    else wake(joiners[i], nil, ...) end
  end
end

local function thread_task(th, fn, ...)
  th.co = co_running()
  local function finish(ok, ...)
    if not th.co then return end          -- cancelled meanwhile
    if report("thread", ok, ...) then settle(th, "done", ...)
    else settle(th, "failed", ...) end
  end
  finish(xpcall(fn, traceback, ...))
end

-- spawn(fn, ...): run fn(...) as a light thread, now until it waits.
function _M.spawn(fn, ...)
  check_fn("spawn", fn)
  local th = setmetatable({ status = "running" }, thread_mt)
  run(thread_task, th, fn, ...)
  return th
end

-- thread:join(): wait for it to end; true and its results, or nil and
-- its error ("cancelled" when it was).
function thread_mt:join()
  local st = self.status
  if st == "running" then
    local co = waiter("join()")
    local joiners = self.joiners or {}
    self.joiners = joiners
    joiners[#joiners + 1] = co
    return wait(co, function()
      for i = #joiners, 1, -1 do
        if joiners[i] == co then table.remove(joiners, i) end
      end
    end)
  end
  local r = self.results
  if st == "done" then return true, unpack(r, 1, r.n) end
  return nil, r[1]
end

-- thread:cancel(): end it where it waits (its to-be-closed variables
-- are closed); true, or false when it had ended already.
function thread_mt:cancel()
  local co = self.co
  if self.status ~= "running" or not co then return false end
  if co == co_running() then
    error("a thread cannot cancel itself: return from it instead", 2)
  end
  local stop = waiting[co]
  waiting[co] = nil
  if type(stop) == "function" then stop()
  elseif stop ~= true and stop ~= nil then stop:cancel() end
  co_close(co)
  settle(self, "cancelled", "cancelled")
  return true
end

------------------------------------------------------------------------
-- Queues
------------------------------------------------------------------------

local queue_mt = { __name = "moonsocket.queue" }
queue_mt.__index = queue_mt

-- queue(): a first-in first-out queue between coroutines.
function _M.queue()
  return setmetatable({ first = 1, last = 0, getters = {} }, queue_mt)
end

function queue_mt:__len()
  return self.last - self.first + 1
end

-- q:put(value): hand value to the first waiting get, else keep it.
function queue_mt:put(value)
  if value == nil then
    error("bad argument #1 to 'put' (a value expected, got nil)", 2)
  end
  local getters = self.getters
  local g = getters[1]
  if g then
    table.remove(getters, 1)
    if g.timer then g.timer:cancel() end
    wake(g.co, value)
    return
  end
  self.last = self.last + 1
  self[self.last] = value
end

local function expire(q, g)
  local getters = q.getters
  for i = 1, #getters do
    if getters[i] == g then
      table.remove(getters, i)
      break
    end
  end
  wake(g.co, nil, "timeout")
end

-- q:get(timeout): the first value, waiting for one up to timeout
-- seconds (for ever without); nil, "timeout" when none came.
function queue_mt:get(timeout)
  if self.last >= self.first then
    local value = self[self.first]
    self[self.first] = nil
    self.first = self.first + 1
    return value
  end
  if timeout ~= nil then check_seconds("get", timeout) end
  if timeout == 0 then return nil, "timeout" end
  local g = { co = waiter("get()") }
  local getters = self.getters
  getters[#getters + 1] = g
  if timeout then g.timer = timer(timeout, 0, expire, self, g) end
  return wait(g.co, function()
    for i = #getters, 1, -1 do
      if getters[i] == g then table.remove(getters, i) end
    end
    if g.timer then g.timer:cancel() end
  end)
end

------------------------------------------------------------------------
-- Positions of a worker's publishes
------------------------------------------------------------------------

-- With workers, a publish to a topic with history goes to the master,
-- which gives its position (with the backplane, Redis does); the core
-- tells done() when it is back, or why it failed.  A
-- coroutine that may wait waits for it meanwhile (the loop serves on);
-- another caller gets 0 at once and no position.  The publishing ws is
-- kept here until then: its message must still skip it.
local publishes = {}      -- request -> { co = waiting or nil, ws = }
local NO_POSITION = "the master process did not give a position"

local function await_position(request, ws)
  local p = { ws = ws }
  publishes[request] = p
  local co = can_wait()
  if not co then return 0 end
  p.co = co
  return wait(co, function() p.co = nil end)
end

local function position_done(request, n, position, why)
  local p = publishes[request]
  if not p then return end
  publishes[request] = nil
  if not p.co then return end
  if n then wake(p.co, n, position)
  else wake(p.co, nil, why or NO_POSITION, "EUNAVAILABLE") end
end

-- A subscribe from a position this process did not keep (or to a topic
-- it has no position of) asks first: Redis with the backplane, the
-- master in a worker.  A coroutine that may wait waits for the answer
-- (the core then subscribes from what it has); another caller goes on,
-- unless it gave the core a later: a function that subscribes and tells
-- the app's ready, run here when the answer has come (returns true).
-- One read may serve several subscribes.
local recoveries = {}     -- request -> { waiting coroutine = true }
local laters = {}         -- request -> { later, ... } in their order

local function await_recovery(request, later)
  local co = can_wait()
  if not co then
    if not later then return false end
    local list = laters[request]
    if not list then
      list = {}
      laters[request] = list
    end
    list[#list + 1] = later
    return true
  end
  local waiters = recoveries[request]
  if not waiters then
    waiters = {}
    recoveries[request] = waiters
  end
  waiters[co] = true
  wait(co, function() waiters[co] = nil end)
end

local function recovery_done(request)
  local list = laters[request]
  if list then
    laters[request] = nil
    for i = 1, #list do report("subscribe", xpcall(list[i], traceback)) end
  end
  local waiters = recoveries[request]
  if not waiters then return end
  recoveries[request] = nil
  for co in pairs(waiters) do wake(co) end
end

core.publish_hooks(await_position, position_done, await_recovery,
                   recovery_done)

------------------------------------------------------------------------
-- The process's life: start and stop hooks
------------------------------------------------------------------------

local starts, stops = {}, {}
local started = false

-- on_start(fn): fn(worker) when the process begins to serve (each
-- worker after its fork, or the one process), in its own coroutine.
function _M.on_start(fn)
  check_fn("on_start", fn)
  starts[#starts + 1] = fn
end

-- on_stop(fn): fn(worker) when a graceful shutdown begins, in a process
-- that started.
function _M.on_stop(fn)
  check_fn("on_stop", fn)
  stops[#stops + 1] = fn
end

local function hook_task(what, fn, worker)
  report(what, xpcall(fn, traceback, worker))
end

-- Shutting down: threads waiting in moonsocket's waits end (their
-- to-be-closed variables are closed), as no timer will wake them.
local function end_threads()
  for co, stop in pairs(waiting) do
    if managed[co] then
      waiting[co] = nil
      if type(stop) == "function" then stop() end
      co_close(co)
    end
  end
end

core.hooks(function(worker)
  started = true
  for i = 1, #starts do run(hook_task, "start hook", starts[i], worker) end
end, function(worker)
  end_threads()
  if not started then return end
  for i = 1, #stops do run(hook_task, "stop hook", stops[i], worker) end
end)

return _M
