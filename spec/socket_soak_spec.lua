-- spec/socket_soak_spec.lua: the socket soak (bench/socket_soak.lua)
-- made short: 5,000 connect/PING/close cycles to a redis-server in each
-- of three ways (closed, dropped for the collector, left open by a
-- finished thread), twice over; every descriptor must be back after each
-- mode, and memory must hold still in the second pass.
local helper = require "helper"

-- Under valgrind a cycle is about ten times slower: fewer of them.
local CYCLES = os.getenv("MOONSOCKET_WRAPPER") and 1000 or 5000

describe("moonsocket.socket soak", function()
  local redis, redis_port

  setup(function()
    redis_port = helper.free_port()
    redis = helper.start_redis(redis_port, "--maxclients", "10000")
  end)

  teardown(function()
    redis:stop()
  end)

  it(("gives back every descriptor after %d cycles of each kind")
     :format(CYCLES), function()
    local out, status = helper.run_app("bench/socket_soak.lua", { CYCLES },
                                       { REDIS_PORT = redis_port })
    local results = {}                   -- { "ok" or "not ok", text }
    for line in out:gmatch("[^\n]+") do
      local verdict, text = line:match("^(ok) %d+ %- (.*)")
      if not verdict then
        verdict, text = line:match("^(not ok) %d+ %- (.*)")
      end
      if verdict then results[#results + 1] = { verdict, text } end
    end
    -- 3 modes x 2 passes, no errors, memory
    assert.are.equal(8, #results, out)
    for i = 1, 7 do
      assert.are.equal("ok", results[i][1], out)
    end
    assert.matches("^pass 2, thread: descriptors back", results[6][2])
    -- ASan's quarantine and valgrind keep freed memory on purpose: the
    -- memory check means something only in the plain build
    local bin = os.getenv("MOONSOCKET_BIN") or ""
    if not os.getenv("MOONSOCKET_WRAPPER") and not bin:find("asan") then
      assert.are.equal("ok", results[8][1], out)
      assert.are.equal(0, status, out)
    end
  end)
end)
