-- moonsocket.status: a live status page built on moonsocket itself.
--   app:use(moonsocket.status{ path = "/status" })
-- GET path answers a page (no external script); the page opens a
-- WebSocket on the same path, to which the figures of
-- moonsocket.metrics are pushed every `interval` seconds, with rates.
local core = require "moonsocket.core"
local runtime = require "moonsocket.runtime"

local concat = table.concat
local error = error
local format = string.format
local ipairs = ipairs
local next = next
local pairs = pairs
local type = type

local _M = { _VERSION = core._VERSION }

local LOOPBACK = { "127.0.0.1", "::1", "::ffff:127.0.0.1" }

-- The figures one process (or all, summed) has counted so far.
local function totals(m)
  local ws = 0
  for _, n in pairs(m.connections.websocket) do ws = ws + n end
  local http = 0
  for _, kind in ipairs({ "http", "http2" }) do
    for _, n in pairs(m.connections[kind]) do http = http + n end
  end
  return {
    websockets = ws, http = http,
    messages_in = m.messages_received.text + m.messages_received.binary,
    messages_out = m.messages_sent.text + m.messages_sent.binary,
    bytes_in = m.bytes_received.text + m.bytes_received.binary,
    bytes_out = m.bytes_sent.text + m.bytes_sent.binary,
    queued = m.sends_queued,
    dropped = m.sends_dropped.backpressure + m.sends_dropped.closed,
    backpressure_closes = m.backpressure_closes,
    subscriptions = m.subscriptions,
  }
end

local COUNTS = { "websockets", "http", "queued", "dropped",
                 "backpressure_closes", "subscriptions" }
local RATES = { "messages_in", "messages_out", "bytes_in", "bytes_out" }

-- One process's figures as JSON fields: the gauges and totals, and per
-- second the rates since the previous sample (0 for the first).
local function fields(now, was, dt)
  local out = {}
  for _, k in ipairs(COUNTS) do
    out[#out + 1] = format('"%s":%d', k, now[k])
  end
  for _, k in ipairs(RATES) do
    local rate = was and dt > 0 and (now[k] - was[k]) / dt or 0
    out[#out + 1] = format('"%s_per_s":%.10g', k, rate < 0 and 0 or rate)
  end
  return concat(out, ",")
end

-- sample(state, dt): the JSON text pushed to the page, rates over the
-- dt seconds since the previous sample; state keeps the previous totals
-- (all processes, and each worker's).
function _M.sample(state, dt)
  local all = core.metrics()
  local now = totals(all)
  local parts = { format('{"interval":%g,"processes":%d,%s,"workers":[',
                         dt, all.processes, fields(now, state.all, dt)) }
  state.all = now
  state.workers = state.workers or {}
  if all.processes > 1 then
    for w = 1, all.processes - 1 do
      local t = totals(core.metrics(w))
      parts[#parts + 1] = format('%s{"worker":%d,%s}', w > 1 and "," or "",
                                 w, fields(t, state.workers[w], dt))
      state.workers[w] = t
    end
  end
  parts[#parts + 1] = "]}"
  return concat(parts)
end

local PAGE = [==[<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>moonsocket status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}table{border-collapse:collapse;margin:1em 0}
td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
#state{color:#888}canvas{border:1px solid #ddd}
</style></head><body>
<h1>moonsocket status <span id="state">connecting</span></h1>
<table><thead><tr><th></th><th>all</th></tr></thead>
<tbody id="figures"></tbody></table>
<canvas id="chart" width="600" height="160"></canvas>
<p>messages/s: <span style="color:#1f77b4">in</span>,
<span style="color:#d62728">out</span></p>
<script>
"use strict";
var ROWS = [["websockets", "WebSockets open"], ["http", "HTTP connections"],
  ["messages_in_per_s", "messages in /s"],
  ["messages_out_per_s", "messages out /s"],
  ["bytes_in_per_s", "bytes in /s"], ["bytes_out_per_s", "bytes out /s"],
  ["queued", "sends queued (total)"], ["dropped", "sends dropped (total)"],
  ["backpressure_closes", "back-pressure closes (total)"],
  ["subscriptions", "subscriptions"]];
var history = [];
function cell(row, text, tag) {
  var c = document.createElement(tag || "td");
  c.textContent = text;
  row.appendChild(c);
}
function show(s) {
  var head = document.querySelector("thead tr"), body =
    document.getElementById("figures");
  head.textContent = "";
  cell(head, "", "th"); cell(head, "all", "th");
  s.workers.forEach(function (w) { cell(head, "worker " + w.worker, "th"); });
  body.textContent = "";
  ROWS.forEach(function (r) {
    var row = document.createElement("tr");
    row.id = "row-" + r[0];
    cell(row, r[1]);
    cell(row, String(s[r[0]]));
    s.workers.forEach(function (w) { cell(row, String(w[r[0]])); });
    body.appendChild(row);
  });
  history.push([s.messages_in_per_s, s.messages_out_per_s]);
  if (history.length > 120) history.shift();
  draw();
}
function draw() {
  var c = document.getElementById("chart"), g = c.getContext("2d");
  var max = 1;
  history.forEach(function (h) { max = Math.max(max, h[0], h[1]); });
  g.clearRect(0, 0, c.width, c.height);
  ["#1f77b4", "#d62728"].forEach(function (color, k) {
    g.strokeStyle = color;
    g.beginPath();
    history.forEach(function (h, i) {
      var x = c.width - (history.length - 1 - i) * 5;
      var y = c.height - 4 - (c.height - 8) * h[k] / max;
      if (i) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke();
  });
}
function connect() {
  var url = (location.protocol === "https:" ? "wss://" : "ws://") +
    location.host + location.pathname;
  var ws = new WebSocket(url);
  ws.onopen = function () {
    document.getElementById("state").textContent = "live";
  };
  ws.onmessage = function (e) { show(JSON.parse(e.data)); };
  ws.onclose = function () {
    document.getElementById("state").textContent = "reconnecting";
    setTimeout(connect, 2000);
  };
}
connect();
</script></body></html>
]==]

_M.page = PAGE

-- moonsocket.status{ path = "/status", allow = { "127.0.0.1", "::1" },
-- interval = 1 }: middleware answering GET path with the page, and a
-- WebSocket on path with the figures every interval seconds.  Only the
-- addresses in allow may see either (others: 403); loopback by default.
function _M.middleware(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("bad argument #1 to 'status' (table expected, got "
          .. type(opts) .. ")", 2)
  end
  local path = opts.path or "/status"
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    error("bad option 'path' to 'status' (a path starting with / "
          .. "expected)", 2)
  end
  local allow = opts.allow or LOOPBACK
  if type(allow) ~= "table" then
    error("bad option 'allow' to 'status' (list of addresses expected)", 2)
  end
  local interval = opts.interval or 1
  if type(interval) ~= "number" or not (interval >= 0.05) then
    error("bad option 'interval' to 'status' (seconds, 0.05 or more, "
          .. "expected)", 2)
  end
  local allowed = {}
  for _, addr in ipairs(allow) do allowed[addr] = true end

  local watchers = {}            -- the open sockets, as keys
  local state, timer = {}, nil
  local function push()
    local text = _M.sample(state, interval)    -- the timer's period
    for ws in pairs(watchers) do ws:send(text) end
  end
  local handler = {
    open = function(ws)
      watchers[ws] = true
      if not timer then
        state = {}
        _M.sample(state, interval)          -- the rates' first point
        timer = runtime.every(interval, push)
      end
    end,
    close = function(ws)
      watchers[ws] = nil
      if not next(watchers) and timer then
        timer:cancel()
        timer = nil
      end
    end,
  }
  return function(req, next_mw)
    if req.path ~= path then return next_mw() end
    if not allowed[req.remote_addr] then
      return 403, { ["Content-Type"] = "text/plain; charset=utf-8" },
             "403 Forbidden\n"
    end
    if req.upgrade then return handler end
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return 405, { Allow = "GET, HEAD" }, "405 Method Not Allowed\n"
    end
    return 200, { ["Content-Type"] = "text/html; charset=utf-8",
                  ["Cache-Control"] = "no-store" }, PAGE
  end
end

return setmetatable(_M, {
  __call = function(_, opts) return _M.middleware(opts) end,
})
