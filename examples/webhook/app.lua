-- The webhook sample: services POST notifications, WebSocket clients
-- get them.  Run it with `make webhook` (port 5004), or `moonsocket
-- examples/webhook/app.lua` from the repository's root.
--
--   POST /notify   {"topic": "deploys", "text": "v1.2 is out"}
--                  -> 202 {"delivered": N}, and every socket listening
--                  on that topic gets {"topic": "deploys", "text": ...}
--   GET  /listen?topic=deploys   (WebSocket) receives them
--
-- curl -H 'Content-Type: application/json' \
--   -d '{"topic":"deploys","text":"hello"}' localhost:5004/notify
--
-- The body is read with req:body(), up to max_body_size (64 KiB here:
-- beyond, the core answers 413 and the handler never sees it).  Answers:
-- 400 for a body that is not a JSON object with a string topic and
-- text (or text that is not UTF-8), 405 (Allow: POST) for another
-- method, 415 for a Content-Type other than JSON, 401 without the token
-- when WEBHOOK_TOKEN is set (Authorization: Bearer TOKEN).
local moonsocket = require "moonsocket"

local type = type
local utf8_len = utf8.len

local MAX_BODY = 64 * 1024
local MAX_TOPIC = 64       -- bytes of a topic name
local PREFIX = "webhook:"  -- the pub/sub topics this sample uses
local TOKEN = os.getenv("WEBHOOK_TOKEN")

-- A codec of our own: no NaN, Infinity or hex numbers, and the object
-- is flat (a depth of 2 lets a wrong value, an array, be reported).
local cjson = require("cjson").new()
cjson.decode_max_depth(2)
cjson.decode_invalid_numbers(false)
cjson.encode_invalid_numbers(false)
local decode, encode = cjson.decode, cjson.encode

local JSON = { ["Content-Type"] = "application/json" }

local function answer(status, what, extra)
  local headers = { ["Content-Type"] = "application/json" }
  for name, value in pairs(extra or {}) do headers[name] = value end
  return status, headers, encode(what) .. "\n"
end

local function refuse(status, message, extra)
  return answer(status, { error = message }, extra)
end

local function valid_topic(topic)
  return type(topic) == "string" and #topic > 0 and #topic <= MAX_TOPIC
         and topic:find("^[%w._:-]+$") ~= nil
end

local app = moonsocket.app { max_body_size = MAX_BODY }

-- The notification: checked, then published to its topic.
local function notify(req)
  if req.method ~= "POST" then
    return refuse(405, "use POST", { Allow = "POST" })
  end
  if TOKEN and req.headers.authorization ~= "Bearer " .. TOKEN then
    return refuse(401, "a valid token is required",
                  { ["WWW-Authenticate"] = "Bearer" })
  end
  local ctype = req.headers["content-type"]
  if ctype and not ctype:lower():find("^application/json%s*;?") then
    return refuse(415, "the body must be JSON (Content-Type: application/json)")
  end
  local body, err = req:body()
  if not body then
    -- over MAX_BODY (the core answered 413 already), a bad chunked
    -- coding (400), or the client left: this answer is dropped
    return refuse(400, err)
  end
  local ok, note = pcall(decode, body)
  if not ok or type(note) ~= "table" then
    return refuse(400, "the body is not a JSON object")
  end
  if not valid_topic(note.topic) then
    return refuse(400, "topic: 1 to 64 letters, digits or ._:- expected")
  end
  if type(note.text) ~= "string" or not utf8_len(note.text) then
    return refuse(400, "text: a UTF-8 string expected")
  end
  local delivered = app:publish(PREFIX .. note.topic,
                                encode { topic = note.topic, text = note.text })
  return answer(202, { delivered = delivered })
end

app:use(function(req, next)
  if req.path == "/notify" then return notify(req) end
  return next()
end)

-- Listeners: one topic each, from the query.
app:ws("/listen", {
  open = function(ws)
    ws:subscribe(PREFIX .. ws.data.topic)
  end,
  message = function(ws)
    ws:close(1008, "this socket only listens")
  end,
}, {
  max_message_size = 1024,
  upgrade = function(req)
    local topic = req.args.topic
    if not valid_topic(topic) then
      return 400, JSON, encode { error = "?topic= expected" } .. "\n"
    end
    return { topic = topic }
  end,
})

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 5004,
})
moonsocket.run()
