-- bench/redis_history.lua: publishes per second to a topic whose history
-- Redis keeps (app:use_backplane), no subscriber: each publish is one
-- script in Redis and comes back on the subscription, where this process
-- keeps it.  THREADS threads publish, each waiting for its positions, so
-- that THREADS publishes are under way at once.  Prints the wall rate and
-- this process's CPU time per publish.  Run by make -C bench
-- redis-history, which starts redis-server (REDIS_URL).
local moonsocket = require "moonsocket"
local gettime = require("socket").gettime

local N = tonumber(os.getenv("N")) or 100000
local THREADS = tonumber(os.getenv("THREADS")) or 64

local app = moonsocket.app {}
app:use_backplane { redis = assert(os.getenv("REDIS_URL"), "REDIS_URL") }
app:history("kept", { size = 1000 })
local payload = ("x"):rep(64)

local function burst(count)
  local threads = {}
  for t = 1, THREADS do
    threads[t] = moonsocket.spawn(function()
      for _ = 1, count // THREADS do
        assert(app:publish("kept", payload))
      end
    end)
  end
  for _, t in ipairs(threads) do t:join() end
end

app:on_start(function()
  while not app.backplane.connected do moonsocket.sleep(0.01) end
  burst(N // 10)                               -- warm up
  local t0, c0 = gettime(), os.clock()
  burst(N)
  local wall, cpu = gettime() - t0, os.clock() - c0
  print(("publish, 64 B, no subscriber, history in Redis: %.0f/s, "
         .. "%.2f us of this process's CPU each (%d threads)"):format(
         N / wall, cpu / N * 1e6, THREADS))
  moonsocket.shutdown(0)
end)

assert(app:listen { port = 0 })
moonsocket.run()
