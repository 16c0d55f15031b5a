-- The game sample: a page at http://localhost:5003 where each player
-- moves a dot with the arrow keys (or WASD), over the WebSocket at
-- /play.  Run it with `make game`, or `moonsocket examples/game/app.lua`
-- from the repository's root.
--
-- The server keeps the world.  A player sends the direction it holds:
--   {"type":"input","dx":DX,"dy":DY}    DX, DY each -1, 0 or 1
-- and the latest one stands until the next.  Twenty times a second a
-- tick moves every player 5 px along its direction, kept inside the
-- 640 x 480 world, and publishes the state to all:
--   {"type":"state","tick":N,"time":T,"players":[{"id":I,"x":X,"y":Y}]}
--       N counts the ticks from 1, T is the tick's time in ms (the
--       loop's clock), players are sorted by id
-- A new player starts in the middle and gets first:
--   {"type":"welcome","id":I,"width":640,"height":480,"rate":20,
--    "idle":10}
-- Anything else gets {"type":"error","error":E} and changes nothing.
-- A player that sends nothing for IDLE_SECONDS (10) is closed with 4000
-- "idle"; one that sends more than 40 messages in a second with 1008;
-- a message over 256 bytes closes with 1009; the seventeenth player is
-- closed with 1013 "the game is full".  The world lives in this
-- process, so the app runs without workers.
local moonsocket = require "moonsocket"
local policy = require "moonsocket.policy"

local find, gsub, lower, match = string.find, string.gsub, string.lower,
  string.match
local floor, max, min = math.floor, math.max, math.min
local pairs, pcall, sort, type = pairs, pcall, table.sort, type
local now = moonsocket.core.now

local here = match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local serialize_origin = policy.serialize_origin

local RATE = 20               -- ticks a second
local WIDTH, HEIGHT = 640, 480
local SPEED = 5               -- px a tick
local MAX_PLAYERS = 16
local MAX_INPUTS = 40         -- messages a player may send in a second
-- seconds of silence before a player is closed (GAME_IDLE_SECONDS sets
-- it, for the tests)
local IDLE_SECONDS = tonumber(os.getenv("GAME_IDLE_SECONDS")) or 10
local TOPIC = "game"

-- A codec of our own, strict as the chat's: no NaN, Infinity or
-- hexadecimal numbers, and a flat protocol (depth 2, so an array where
-- a number belongs gets a type error).
local cjson = require("cjson").new()
cjson.decode_max_depth(2)
cjson.decode_invalid_numbers(false)
cjson.encode_invalid_numbers(false)
local decode, encode = cjson.decode, cjson.encode

local app = moonsocket.app {}

local players = {}            -- id -> ws
local count, last_id = 0, 0

local function refuse(ws, why)
  return ws:send(encode { type = "error", error = why })
end

------------------------------------------------------------------------
-- The tick
------------------------------------------------------------------------

local function clamp(v, low, high)
  return min(max(v, low), high)
end

local tick = 0

-- Closes whoever was silent too long, moves the rest and tells all.
local function step()
  tick = tick + 1
  local t = now()
  local list = {}
  for id, ws in pairs(players) do
    local data = ws.data
    -- one that is closing stays until its close handler removes it
    if ws.state == "open" and t - data.heard >= IDLE_SECONDS then
      ws:close(4000, "idle")
    elseif ws.state == "open" then
      if tick % RATE == 0 then data.inputs = 0 end
      data.x = clamp(data.x + data.dx * SPEED, 0, WIDTH)
      data.y = clamp(data.y + data.dy * SPEED, 0, HEIGHT)
      list[#list + 1] = { id = id, x = data.x, y = data.y }
    end
  end
  if #list == 0 then return end       -- cjson writes {} for an empty list
  sort(list, function(a, b) return a.id < b.id end)
  app:publish(TOPIC, encode { type = "state", tick = tick,
    time = floor(t * 1000 + 0.5), players = list })
end

app:on_start(function()
  moonsocket.every(1 / RATE, step)
end)

------------------------------------------------------------------------
-- Players
------------------------------------------------------------------------

local function valid_direction(v)
  return v == -1 or v == 0 or v == 1
end

-- Only this site's pages (as in the chat sample).
local function same_site(origin, req)
  if origin == nil then return true end
  local host, site = req.headers.host or "", serialize_origin(origin)
  return site == serialize_origin("http://" .. host)
      or site == serialize_origin("https://" .. host)
end

app:ws("/play", {
  open = function(ws)
    if count >= MAX_PLAYERS then return ws:close(1013, "the game is full") end
    last_id, count = last_id + 1, count + 1
    local data = ws.data
    data.id, data.x, data.y, data.dx, data.dy = last_id, WIDTH // 2,
      HEIGHT // 2, 0, 0
    data.heard, data.inputs = now(), 0
    players[last_id] = ws
    ws:subscribe(TOPIC)
    ws:send(encode { type = "welcome", id = last_id, width = WIDTH,
      height = HEIGHT, rate = RATE, idle = IDLE_SECONDS })
  end,
  message = function(ws, text, kind)
    local data = ws.data
    if not data.id then return end
    data.heard, data.inputs = now(), data.inputs + 1
    if data.inputs > MAX_INPUTS then
      return ws:close(1008, ("more than %d messages a second")
        :format(MAX_INPUTS))
    end
    if kind ~= "text" then return refuse(ws, "send JSON as text") end
    -- cjson 2.1.0 stops reading at a NUL byte: control characters are
    -- refused before it sees them (RFC 8259 section 7)
    if find(text, "[\0-\8\11\12\14-\31]") then
      return refuse(ws, "invalid JSON: control character")
    end
    local ok, event = pcall(decode, text)
    if not ok then
      return refuse(ws, "invalid JSON: " .. gsub(event, "^%u", lower))
    end
    if type(event) ~= "table" or not find(text, "^[ \t\n\r]*{") then
      return refuse(ws, "expected a JSON object")
    end
    if event.type ~= "input" then
      return refuse(ws, '"type" must be "input"')
    end
    local dx, dy = event.dx, event.dy
    if not (valid_direction(dx) and valid_direction(dy)) then
      return refuse(ws, '"dx" and "dy" must be -1, 0 or 1')
    end
    data.dx, data.dy = floor(dx), floor(dy)
  end,
  close = function(ws)
    local id = ws.data.id
    if id and players[id] then
      players[id] = nil
      count = count - 1
    end
  end,
}, {
  max_message_size = 256,
  max_backpressure = 256 * 1024,  -- a reader this far behind is dropped
  allowed_origins = same_site,
})
app:use(moonsocket.static(here .. "public"))

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 5003,
})
moonsocket.run()
