-- bench/history.lua: publishes per second to a topic with history and to
-- one without, in one process, no subscriber (the cost of keeping a
-- message: its frame, envelope and bookkeeping).  Run with the built
-- module: make -C bench history
local moonsocket = require "moonsocket"
local N = tonumber(arg[1]) or 1000000

local app = moonsocket.app {}
app:history("kept", { size = 1000 })
local payload = ("x"):rep(64)

local function rate(topic)
  local t0 = os.clock()
  for _ = 1, N do app:publish(topic, payload) end
  return N / (os.clock() - t0)
end

rate("plain")                                -- warm up
local plain, kept = rate("plain"), rate("kept")
print(("publish, 64 B, no subscriber: without history %.0f/s, with "
       .. "history (size 1000) %.0f/s"):format(plain, kept))
