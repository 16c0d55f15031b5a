-- spec/shutdown_spec.lua: graceful shutdown, by app:shutdown or
-- SIGTERM: open sockets (idle, or in the middle of a message) closed
-- with 1001, what was queued delivered first, and the process exiting 0.
local helper = require "helper"
local socket = require "socket"

local TEXT, PONG = helper.TEXT, helper.PONG

local APPS = { "spec/apps/echo.lua", "spec/apps/co_echo.lua" }

describe("shutdown", function()
  it("app:shutdown closes sockets with 1001 and the runner exits 0",
     function()
    local server = helper.start_server("spec/apps/policy.lua", {})
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local status, _, _, sock = helper.http(server.port,
      "GET /shutdown HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(200, status)
    sock:close()
    assert.are.equal(1001, ws:expect_close())
    assert.is_true(helper.wait_until(function()
      return server:exited() ~= nil
    end, 5))
    assert.are.equal(0, server:stop())
    assert.matches('info close 127%.0%.0%.1 /ws %d+%.%d+s 1001 "" shutdown',
                   server:log())
  end)

  it("delivers what was queued before the 1001 on SIGTERM", function()
    local server = helper.start_server("spec/apps/probe.lua",
      { MAX_BACKPRESSURE = 64 * 1048576 })
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("flood:24:1048576")       -- 24 MiB, not read yet
    helper.wait_until(function() return false end, 0.3)
    server:kill("TERM")
    for i = 1, 24 do
      local op, payload = ws:recv_message()
      assert.are.equal(helper.BINARY, op, "message " .. i)
      assert.are.equal(1048576, #payload)
    end
    assert.are.same({ TEXT, "flood done" }, { ws:recv_message() })
    assert.are.equal(1001, ws:expect_close())
    assert.are.equal(0, server:stop())
    helper.assert_clean_log(server)
  end)

  it("closes open sockets with 1001 on SIGTERM and exits 0", function()
    local server = helper.start_server("spec/apps/probe.lua", {})
    local a = assert(helper.ws_connect(server.port, "/ws"))
    local b = assert(helper.ws_connect(server.port, "/co"))
    server:kill("TERM")
    assert.are.equal(1001, a:expect_close())
    assert.are.equal(1001, b:expect_close())
    assert.are.equal(0, server:stop())
    helper.assert_clean_log(server)
  end)

  -- A reader on stdin (a FIFO that nobody closes) is a watcher that
  -- never ends: after the shutdown it must not keep the process going,
  -- whether the script ran the loop itself or left that to the runner.
  for _, form in ipairs({ "runner", "app" }) do
    it("exits 0 on SIGTERM with a core.reader open (run by the " .. form
       .. ")", function()
      local fifo = os.tmpname()
      os.remove(fifo)
      assert(os.execute("mkfifo " .. helper.shell_quote(fifo)))
      local server = helper.start_server("spec/apps/reader.lua",
        { RUN = form }, { stdin = fifo })
      local ws = assert(helper.ws_connect(server.port, "/ws"))
      local started = socket.gettime()
      server:kill("TERM")
      assert.are.equal(1001, ws:expect_close())
      ws:close(1001)                   -- the closing handshake is done
      ws:abort()
      local exited = helper.wait_until(function() return server:exited() end,
                                       helper.scaled(3))
      local took = socket.gettime() - started
      os.remove(fifo)
      assert.are.equal(0, server:stop(), server:log())
      assert.is_truthy(exited, "still running 3 s after SIGTERM:\n"
        .. server:log())
      assert.is_true(took < helper.scaled(3))
      if form == "app" then
        assert.matches("run%(%) returned", server:log())
      end
      helper.assert_clean_log(server)
    end)
  end
end)

for _, app in ipairs(APPS) do
  describe("shutdown (" .. app .. ")", function()
    it("closes every connection with 1001 on SIGTERM and exits 0",
      function()
        local server = helper.start_server(app)
        local idle = assert(helper.ws_connect(server.port))
        local busy = assert(helper.ws_connect(server.port))
        assert.is_true(busy:send_frame{ opcode = TEXT, fin = false,
          payload = "half a message" })
        assert.is_true(busy:ping("sync"))
        assert.are.same({ PONG, "sync" }, { busy:recv_message() })
        server:kill("TERM")
        assert.are.equal(1001, idle:expect_close())
        assert.are.equal(1001, busy:expect_close())
        helper.stop_and_check(server)
        idle:abort()
        busy:abort()
      end)
  end)
end
