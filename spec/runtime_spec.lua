-- spec/runtime_spec.lua: timers, sleep, light threads and queues
-- (moonsocket.after, every, sleep, spawn, queue), coroutine handlers
-- that wait, and the process's start and stop hooks.

local helper = require "helper"

local TEXT = helper.TEXT
local now = require("socket").gettime

-- Runs code as a script with the runner; returns its output, status.
local function script(code)
  return helper.run_script("local moonsocket = require 'moonsocket'\n"
                           .. code)
end

local said = helper.said

local SAY = "local function say(...) io.stdout:write('> ', "
  .. "table.concat({ ... }, ' '), '\\n') io.stdout:flush() end\n"

describe("timers", function()
  it("after runs once, with its arguments, and may sleep", function()
    local out, status = script(SAY .. [[
      local t = moonsocket.after(0.05, function(a, b)
        say("fired", a, b)
        moonsocket.sleep(0.02)
        say("slept")
        moonsocket.shutdown()
      end, "one", "two")
      say(tostring(t):match("^moonsocket.timer %(armed, in [%d.]+ s%)")
          and "armed" or tostring(t), tostring(t:armed()))
      moonsocket.run()
      say(tostring(t:armed()), tostring(t:cancel()))
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({ "armed true", "fired one two", "slept",
                      "false false" }, said(out))
  end)

  it("every runs until cancelled; an error is logged, and it goes on",
     function()
    local out, status = script(SAY .. [[
      local n = 0
      local t
      t = moonsocket.every(0.01, function()
        n = n + 1
        if n == 2 then error("tick failed on purpose") end
        if n == 4 then
          say("cancel", tostring(t:cancel()))
          moonsocket.after(0.05, moonsocket.shutdown)
        end
      end)
      moonsocket.run()
      say("ticks", n)
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({ "cancel true", "ticks 4" }, said(out))
    assert.matches("error in timer callback: [^\n]*tick failed on purpose",
                   out)
    assert.matches("stack traceback", out)
  end)

  it("a timer nobody holds still fires; one cancelled does not", function()
    local out, status = script(SAY .. [[
      moonsocket.after(0.05, function() say("kept") end)
      local dropped = moonsocket.after(0.03, function() say("cancelled") end)
      dropped:cancel()
      collectgarbage()
      collectgarbage()
      moonsocket.after(0.1, moonsocket.shutdown)
      moonsocket.run()
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({ "kept" }, said(out))
  end)

  it("a timer in a <close> variable is cancelled with its scope", function()
    local out, status = script(SAY .. [[
      do
        local t <close> = moonsocket.after(0.02, function() say("fired") end)
      end
      moonsocket.after(0.08, moonsocket.shutdown)
      moonsocket.run()
      say("done")
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({ "done" }, said(out))
  end)

  it("fires on time, to the millisecond's scale", function()
    local out, status = script(SAY .. [[
      local start = moonsocket.core.now()
      moonsocket.after(0.05, function()
        say(string.format("%.3f", moonsocket.core.now() - start))
        moonsocket.shutdown()
      end)
      moonsocket.run()
    ]])
    assert.are.equal(0, status, out)
    local took = tonumber(said(out)[1])
    assert.is_true(took >= 0.049 and took < helper.scaled(0.2), took)
  end)

  it("raises on bad arguments", function()
    local out, status = script(SAY .. [[
      for _, call in ipairs {
        function() moonsocket.after(-1, print) end,
        function() moonsocket.after(1, 42) end,
        function() moonsocket.every(0, print) end,
        function() moonsocket.sleep("soon") end,
      } do say((select(2, pcall(call)):gsub("^[^:]+:%d+: ", ""))) end
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({
      "bad argument #1 to 'after' (seconds expected, got -1)",
      "bad argument #2 to 'after' (function expected, got number)",
      "bad argument #1 to 'every' (a period above 0 expected)",
      "bad argument #1 to 'sleep' (seconds expected, got string)",
    }, said(out))
  end)

  it("are cancelled by a shutdown, so the process exits", function()
    local out, status = script(SAY .. [[
      moonsocket.every(0.01, function() end)
      moonsocket.after(3600, function() say("never") end)
      moonsocket.after(0.05, function() moonsocket.shutdown() end)
      moonsocket.run()
      say("exited")
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({ "exited" }, said(out))
  end)
end)

describe("sleep", function()
  it("raises where it cannot wait, saying where it can", function()
    local out, status = script(SAY .. [[
      local ok, err = pcall(moonsocket.sleep, 0.01)
      say(tostring(ok), (err:gsub("^[^:]+:%d+: ", "")))
      local co = coroutine.wrap(function() return pcall(moonsocket.sleep, 0) end)
      say(tostring(co()))
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({ "false sleep() waits only in a coroutine moonsocket "
      .. "runs (a function handler, a timer callback, a thread, "
      .. "middleware); in a callback handler or outside run() it would "
      .. "stop the loop", "false" }, said(out))
  end)
end)

describe("threads", function()
  it("spawn runs at once until it waits; join gives its results",
     function()
    local out, status = script(SAY .. [[
      local th = moonsocket.spawn(function(a)
        say("running", a)
        moonsocket.sleep(0.02)
        return a * 2, "done"
      end, 21)
      say("spawned", th.status)
      moonsocket.spawn(function()
        say("joined", tostring((th:join())), select(2, th:join()))
        local bad = moonsocket.spawn(function() error("thread failed") end)
        local ok, err = bad:join()
        say(tostring(ok), tostring(err:match("thread failed") ~= nil))
        moonsocket.shutdown()
      end)
      moonsocket.run()
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({ "running 21", "spawned running", "joined true 42 done",
                      "nil true" }, said(out))
    assert.matches("error in thread: [^\n]*thread failed", out)
  end)

  it("cancel ends a waiting thread and closes its <close> variables",
     function()
    local out, status = script(SAY .. [[
      local th = moonsocket.spawn(function()
        local guard <close> = setmetatable({}, {
          __close = function() say("closed") end })
        moonsocket.sleep(3600)
        say("never")
      end)
      moonsocket.spawn(function()
        moonsocket.sleep(0.02)
        say("cancel", tostring(th:cancel()), tostring(th:cancel()))
        say("join", tostring(select(2, th:join())), th.status)
        moonsocket.shutdown()
      end)
      moonsocket.run()
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({ "closed", "cancel true false", "join cancelled cancelled" },
                    said(out))
  end)
end)

describe("queues", function()
  it("hand values over in order, and get waits or times out", function()
    local out, status = script(SAY .. [[
      local q = moonsocket.queue()
      q:put("a")
      q:put("b")
      moonsocket.spawn(function()
        say(q:get(), q:get(), #q)
        local start = moonsocket.core.now()
        local v, err = q:get(0.05)
        say(tostring(v), err, tostring(moonsocket.core.now() - start >= 0.045))
        say("got", q:get())              -- waits for the timer's put
        say(tostring(q:get(0)))
        moonsocket.shutdown()
      end)
      moonsocket.after(0.1, function() q:put("late") end)
      moonsocket.run()
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({ "a b 0", "nil timeout true", "got late", "nil" },
                    said(out))
  end)
end)

describe("coroutine handlers that wait", function()
  local server = helper.with_server("spec/apps/runtime.lua")

  it("sleep, while the loop serves other sockets", function()
    local sleeper = assert(helper.ws_connect(server.port, "/sleep"))
    local other = assert(helper.ws_connect(server.port, "/echo"))
    assert.is_true(sleeper:send_text("0.5"))
    helper.sleep(0.05)
    local start = now()
    assert.is_true(other:send_text("hi"))
    assert.are.same({ TEXT, "hi" }, { other:recv_message() })
    assert.is_true(now() - start < 0.2, "the echo waited for the sleep")
    assert.are.same({ TEXT, "slept 0.5" }, { sleeper:recv_message() })
    sleeper:abort()
    other:abort()
  end)

  it("receive with a timeout returns nil, 'timeout' and stays open",
     function()
    local ws = assert(helper.ws_connect(server.port, "/recv"))
    assert.are.same({ TEXT, "timeout open" }, { ws:recv_message() })
    assert.is_true(ws:send_text("x"))
    assert.are.same({ TEXT, "got x" }, { ws:recv_message() })
    ws:close(1000)
    assert.are.equal(1000, ws:expect_close())
    ws:abort()
  end)

  it("sleep in a callback handler raises", function()
    local ws = assert(helper.ws_connect(server.port, "/callback"))
    assert.is_true(ws:send_text("x"))
    local opcode, text = ws:recv_message()
    assert.are.equal(TEXT, opcode)
    assert.matches("^false [^\n]*sleep%(%) waits only in a coroutine", text)
    ws:abort()
  end)
end)

describe("with workers", function()
  it("a client made while the script loads is the master's alone",
     function()
    local echo = helper.start_server("spec/apps/echo.lua")
    local out, status = script(SAY .. string.format([[
      local app = moonsocket.app {}
      assert(app:listen { port = 0, workers = 2 })
      moonsocket.connect("ws://127.0.0.1:%d/ws", { handler = {
        open = function(ws)
          say("open", tostring(moonsocket.worker()))
          ws:send("hi")
        end,
        message = function(_, m)
          say("got", m, tostring(moonsocket.worker()))
          os.execute("kill -TERM $PPID")       -- the master stops
        end,
        close = function(_, code) say("closed", code, tostring(moonsocket.worker())) end,
      } })
      moonsocket.run()
    ]], echo.port))
    helper.stop_and_check(echo)
    assert.are.equal(0, status, out)
    assert.are.same({ "open nil", "got hi nil", "closed 1001 nil" },
                    said(out))
  end)
end)

describe("start and stop hooks", function()
  it("run once in the one process, and on shutdown", function()
    local out, status = script(SAY .. [[
      local app = moonsocket.app {}
      app:on_start(function(worker)
        say("start", tostring(worker))
        moonsocket.sleep(0.01)
        moonsocket.shutdown()
      end)
      app:on_stop(function(worker) say("stop", tostring(worker)) end)
      assert(app:listen { port = 0 })
      moonsocket.run()
    ]])
    assert.are.equal(0, status, out)
    assert.are.same({ "start nil", "stop nil" }, said(out))
  end)

  it("run in each worker; a timer made at load runs in the master only",
     function()
    local out, status = script(SAY .. [[
      local app = moonsocket.app {}
      local ticks = 0
      moonsocket.every(0.02, function()
        ticks = ticks + 1
        if ticks == 1 then say("load timer in", tostring(moonsocket.worker())) end
      end)
      app:on_start(function(worker)
        say("start", worker)
        moonsocket.after(0.1, function() say("worker timer", worker) end)
      end)
      assert(app:listen { port = 0, workers = 2 })
      moonsocket.after(0.5, function() os.execute("kill -TERM $PPID") end)
      moonsocket.run()
    ]])
    assert.are.equal(0, status, out)
    local lines = said(out)
    table.sort(lines)
    assert.are.same({ "load timer in nil", "start 1", "start 2",
                      "worker timer 1", "worker timer 2" }, lines)
  end)
end)
