-- The chat sample: a page at http://localhost:5001 and chat rooms over
-- the WebSocket at /chat.  Run it with `make chat`, or
-- `moonsocket examples/chat/app.lua` from the repository's root.
--
-- Every message is a JSON object with a "type" (lua-cjson, which `make
-- deps` installs from Debian).  The page sends:
--   {"type":"join","name":N,"room":R}   join R as N; again to switch
--                                       rooms (N may then be left out)
--   {"type":"join","name":N,"room":R,"since":P}
--                                       join R again after a lost
--                                       connection: P is the last
--                                       position the page saw there
--   {"type":"say","text":T}             T to everyone in the room
--   {"type":"drop"}                     cut this socket off (below)
-- and the server:
--   {"type":"welcome","room":R,"name":N,"count":C,"members":[...],
--    "position":P,"recovered":B}
--       to whoever joined: N is its name in R (" (2)" and so on added
--       when the name is taken there), members every name in R, sorted,
--       P the room's position after this join; B true when every message
--       after "since" came just before the welcome, false when they could
--       not (no "since", or one the room no longer keeps)
--   {"type":"joined","room":R,"name":N,"count":C}   to the others in R
--   {"type":"left","room":R,"name":N,"count":C}     to those still in R
--   {"type":"message","room":R,"name":N,"text":T}   to all of R, sender
--                                                   included
--   {"type":"error","error":E}          the message was refused; nothing
--                                       changed
--
-- A room is a topic, "room:" .. R, that keeps its last 100 messages
-- (app:history): each of joined, left and message reaches the room as
-- "<epoch>:<offset> " followed by the JSON, its position in the room.
-- The page keeps the last position it saw; when its connection is lost
-- it connects again and joins with "since": ws:subscribe queues exactly
-- the messages it missed, in order, before any later one, so the page
-- shows each once.  Who is in a room is its presence (app:presence):
-- each member's socket is present with its name while subscribed, and
-- leaves it the moment the server sees it gone.
--
-- "drop" is the page's "Disconnect network" button.  A page cannot lose
-- its TCP connection by itself (WebSocket.close sends a close frame), so
-- it asks the server, which cuts the socket off with ws:abort(): no
-- close frame either way, the page sees 1006 as on a network failure,
-- and the server sees a lost connection (the close handler gets 1006).
-- It harms no one else: a socket can only drop itself.
--
-- The app runs without workers (one process keeps the positions).
local moonsocket = require "moonsocket"
local policy = require "moonsocket.policy"

local find, gsub, lower, match, sub =
  string.find, string.gsub, string.lower, string.match, string.sub
local ipairs, pairs, pcall, sort, type =
  ipairs, pairs, pcall, table.sort, type
local utf8_codes, utf8_len, utf8_offset = utf8.codes, utf8.len, utf8.offset

local here = match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local serialize_origin = policy.serialize_origin

local MAX_LABEL = 32      -- characters in a name or a room name
local MAX_TEXT = 2000     -- characters in a message
local MAX_DEPTH = 2       -- an object, and a wrong value in it (an array
                          -- for a name) that gets a type error
local TOPIC = "room:"
local HISTORY = 100       -- messages a room keeps for those who return
local HISTORY_TTL = 3600  -- seconds; a page gone longer starts afresh

-- A codec of our own, so no other module's settings reach it: no NaN,
-- Infinity or hexadecimal numbers either way, and the protocol is flat.
local cjson = require("cjson").new()
cjson.decode_max_depth(MAX_DEPTH)
cjson.decode_invalid_numbers(false)
cjson.encode_invalid_numbers(false)
local decode, encode = cjson.decode, cjson.encode

local app = moonsocket.app {}
app:history(TOPIC .. "*", { size = HISTORY, ttl = HISTORY_TTL })

------------------------------------------------------------------------
-- Names and messages
------------------------------------------------------------------------

-- Control characters (C0, DEL, C1), and the format characters that
-- reorder or break the text around them: marks, line and paragraph
-- separators, bidirectional embeddings, overrides and isolates.
local function has_control(s)
  for _, cp in utf8_codes(s) do
    if cp < 0x20 or (cp >= 0x7F and cp <= 0x9F)
        or cp == 0x200E or cp == 0x200F
        or (cp >= 0x2028 and cp <= 0x202E)
        or (cp >= 0x2066 and cp <= 0x2069) then
      return true
    end
  end
  return false
end

-- A name or a room: a string of 1 to 32 characters once the spaces
-- around it are gone, with no control characters.  Decoded strings are
-- always UTF-8 (see the message handler), so utf8.len cannot fail.
local function check_label(value, what)
  if type(value) ~= "string" then
    return nil, ('"%s" must be a string'):format(what)
  end
  if has_control(value) then
    return nil, what .. " must not contain control characters"
  end
  local first = find(value, "[^ ]")
  if first then value = sub(value, first, find(value, "[^ ] *$")) end
  local len = first and utf8_len(value) or 0
  if len < 1 or len > MAX_LABEL then
    return nil, ("%s must be 1 to %d characters"):format(what, MAX_LABEL)
  end
  return value
end

-- wanted, or, when someone in the room has it, "wanted (2)", "wanted
-- (3)", ...; cut to stay within 32 characters.  taken: name -> true.
local function unique_name(taken, wanted)
  local name, n = wanted, 1
  while taken[name] do
    n = n + 1
    local suffix = " (" .. n .. ")"
    local base, keep = wanted, MAX_LABEL - #suffix
    if utf8_len(base) > keep then
      base = match(sub(base, 1, utf8_offset(base, keep + 1) - 1), "^(.-) *$")
    end
    name = base .. suffix
  end
  return name
end

-- The names present in a topic, as a set.
local function names_in(topic)
  local taken = {}
  for _, info in ipairs(app:presence(topic)) do taken[info.name] = true end
  return taken
end

-- The names present, sorted.  Never empty when it holds whoever asks:
-- cjson 2.1.0 writes an empty table as {}, not [].
local function member_list(topic)
  local list = {}
  for name in pairs(names_in(topic)) do list[#list + 1] = name end
  sort(list)
  return list
end

-- A position as the page sends it back: the envelope's "epoch:offset",
-- checked here so that ws:subscribe, which raises on a malformed one,
-- never sees one.  Offsets of more than 15 digits do not occur.
local function check_position(value)
  if type(value) ~= "string" or #value > 32
      or not match(value, "^[0-9a-f]+:%d+$")
      or #match(value, "^[0-9a-f]+") ~= 16
      or #match(value, "%d+$") > 15 then
    return nil, '"since" must be a position "epoch:offset"'
  end
  return value
end

local function position_text(position)
  return position.epoch .. ":" .. position.offset
end

------------------------------------------------------------------------
-- Rooms
------------------------------------------------------------------------

local function send(ws, event)
  return ws:send(encode(event))
end

local function refuse(ws, why)
  return send(ws, { type = "error", error = why })
end

-- Leave the room ws is in, if any, and tell those who stay.  A closed
-- socket has left its topics, and so the room's presence, already.
local function leave(ws)
  local data = ws.data
  local room, name = data.room, data.name
  if not room then return end
  data.room, data.name = nil, nil
  local topic = TOPIC .. room
  ws:unsubscribe(topic)
  app:publish(topic, encode { type = "left", room = room, name = name,
                              count = app:subscribers(topic) })
end

local commands = {}

function commands.join(ws, event)
  local data = ws.data
  local room, why = check_label(event.room, "room")
  if not room then return refuse(ws, why) end
  local wanted = event.name
  if wanted == nil then wanted = data.wanted end
  wanted, why = check_label(wanted, "name")
  if not wanted then return refuse(ws, why) end
  local since = event.since
  if since ~= nil then
    since, why = check_position(since)
    if not since then return refuse(ws, why) end
  end
  if room == data.room then
    return refuse(ws, "you are in " .. room .. " already")
  end
  leave(ws)
  local topic = TOPIC .. room
  local name = unique_name(names_in(topic), wanted)
  -- the missed messages are queued, then ws is subscribed and present
  local ok, info = ws:subscribe(topic, { since = since,
                                         presence = { name = name } })
  if ok == nil then
    return refuse(ws, "cannot join " .. room .. ": " .. info)
  end
  data.room, data.name, data.wanted = room, name, wanted
  local count = app:subscribers(topic)
  -- the page never gets its own "joined": the welcome gives its
  -- position (a room with no message yet has no epoch to come back to)
  local _, position = ws:publish(topic, encode { type = "joined",
    room = room, name = name, count = count })
  send(ws, { type = "welcome", room = room, name = name, count = count,
             members = member_list(topic),
             position = position_text(position),
             recovered = info.recovered })
end

function commands.say(ws, event)
  local data = ws.data
  if not data.room then return refuse(ws, "join a room first") end
  local text = event.text
  if type(text) ~= "string" then
    return refuse(ws, '"text" must be a string')
  end
  if not find(text, "%S") then return refuse(ws, "the message is empty") end
  if utf8_len(text) > MAX_TEXT then
    return refuse(ws, ("the message is longer than %d characters")
      :format(MAX_TEXT))
  end
  app:publish(TOPIC .. data.room, encode { type = "message",
    room = data.room, name = data.name, text = text })
end

-- The "Disconnect network" button: cut this socket off without a close
-- frame (see the top of this file).
function commands.drop(ws)
  ws:abort()
end

-- Only this site's pages: a browser's Origin must name the host that
-- served the page.  Other clients send what they like, or nothing.
local function same_site(origin, req)
  if origin == nil then return true end
  local host, site = req.headers.host or "", serialize_origin(origin)
  return site == serialize_origin("http://" .. host)
      or site == serialize_origin("https://" .. host)
end

app:ws("/chat", {
  message = function(ws, data, kind)
    if kind ~= "text" then return refuse(ws, "send JSON as text") end
    -- cjson 2.1.0 stops reading at a NUL byte, and lets any other byte
    -- through inside strings.  Control characters but tab, LF and CR are
    -- invalid anywhere in JSON (RFC 8259 sections 2 and 7).  The core
    -- fails text that is not UTF-8 with 1007 before it comes here (and
    -- cjson refuses lone surrogate escapes): this keeps it so.
    local control = find(data, "[\0-\8\11\12\14-\31]")
    if control then
      return refuse(ws, ("invalid JSON: control character at byte %d")
        :format(control))
    end
    if not utf8_len(data) then
      return refuse(ws, "invalid JSON: not UTF-8")
    end
    local ok, event = pcall(decode, data)
    if not ok then
      return refuse(ws, "invalid JSON: " .. gsub(event, "^%u", lower))
    end
    -- arrays decode to tables too
    if type(event) ~= "table" or not find(data, "^[ \t\n\r]*{") then
      return refuse(ws, "expected a JSON object")
    end
    local command = type(event.type) == "string" and commands[event.type]
    if not command then
      return refuse(ws, '"type" must be "join", "say" or "drop"')
    end
    return command(ws, event)
  end,
  close = leave,
}, {
  -- the longest message escaped as badly as JSON allows (12 bytes of
  -- \uXXXX\uXXXX per character) still fits; larger ones close with 1009
  max_message_size = 32 * 1024,
  max_backpressure = 256 * 1024,  -- a reader this far behind is dropped
  keep_alive_interval = 30,       -- ping quiet sockets so proxies keep
  keep_alive_timeout = 15,        -- them, and let vanished ones leave
  allowed_origins = same_site,
})
app:use(moonsocket.static(here .. "public"))

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 5001,
})
moonsocket.run()
