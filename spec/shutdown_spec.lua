-- spec/shutdown_spec.lua: graceful shutdown, by app:shutdown or
-- SIGTERM: open sockets (idle, or in the middle of a message) closed
-- with 1001, what was queued delivered first, peers that have it all
-- (over TCP or TLS) not waited for, and the process exiting 0.
local helper = require "helper"
local socket = require "socket"

local TEXT, PONG = helper.TEXT, helper.PONG

-- TCP states of /proc/net/tcp (include/net/tcp_states.h)
local FIN_WAIT1 = 4

-- The server's end of the connection from client port `peer` to server
-- port `port`, as /proc/net/tcp shows it: its state, the bytes it has
-- sent that are not acknowledged, and its inode (0 once the server has
-- closed it and only the kernel holds it), or nil when there is none.
local function server_end(port, peer)
  for line in io.lines("/proc/net/tcp") do
    local lport, rport, st, tx, inode = line:match(
      "^%s*%d+:%s+%x+:(%x+)%s+%x+:(%x+)%s+(%x+)%s+(%x+):%x+%s+%S+%s+%S+"
      .. "%s+%d+%s+%d+%s+(%d+)")
    if lport and tonumber(lport, 16) == port
        and tonumber(rport, 16) == peer then
      return tonumber(st, 16), tonumber(tx, 16), tonumber(inode)
    end
  end
end

-- The exit status of a server that is shutting down, once it has
-- exited by itself: Server:stop's SIGTERM could land as it exits.
local function exit_status(server)
  helper.wait_until(function() return server:exited() end, helper.scaled(8))
  return server:stop()
end

-- The client port of a raw client.
local function client_port(ws)
  return tonumber((select(2, ws.sock:getsockname())))
end

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
    assert.are.equal(0, exit_status(server))
    helper.assert_clean_log(server)
  end)

  it("closes open sockets with 1001 on SIGTERM and exits 0", function()
    local server = helper.start_server("spec/apps/probe.lua", {})
    local a = assert(helper.ws_connect(server.port, "/ws"))
    local b = assert(helper.ws_connect(server.port, "/co"))
    server:kill("TERM")
    assert.are.equal(1001, a:expect_close())
    assert.are.equal(1001, b:expect_close())
    assert.are.equal(0, exit_status(server))
    helper.assert_clean_log(server)
  end)

  -- A peer that has all we sent, our FIN included, but never closes its
  -- end does not hold the exit: SIGTERM's 5 s, or close_timeout, would.
  it("exits at once on SIGTERM when a peer has all but never closes",
     function()
    local server = helper.start_server("spec/apps/probe.lua",
      { CLOSE_TIMEOUT = 10 })
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local started = socket.gettime()
    server:kill("TERM")
    local frame = assert(ws:read_frame())
    assert.are.same({ helper.CLOSE, true,
                      helper.close_payload(1001, "server shutting down") },
                    { frame.opcode, frame.fin, frame.payload })
    assert.is_true(ws:close(1001))       -- the closing handshake is done
    assert.are.same({ nil, "closed" }, { ws:recv(1) })   -- our FIN
    -- the socket stays open: the server closes its end all the same
    local exited = helper.wait_until(function() return server:exited() end,
                                     helper.scaled(3))
    local took = socket.gettime() - started
    assert.is_truthy(exited, "still running 3 s after SIGTERM:\n"
      .. server:log())
    -- before SIGTERM's own limit (5 s, not scaled) would end it
    assert.is_true(took < 4, ("exited %.2f s after SIGTERM"):format(took))
    assert.are.equal(0, server:stop())
    assert.matches('info close 127%.0%.0%.1 /ws %d+%.%d+s 1001 "" shutdown',
                   server:log())
    helper.assert_clean_log(server)
    ws:abort()
  end)

  -- The same over TLS: its close_notify is among what the peer has.
  it("exits at once on SIGTERM when a TLS peer has all but never closes",
     function()
    local dir, cert, key = helper.temp_cert("localhost")
    local server = helper.start_server("spec/apps/tls.lua",
      { CERT = cert, KEY = key })
    local out, status = helper.run_peer("tls_client.py",
      { server.port, "linger", server.pid })
    os.execute("rm -rf " .. helper.shell_quote(dir))
    assert.are.equal(0, status, out)
    assert.matches("^close 1001 server shutting down; close_notify; FIN\n"
      .. "exited after %d+%.%d+ s\n$", out)
    local took = tonumber(out:match("exited after (%S+) s"))
    assert.is_true(took < 4, out)    -- SIGTERM's own limit is 5 s
    assert.are.equal(0, exit_status(server))
    helper.assert_clean_log(server)
  end)

  -- A peer may still lose what it has not acknowledged, or, sending
  -- after our FIN, draw a reset that destroys what it has not read: such
  -- peers keep the shutdown waiting, as before, until SIGTERM's 5 s cut
  -- them off.
  it("waits on SIGTERM for a peer that has not acknowledged our bytes, "
     .. "or that sends after our FIN", function()
    local server = helper.start_server("spec/apps/probe.lua",
      { CLOSE_TIMEOUT = 10, MAX_BACKPRESSURE = 64 * 1048576 })
    local full = assert(helper.ws_connect(server.port, "/ws"))
    local talker = assert(helper.ws_connect(server.port, "/ws"))
    local full_port, talker_port = client_port(full), client_port(talker)
    full:send_text("flood:16:65536")    -- 1 MiB this end does not read
    full:close(1000)                     -- answered after the flood
    -- the server has written it all and half-closed: FIN_WAIT1, with
    -- bytes the full window of this end has not taken
    assert.is_truthy(helper.wait_until(function()
      local st, unacked = server_end(server.port, full_port)
      return st == FIN_WAIT1 and unacked > 0
    end), "the server did not half-close behind unacknowledged bytes")
    local started = socket.gettime()
    server:kill("TERM")
    assert.are.equal(helper.CLOSE, (assert(talker:read_frame())).opcode)
    assert.is_true(talker:close(1001))
    assert.are.same({ nil, "closed" }, { talker:recv(1) })   -- our FIN
    assert.is_true(talker:ping("still here"))    -- discarded, but read
    assert.is_nil(helper.wait_until(function() return server:exited() end,
                                    2))
    local st, unacked, inode = server_end(server.port, full_port)
    assert.are.same({ FIN_WAIT1, true, true },
                    { st, unacked > 0, inode > 0 })
    inode = select(3, server_end(server.port, talker_port))
    assert.is_true(inode > 0, "the talker's socket was closed")
    assert.is_truthy(helper.wait_until(function() return server:exited() end,
                                       helper.scaled(8)), server:log())
    local took = socket.gettime() - started
    assert.is_true(took > 4.5, ("exited %.2f s after SIGTERM"):format(took))
    assert.are.equal(0, server:stop())
    helper.assert_clean_log(server)
    full:abort()
    talker:abort()
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
        assert.are.equal(0, exit_status(server), server:log())
        helper.assert_clean_log(server)
        idle:abort()
        busy:abort()
      end)
  end)
end
