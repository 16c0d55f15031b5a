-- The dashboard sample: a page at http://localhost:5002 that plots the
-- server's figures, pushed once a second over the WebSocket at /live.
-- Run it with `make dashboard`, or `moonsocket examples/dashboard/app.lua`
-- from the repository's root; WORKERS=2 (or "auto") runs it with worker
-- processes.
--
-- A socket at /live subscribes to the topic "figures".  Every serving
-- process (each worker, or the one process) publishes its own figures
-- there once a second, from an `every` timer started in app:on_start:
--   {"type":"figures","worker":W,"seq":S,"connections":C,"rate":R,
--    "messages":M}
--   W   this process's worker number (1 without workers)
--   S   1, 2, 3... for each push of W
--   C   the sockets open at /live in W
--   R   the messages W received in the last period, per second
--   M   the messages W received since it started
-- The page keeps the latest figures of each worker it heard from in the
-- last 3 s and sums them.
-- Anything a client sends is counted and otherwise ignored (the page's
-- button sends "bump"); a message over 1 KiB closes with 1009.
local moonsocket = require "moonsocket"

local match = string.match
local floor = math.floor
local now = moonsocket.core.now

local here = match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"

local PERIOD = 1          -- seconds between pushes
local TOPIC = "figures"
local WORKERS = os.getenv("WORKERS") or "1"
WORKERS = WORKERS == "auto" and "auto" or tonumber(WORKERS) or 1

local encode = require("cjson").new().encode

local app = moonsocket.app {}

-- This process's figures.  With workers each has its own copy (made at
-- the fork), and knows only its own sockets and messages.
local received = 0        -- messages since start
local counted = 0         -- received when the last push went out

-- One push per process per period.  Each process publishes only what
-- it saw, tagged with its worker number, and app:publish hands it to
-- the subscribers of every worker: a client gets each worker's figures
-- once a period, never the same figures twice, and the page adds them
-- up.  (Had every worker published a total, each client would get it
-- once per worker.)
app:on_start(function(worker)
  local seq, last = 0, now()
  moonsocket.every(PERIOD, function()
    local t = now()
    seq = seq + 1
    local rate = (received - counted) / (t - last > 0 and t - last or PERIOD)
    counted, last = received, t
    app:publish(TOPIC, encode {
      type = "figures", worker = worker or 1, seq = seq,
      connections = app:subscribers(TOPIC),
      rate = floor(rate * 10 + 0.5) / 10,
      messages = received,
    })
  end)
end)

app:ws("/live", {
  open = function(ws)
    ws:subscribe(TOPIC)
  end,
  message = function()
    received = received + 1
  end,
}, {
  max_message_size = 1024,
  max_backpressure = 64 * 1024,   -- a page this far behind is dropped
  keep_alive_interval = 30,
  keep_alive_timeout = 15,
})
app:use(moonsocket.static(here .. "public"))

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 5002,
  workers = WORKERS,
})
moonsocket.run()
