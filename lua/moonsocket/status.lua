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

-- The cumulative counts of the calls into Lua timed (all callbacks) at
-- each bound of the histogram, then in all.
local function callback_counts(m)
  local counts, n = {}, #m.callback_bounds
  for i = 1, n + 1 do counts[i] = 0 end
  for _, h in pairs(m.callback_seconds) do
    for i = 1, n do counts[i] = counts[i] + h.buckets[i] end
    counts[n + 1] = counts[n + 1] + h.count
  end
  return counts
end

-- The q-quantile of the calls timed between two samples' counts, as
-- Prometheus's histogram_quantile: linear within its bucket, the last
-- bound past it.  nil when no call was timed.
local function quantile(q, bounds, now, was)
  local n = #bounds + 1
  local total = now[n] - (was and was[n] or 0)
  if total <= 0 then return nil end
  local rank, below = q * total, 0
  for i = 1, n do
    local c = now[i] - (was and was[i] or 0)
    if c >= rank then
      if i == n then return bounds[n - 1] end
      local lower = i > 1 and bounds[i - 1] or 0
      return lower + (bounds[i] - lower) * (rank - below) / (c - below)
    end
    below = c
  end
end

_M.quantile = quantile                  -- for the specs

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
    lua_heap_bytes = m.lua_heap_bytes,
    resident_bytes = m.resident_bytes,
    open_fds = m.open_fds,
    callbacks = callback_counts(m),
    bounds = m.callback_bounds,
  }
end

local COUNTS = { "websockets", "http", "queued", "dropped",
                 "backpressure_closes", "subscriptions", "lua_heap_bytes",
                 "resident_bytes", "open_fds" }
local RATES = { "messages_in", "messages_out", "bytes_in", "bytes_out" }

-- One process's figures as JSON fields: the gauges and totals; per
-- second the rates over the dt seconds since the previous sample (0
-- for the first); the 99th percentile of the calls into Lua timed
-- meanwhile (null when none was).
local function fields(now, was, dt)
  local out = {}
  for _, k in ipairs(COUNTS) do
    out[#out + 1] = format('"%s":%d', k, now[k])
  end
  for _, k in ipairs(RATES) do
    local rate = was and dt > 0 and (now[k] - was[k]) / dt or 0
    out[#out + 1] = format('"%s_per_s":%.17g', k, rate < 0 and 0 or rate)
  end
  local p99 = was and quantile(0.99, now.bounds, now.callbacks,
                               was.callbacks)
  out[#out + 1] = p99 and format('"callback_p99_s":%.6g', p99)
                  or '"callback_p99_s":null'
  return concat(out, ",")
end

-- sample(state[, now]): the JSON text pushed to the page; now is the
-- loop's time (core.now()), and the rates are over the time measured
-- since the previous sample, which is the "interval" sent (0 for the
-- first).  state keeps the previous sample's time and totals (all
-- processes, and each worker's).
function _M.sample(state, now)
  now = now or core.now()
  local dt = state.time and now - state.time or 0
  if dt < 0 then dt = 0 end                -- the wall clock went back
  state.time = now
  local all = core.metrics()
  local t = totals(all)
  local parts = { format('{"interval":%.17g,"processes":%d,%s,"workers":[',
                         dt, all.processes, fields(t, state.all, dt)) }
  state.all = t
  state.workers = state.workers or {}
  if all.processes > 1 then
    for w = 1, all.processes - 1 do
      local wt = totals(core.metrics(w))
      parts[#parts + 1] = format('%s{"worker":%d,%s}', w > 1 and "," or "",
                                 w, fields(wt, state.workers[w], dt))
      state.workers[w] = wt
    end
  end
  parts[#parts + 1] = "]}"
  return concat(parts)
end

local PAGE = [==[<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>moonsocket status</title><link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root{--connections:#2ca02c;--in:#1f77b4;--out:#d62728;
--backpressure:#ff7f0e;--p99:#9467bd}
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}table{border-collapse:collapse;margin:1em 0}
td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
#state{color:#888}canvas{border:1px solid #ddd;display:block}
.charts{display:flex;flex-wrap:wrap;gap:1em}.charts h2{font-size:1em;
margin:.3em 0}.key{font-weight:bold}
</style></head><body>
<h1>moonsocket status <span id="state" data-state="connecting">
connecting</span></h1>
<table><thead><tr><th></th><th>all</th></tr></thead>
<tbody id="figures"></tbody></table>
<div class="charts">
<div><h2>WebSockets open</h2>
<canvas id="chart-connections" width="360" height="120"></canvas></div>
<div><h2>messages/s: <span class="key" style="color:var(--in)">in</span>,
<span class="key" style="color:var(--out)">out</span></h2>
<canvas id="chart-messages" width="360" height="120"></canvas></div>
<div><h2>back-pressure closes per interval</h2>
<canvas id="chart-backpressure" width="360" height="120"></canvas></div>
<div><h2>Lua callback time, 99th percentile (ms)</h2>
<canvas id="chart-p99" width="360" height="120"></canvas></div>
</div>
<script>
"use strict";
var ROWS = [["websockets", "WebSockets open"], ["http", "HTTP connections"],
  ["messages_in_per_s", "messages in /s"],
  ["messages_out_per_s", "messages out /s"],
  ["bytes_in_per_s", "bytes in /s"], ["bytes_out_per_s", "bytes out /s"],
  ["callback_p99_s", "Lua callback p99 (ms)"],
  ["queued", "sends queued (total)"], ["dropped", "sends dropped (total)"],
  ["backpressure_closes", "back-pressure closes (total)"],
  ["subscriptions", "subscriptions"], ["lua_heap_bytes", "Lua heap (KiB)"],
  ["resident_bytes", "resident memory (KiB)"],
  ["open_fds", "open descriptors"]];
var CHARTS = [["chart-connections", [["websockets", "connections"]]],
  ["chart-messages", [["messages_in_per_s", "in"],
                      ["messages_out_per_s", "out"]]],
  ["chart-backpressure", [["backpressure_per_interval", "backpressure"]]],
  ["chart-p99", [["callback_p99_ms", "p99"]]]];
var KEEP = 120, points = [], last = null;  // not "history": window's
function shown(key, v) {
  if (v === null || v === undefined) return "";
  if (key === "callback_p99_s") return (v * 1000).toFixed(3);
  if (/_bytes$/.test(key)) return String(Math.round(v / 1024));
  if (/_per_s$/.test(key)) return v.toFixed(1);
  return String(v);
}
function cell(row, text, tag) {
  var c = document.createElement(tag || "td");
  c.textContent = text;
  row.appendChild(c);
  return c;
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
    var all = cell(row, shown(r[0], s[r[0]]));
    all.id = "v-" + r[0];
    all.dataset.value = s[r[0]] === null ? "" : String(s[r[0]]);
    s.workers.forEach(function (w) { cell(row, shown(r[0], w[r[0]])); });
    body.appendChild(row);
  });
  points.push({ websockets: s.websockets,
    messages_in_per_s: s.messages_in_per_s,
    messages_out_per_s: s.messages_out_per_s,
    backpressure_per_interval: last === null ? 0 :
      Math.max(0, s.backpressure_closes - last.backpressure_closes),
    callback_p99_ms: s.callback_p99_s === null ? null
      : s.callback_p99_s * 1000 });
  last = s;
  if (points.length > KEEP) points.shift();
  CHARTS.forEach(function (c) { draw(c[0], c[1]); });
}
function draw(id, series) {
  var c = document.getElementById(id), g = c.getContext("2d");
  var style = getComputedStyle(document.documentElement), max = 0;
  points.forEach(function (h) {
    series.forEach(function (k) {
      if (h[k[0]] !== null) max = Math.max(max, h[k[0]]);
    });
  });
  max = max > 0 ? max * 1.1 : 1;
  var step = (c.width - 4) / (KEEP - 1);
  g.clearRect(0, 0, c.width, c.height);
  series.forEach(function (k, n) {
    g.lineWidth = n ? 2 : 5;     /* the first shows round the second */
    g.strokeStyle = style.getPropertyValue("--" + k[1]).trim();
    g.beginPath();
    var pen = false;
    points.forEach(function (h, i) {
      var v = h[k[0]];
      if (v === null) { pen = false; return; }
      var x = c.width - 2 - (points.length - 1 - i) * step;
      var y = c.height - 3 - (c.height - 6) * v / max;
      if (pen) g.lineTo(x, y); else g.moveTo(x, y);
      pen = true;
    });
    g.stroke();
  });
  g.fillStyle = "#888";
  g.fillText(String(+max.toPrecision(3)), 4, 12);
}
function state(text) {
  var e = document.getElementById("state");
  e.textContent = text;
  e.dataset.state = text;
}
function connect() {
  var url = (location.protocol === "https:" ? "wss://" : "ws://") +
    location.host + location.pathname;
  var ws = new WebSocket(url);
  ws.onopen = function () { state("live"); };
  ws.onmessage = function (e) { show(JSON.parse(e.data)); };
  ws.onclose = function () {
    state("reconnecting");
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
    local text = _M.sample(state)
    for ws in pairs(watchers) do ws:send(text) end
  end
  local handler = {
    open = function(ws)
      watchers[ws] = true
      if not timer then
        state = {}
        _M.sample(state)                    -- the rates' first point
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
