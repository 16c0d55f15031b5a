-- spec/fanout_spec.lua: publishes reaching 10,000 subscribers of a topic
-- exactly once each (bench/loadgen fanout against bench/apps/fanout.lua:
-- `make -C bench loadgen` first), and a subscriber that never reads,
-- which is closed with 1008 without holding the others back.

local helper = require "helper"

local APP = "bench/apps/fanout.lua"
-- Under valgrind (MOONSOCKET_WRAPPER) a tenth as many, and fewer
-- readers beside the stuck subscriber, in the time the helpers' waits
-- are stretched by.
local SLOW = os.getenv("MOONSOCKET_WRAPPER") ~= nil
local SUBSCRIBERS = SLOW and 1000 or 10000
local READERS = SLOW and 5 or 20
local loadgen = helper.loadgen

-- The figures a run must show: every subscriber subscribed and had
-- every publish, no error of any kind.
local function outcome(kv, status)
  return { status = status, errors = kv.errors,
    subscribers = kv.subscribers, publishes = kv.publishes_total,
    deliveries = kv.deliveries_total }
end

-- The number of subscribers of the topic, by asking as a publisher.
local function subscribers(port)
  local ws = assert(helper.ws_connect(port))
  assert.is_true(ws:send_text("pub fanout"))
  local kind, reply = ws:recv_message()
  assert.are.equal(helper.TEXT, kind)
  ws:close(1000)
  ws:expect_close(1000)
  ws:abort()
  return tonumber(reply:match("^ok (%d+)$"))
end

describe("fan-out to many subscribers", function()
  local server

  setup(function()
    -- CLOSE_TIMEOUT: the socket that never reads keeps its close frame
    -- until the spec reads it
    server = helper.start_server(APP, { MAX_BACKPRESSURE = 65536,
      CLOSE_TIMEOUT = 60 }, { nofile = SUBSCRIBERS + 1000 })
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  it("every publish reaches each of " .. SUBSCRIBERS
    .. " subscribers exactly once, in order", function()
    -- 16 bytes: a frame copied to each subscriber; 1 KiB of text: one
    -- frame shared by all of them, UTF-8 checked once
    for _, shape in ipairs { { "-s", 16 }, { "-s", 1024, "-x" } } do
      local args = { "fanout", "-c", SUBSCRIBERS, "-n", 20, "-d", 4 }
      table.move(shape, 1, #shape, #args + 1, args)
      local kv, err, status = loadgen(server, args)
      assert.are.same({ status = 0, errors = 0, subscribers = SUBSCRIBERS,
        publishes = 20, deliveries = 20 * SUBSCRIBERS },
        outcome(kv, status), err)
      assert.are.equal(SUBSCRIBERS, kv.server_subscribers)
    end
    -- each subscription went with its socket
    assert.are.equal(0, subscribers(server.port))
  end)

  it("a subscriber that never reads is closed with 1008 and holds no one"
    .. " back", function()
    -- 1,000 publishes of 16 KiB: 16 MB each, past what the kernel holds
    -- for a socket that is not read, and 64 KiB more
    local args = { "fanout", "-c", READERS, "-n", 1000, "-d", 8, "-s",
      16384 }
    local want = { status = 0, errors = 0, subscribers = READERS,
      publishes = 1000, deliveries = 1000 * READERS }
    local alone, err, status = loadgen(server, args)
    assert.are.same(want, outcome(alone, status), err)

    local stuck = assert(helper.ws_connect(server.port))
    assert.is_true(stuck:send_text("sub fanout"))
    assert.are.same({ helper.TEXT, "ok" }, { stuck:recv_message() })
    local kv
    kv, err, status = loadgen(server, args)
    assert.are.same(want, outcome(kv, status), err)
    -- the server counted the stuck one too
    assert.are.equal(READERS + 1, kv.server_subscribers)
    -- the others at full rate: within a factor of what they get alone
    -- (a stall would be near 0; the factor is the machine's noise)
    assert.is_true(kv.deliveries_per_s > alone.deliveries_per_s / 4,
      ("%.0f deliveries/s with the stuck subscriber, %.0f without")
        :format(kv.deliveries_per_s, alone.deliveries_per_s))

    -- the stuck one had the first publishes, in order, then 1008
    local _, reason = stuck:expect_close(1008)
    stuck:abort()
    assert.are.equal("send buffer limit exceeded", reason)
    local got = #stuck.skipped
    assert.is_true(got > 0 and got < 1000, got .. " publishes delivered")
    for i, frame in ipairs(stuck.skipped) do
      assert.are.same({ helper.BINARY, 16384, ("%08x"):format(i - 1) },
        { frame.opcode, #frame.payload, frame.payload:sub(1, 8) })
    end
    assert.are.equal(0, subscribers(server.port))
  end)
end)
