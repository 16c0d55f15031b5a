-- moonsocket.metrics: the core's counters (docs/metrics.md) as a table,
-- and in the Prometheus text format (version 0.0.4) from a middleware:
--   app:use(moonsocket.metrics{ path = "/metrics" })
local core = require "moonsocket.core"

local concat = table.concat
local error = error
local format = string.format
local ipairs = ipairs
local math_type = math.type
local pairs = pairs
local sort = table.sort
local tostring = tostring
local type = type

local _M = { _VERSION = core._VERSION }

-- collect([worker]): the figures of every process summed (with workers,
-- all of them, whichever serves the call), or of one worker (1..n; 0
-- the master).
function _M.collect(worker)
  return core.metrics(worker)
end

-- Label values escaped as the format says: backslash, quote, newline.
local function label_value(v)
  return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"',
                                        ["\n"] = "\\n" }))
end

local function number(v)
  if math_type(v) == "integer" then return format("%d", v) end
  return format("%.17g", v)
end

-- A family: its HELP and TYPE lines, then one line per series; each
-- series is { labels, value[, suffix] } with labels a list of { name,
-- value } (suffix: a histogram's _bucket, _sum, _count).
local function family(out, name, kind, help, series)
  out[#out + 1] = "# HELP " .. name .. " " .. help
  out[#out + 1] = "# TYPE " .. name .. " " .. kind
  for _, s in ipairs(series) do
    local labels, full = s[1], name .. (s[3] or "")
    if #labels == 0 then
      out[#out + 1] = full .. " " .. number(s[2])
    else
      local parts = {}
      for i, l in ipairs(labels) do
        parts[i] = l[1] .. '="' .. label_value(l[2]) .. '"'
      end
      out[#out + 1] = full .. "{" .. concat(parts, ",") .. "} "
                      .. number(s[2])
    end
  end
end

local function one(v) return { { {}, v } } end

-- t[key] for each key of t in order, labelled label="key".
local function by(label, t, keys)
  local series = {}
  for _, k in ipairs(keys) do
    series[#series + 1] = { { { label, k } }, t[k] }
  end
  return series
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) == "number"             -- numbers, then "other"
  end)
  return keys
end

local function statuses(t)
  return by("code", t, sorted_keys(t))
end

-- The series of the histogram of the calls into Lua, by callback.
local CALLBACKS = { "message", "open", "close", "drain", "pong", "request",
                    "timer", "coroutine", "other" }
local function callback_series(m)
  local series = {}
  for _, cb in ipairs(CALLBACKS) do
    local h = m.callback_seconds[cb]
    for i, bound in ipairs(m.callback_bounds) do
      series[#series + 1] = { { { "callback", cb },
                                { "le", format("%g", bound) } },
                              h.buckets[i], "_bucket" }
    end
    series[#series + 1] = { { { "callback", cb }, { "le", "+Inf" } },
                            h.count, "_bucket" }
    series[#series + 1] = { { { "callback", cb } }, h.sum, "_sum" }
    series[#series + 1] = { { { "callback", cb } }, h.count, "_count" }
  end
  return series
end

local KINDS = { "http", "http2", "websocket" }
local CARRIERS = { "tcp", "tls", "http2" }
local DATA = { "text", "binary" }
local CONTROL = { "ping", "pong", "close" }

-- render(figures): the text exposition of a table from collect().
function _M.render(m)
  local out = {}
  local conns = {}
  for _, kind in ipairs(KINDS) do
    for _, carrier in ipairs(CARRIERS) do
      local v = m.connections[kind][carrier]
      if v then
        conns[#conns + 1] = { { { "kind", kind }, { "transport", carrier } },
                              v }
      end
    end
  end
  family(out, "moonsocket_processes", "gauge",
         "Processes whose figures are summed (the master and its workers).",
         one(m.processes))
  family(out, "moonsocket_connections", "gauge",
         "Connections open now, by kind and transport.", conns)
  family(out, "moonsocket_connections_accepted_total", "counter",
         "Sockets accepted, by transport.",
         by("transport", m.accepted, { "tcp", "tls" }))
  family(out, "moonsocket_connections_refused_total", "counter",
         "Connections answered 503 for max_connections.", one(m.refused))
  family(out, "moonsocket_http2_streams_total", "counter",
         "Requests on HTTP/2 streams.", one(m.http2_streams))
  family(out, "moonsocket_tls_handshake_failures_total", "counter",
         "TLS handshakes that failed.", one(m.tls_failed))
  family(out, "moonsocket_http_responses_total", "counter",
         "HTTP answers, by status (101 and 200 upgrades are not answers).",
         statuses(m.responses))
  family(out, "moonsocket_ws_handshakes_total", "counter",
         "WebSocket handshakes, by outcome: 101, 200 (RFC 8441), or the "
         .. "status refusing them.", statuses(m.handshakes))
  family(out, "moonsocket_ws_frames_received_total", "counter",
         "WebSocket frames received.", one(m.frames_received))
  family(out, "moonsocket_ws_frames_sent_total", "counter",
         "WebSocket frames queued to send.", one(m.frames_sent))
  family(out, "moonsocket_ws_messages_received_total", "counter",
         "WebSocket messages received, by kind.",
         by("kind", m.messages_received, DATA))
  family(out, "moonsocket_ws_received_bytes_total", "counter",
         "Payload bytes of the messages received (inflated), by kind.",
         by("kind", m.bytes_received, DATA))
  family(out, "moonsocket_ws_messages_sent_total", "counter",
         "WebSocket messages queued to send, by kind.",
         by("kind", m.messages_sent, DATA))
  family(out, "moonsocket_ws_sent_bytes_total", "counter",
         "Payload bytes of the messages queued (before compression), by kind.",
         by("kind", m.bytes_sent, DATA))
  family(out, "moonsocket_ws_control_frames_received_total", "counter",
         "Control frames received, by kind.",
         by("kind", m.control_received, CONTROL))
  family(out, "moonsocket_ws_control_frames_sent_total", "counter",
         "Control frames queued to send, by kind.",
         by("kind", m.control_sent, CONTROL))
  local z = m.compression
  family(out, "moonsocket_ws_deflate_input_bytes_total", "counter",
         "Bytes of messages compressed (permessage-deflate).",
         one(z.deflate_in))
  family(out, "moonsocket_ws_deflate_output_bytes_total", "counter",
         "Bytes those messages compressed to.", one(z.deflate_out))
  family(out, "moonsocket_ws_inflate_input_bytes_total", "counter",
         "Compressed bytes received and inflated.", one(z.inflate_in))
  family(out, "moonsocket_ws_inflate_output_bytes_total", "counter",
         "Bytes those inflated to.", one(z.inflate_out))
  local closes = {}
  for _, code in ipairs(sorted_keys(m.closes)) do
    local whys = m.closes[code]
    for _, why in ipairs(sorted_keys(whys)) do
      closes[#closes + 1] = { { { "code", code }, { "why", why } },
                              whys[why] }
    end
  end
  family(out, "moonsocket_ws_closes_total", "counter",
         "WebSockets closed, by the code their close handler got and why.",
         closes)
  family(out, "moonsocket_ws_sends_queued_total", "counter",
         "Sends queued behind a socket the kernel would not take more of.",
         one(m.sends_queued))
  family(out, "moonsocket_ws_sends_dropped_total", "counter",
         "Sends dropped: over max_backpressure, or to a closed socket.",
         by("reason", m.sends_dropped, { "backpressure", "closed" }))
  family(out, "moonsocket_ws_backpressure_closes_total", "counter",
         "Slow consumers closed (1008) by max_backpressure.",
         one(m.backpressure_closes))
  family(out, "moonsocket_ws_unsent_messages_total", "counter",
         "Messages reported unsent to close handlers.",
         one(m.unsent_messages))
  family(out, "moonsocket_pubsub_publishes_total", "counter",
         "Publishes made by the app.", one(m.publishes))
  family(out, "moonsocket_pubsub_deliveries_total", "counter",
         "Published messages queued to subscribers.", one(m.deliveries))
  family(out, "moonsocket_pubsub_topics", "gauge",
         "Topics with subscribers.", one(m.topics))
  family(out, "moonsocket_pubsub_subscriptions", "gauge",
         "Subscriptions.", one(m.subscriptions))
  family(out, "moonsocket_lua_heap_bytes", "gauge",
         "Bytes of the Lua heaps (as of each worker's last sweep).",
         one(m.lua_heap_bytes))
  family(out, "moonsocket_resident_memory_bytes", "gauge",
         "Resident memory of the processes (/proc/PID/statm).",
         one(m.resident_bytes))
  family(out, "moonsocket_open_fds", "gauge",
         "Open file descriptors of the processes (/proc/PID/fd).",
         one(m.open_fds))
  family(out, "moonsocket_loop_iterations_total", "counter",
         "Iterations of the event loops (as of each worker's last sweep).",
         one(m.loop_iterations))
  local routes = sorted_keys(m.routes)
  local function per_route(field)
    local series = {}
    for i, path in ipairs(routes) do
      series[i] = { { { "route", path } }, m.routes[path][field] }
    end
    return series
  end
  family(out, "moonsocket_route_websockets", "gauge",
         "WebSockets open now, by route (app:ws path).", per_route("open"))
  family(out, "moonsocket_route_opens_total", "counter",
         "WebSockets opened, by route.", per_route("opened"))
  family(out, "moonsocket_route_closes_total", "counter",
         "WebSockets closed, by route.", per_route("closed"))
  family(out, "moonsocket_route_messages_received_total", "counter",
         "Data messages received, by route.",
         per_route("messages_received"))
  family(out, "moonsocket_route_messages_sent_total", "counter",
         "Data messages queued to send, by route.",
         per_route("messages_sent"))
  family(out, "moonsocket_lua_callback_seconds", "histogram",
         "Time in calls from the core into Lua handlers, by callback "
         .. "(one call in 16 is timed).", callback_series(m))
  out[#out + 1] = ""
  return concat(out, "\n")
end

local CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- moonsocket.metrics{ path = "/metrics", allow = { "127.0.0.1" } }:
-- middleware answering GET path with render(collect()); allow, when
-- given, lists the peer addresses that may read it (others: 403).
function _M.middleware(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("bad argument #1 to 'metrics' (table expected, got "
          .. type(opts) .. ")", 2)
  end
  local path = opts.path or "/metrics"
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    error("bad option 'path' to 'metrics' (a path starting with / "
          .. "expected)", 2)
  end
  local allowed
  if opts.allow ~= nil then
    if type(opts.allow) ~= "table" then
      error("bad option 'allow' to 'metrics' (list of addresses expected)",
            2)
    end
    allowed = {}
    for _, addr in ipairs(opts.allow) do allowed[addr] = true end
  end
  return function(req, next)
    if req.path ~= path then return next() end
    if allowed and not allowed[req.remote_addr] then
      return 403, { ["Content-Type"] = "text/plain; charset=utf-8" },
             "403 Forbidden\n"
    end
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return 405, { Allow = "GET, HEAD" }, "405 Method Not Allowed\n"
    end
    return 200, { ["Content-Type"] = CONTENT_TYPE,
                  ["Cache-Control"] = "no-store" }, _M.render(_M.collect())
  end
end

return setmetatable(_M, {
  __call = function(_, opts) return _M.middleware(opts) end,
})
