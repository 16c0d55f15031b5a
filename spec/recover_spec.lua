-- spec/recover_spec.lua: 1,000 clients of a topic with history drop and
-- come back at once with the positions they last saw, round after round,
-- while a publisher runs at full speed; each must get every message
-- after its position once and in order, then the live ones until the
-- publisher stops (bench/loadgen recover against bench/apps/recovery.lua:
-- `make -C bench loadgen` first).

local helper = require "helper"

-- Under valgrind (MOONSOCKET_WRAPPER) two rounds instead of five.
local SLOW = os.getenv("MOONSOCKET_WRAPPER") ~= nil
local CLIENTS = 1000
local ROUNDS = SLOW and 2 or 5
-- The publisher is never more than WINDOW messages ahead of the slowest
-- live client, nor twice as many ahead of the position one that is away
-- left at: a bound on what the server queues, which a reconnection of
-- all of them does not reach here, and room to publish while they come
-- back.  The room keeps four times WINDOW.  All 1,000
-- come back at once (-j): within the kernel's listen queue
-- (net.core.somaxconn, 4096 by default).
local WINDOW = 1000

-- The sockets subscribed to the room (of the process that answers), asked
-- at /ws.
local function subscribers(port)
  local ws = assert(helper.ws_connect(port, "/ws"))
  local count = tonumber(helper.ask(ws, "count"):match("^count (%d+)$"))
  ws:abort()
  return count
end

-- Runs loadgen recover against server: CLIENTS clients, all coming back
-- at once, rounds times, the publisher at most window messages ahead of
-- a live one (2 * window of one away); path the app's
-- (bench/apps/recovery.lua).  Asserts that every client
-- recovered exactly each time and had every message up to the last one
-- published, and that the publisher ran while they came back.
local function recover(server, path, window, rounds)
  local kv, err, status = helper.loadgen(server, { "recover", "-u", path,
    "-c", CLIENTS, "-j", CLIENTS, "-d", window, "--lead", 2 * window,
    "-n", window, "--rounds", rounds })
  assert.are.same({ status = 0, errors = 0, clients = CLIENTS,
    ok = CLIENTS, rounds = rounds, recovered = CLIENTS * rounds },
    { status = status, errors = kv.errors, clients = kv.clients,
      ok = kv.ok, rounds = kv.rounds, recovered = kv.recovered }, err)
  -- they missed messages published after the drop, and the server
  -- answered their subscribes while publishes were under way
  assert.is_true(kv.publishes_during > 0, err)
  assert.is_true(kv.overlapped > 0, err)
  assert.is_true(kv.amid > 0, err)
  assert.is_true(kv.final > (rounds + 1) * window, err)
end

describe("recovery while a publisher runs", function()
  local server

  setup(function()
    server = helper.start_server("bench/apps/recovery.lua",
      { HISTORY = 4 * WINDOW }, { nofile = CLIENTS + 1000 })
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  it(("%d clients drop and recover %d times, with no gap and no "
    .. "duplicate"):format(CLIENTS, ROUNDS), function()
    recover(server, "/ws", WINDOW, ROUNDS)
    -- each subscription went with its socket
    assert.is_truthy(helper.wait_until(function()
      return subscribers(server.port) == 0
    end), "subscribers left")
  end)
end)

-- With workers = 2 the clients come back to either worker, which may not
-- have the position they bring yet: its subscribe (in a coroutine, /co)
-- waits for the master, and every publish waits for its position, so
-- the publisher is slower and the rounds fewer.
describe("recovery while a publisher runs, workers = 2", function()
  local server

  setup(function()
    server = helper.start_server("bench/apps/recovery.lua",
      { HISTORY = 4 * WINDOW, WORKERS = 2 }, { nofile = CLIENTS + 1000 })
    -- both workers listening (each has its socket on the port), so that
    -- the clients come to either
    local seen = {}
    assert(helper.wait_until(function()
      local ws = helper.ws_connect(server.port, "/ws")
      if ws then
        seen[helper.ask(ws, "pid")] = true
        ws:abort()
      end
      return seen["pid 1"] and seen["pid 2"]
    end, helper.scaled(30), 0.05), "both workers did not start")
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  it(("%d clients drop and recover on either worker"):format(CLIENTS),
     function()
    recover(server, "/co", 200, SLOW and 1 or 2)
  end)
end)
