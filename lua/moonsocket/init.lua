-- moonsocket: an app is a pipeline of middleware in front of WebSocket
-- routes; the C core (moonsocket.core) does the sockets and the protocol.
local core = require "moonsocket.core"
local policy = require "moonsocket.policy"
local resolver = require "moonsocket.resolver"
local runtime = require "moonsocket.runtime"

local error = error
local format = string.format
local getinfo = debug.getinfo
local io_stderr = io.stderr
local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local type = type

local _M = { _VERSION = core._VERSION, core = core,
             http = require "moonsocket.http",
             socket = require "moonsocket.socket",
             url = require "moonsocket.url" }

-- Options that Lua applies (per app or per route); the rest go to the
-- core, which checks them.
local LUA_OPTIONS = {
  allowed_origins = true, upgrade = true, subprotocols = true,
  select_subprotocol = true, subprotocol_required = true,
}

local function split_options(options, what)
  local core_opts, lua_opts = {}, {}
  if options ~= nil and type(options) ~= "table" then
    error("bad argument to '" .. what .. "' (table of options expected, got "
          .. type(options) .. ")", 3)
  end
  for k, v in pairs(options or {}) do
    if LUA_OPTIONS[k] then lua_opts[k] = v else core_opts[k] = v end
  end
  return core_opts, lua_opts
end

local PLAIN = { ["Content-Type"] = "text/plain; charset=utf-8" }

local app_mt = {}
app_mt.__index = app_mt

-- moonsocket.app(options): the core's options (README: Options) and the
-- route policies, which every route gets unless it sets its own.
function _M.app(options)
  local core_opts, lua_opts = split_options(options, "app")
  -- per process, not per server: the histories of app:history
  local history_bytes = core_opts.max_history_bytes
  core_opts.max_history_bytes = nil
  core.route_options(core_opts)          -- a bad option fails here
  if history_bytes ~= nil then
    if math.type(history_bytes) ~= "integer" then
      error("option 'max_history_bytes' must be an integer from 1024 to "
            .. "1099511627776", 2)
    end
    core.history_limit(history_bytes)
  end
  return setmetatable({ core_options = core_opts, policy = lua_opts,
                        stack = {}, routes = {}, servers = {},
                        ws_routes = {} }, app_mt)
end

-- app:use(middleware): middleware(req, next) answers the request by
-- returning status, headers, body; accepts a WebSocket by returning its
-- handler; or passes the request on with `return next()`.
function app_mt:use(middleware)
  if type(middleware) ~= "function" then
    error("bad argument #1 to 'use' (function expected, got "
          .. type(middleware) .. ")", 2)
  end
  local stack = self.stack
  stack[#stack + 1] = middleware
  self.sealed = true       -- routes after it are not in ws_routes
  return self
end

local function check_route_policy(p)
  for _, name in ipairs { "upgrade", "select_subprotocol" } do
    if p[name] ~= nil and type(p[name]) ~= "function" then
      error("option '" .. name .. "' must be a function", 4)
    end
  end
  if p.subprotocols ~= nil then
    if type(p.subprotocols) ~= "table" then
      error("option 'subprotocols' must be a list of names", 4)
    end
    for _, name in ipairs(p.subprotocols) do
      if type(name) ~= "string" or not name:match("^[%w!#$%%&'*+.^_`|~-]+$")
      then
        error("option 'subprotocols' holds an invalid name", 4)
      end
    end
  end
end

-- A hook's verdict that is none of those it may give: the programmer's
-- mistake, raised (answered 500, logged), never an upgrade.
local function bad_verdict(route, verdict)
  local hook = getinfo(route.upgrade, "S")
  local t = type(verdict)
  local shown = (t == "string" or t == "boolean") and
    format(" (%q)", tostring(verdict):sub(1, 64)) or ""
  error(format("the upgrade hook of route '%s' (%s:%d) returned a %s%s; "
    .. "it must return true, a table, false, nil or a status",
    route.path, hook.short_src, hook.linedefined, t, shown), 0)
end

-- Accept or refuse an upgrade on a route: origin, hook, subprotocol.
-- The hook accepts only with true or a table (ws.data): it fails closed.
local function admit(route, handler, req)
  if not policy.origin_allowed(route.origins, req) then
    return 403, PLAIN, "403 Forbidden: origin not allowed\n"
  end
  local data
  if route.upgrade then
    req.cookies = policy.cookies(req.headers.cookie)
    local verdict, headers, body = route.upgrade(req)
    if verdict == false or verdict == nil then
      return 403, PLAIN, "403 Forbidden\n"
    elseif type(verdict) == "number" then
      return verdict, headers, body
    elseif type(verdict) == "table" then
      data = verdict
    elseif verdict ~= true then
      bad_verdict(route, verdict)
    end
  end
  local protocol
  if route.speaks or route.select_subprotocol then
    protocol = policy.choose_subprotocol(route, req)
    if protocol == nil and route.subprotocol_required ~= false then
      return 400, PLAIN, "400 Bad Request: no supported subprotocol\n"
    end
  end
  return handler, route.core, data, protocol
end

-- app:ws(path, handler, options): a WebSocket route.  handler is a table
-- of callbacks (open, message, close, drain, pong) or a function run as
-- a coroutine per connection.  options override the app's for this
-- route: the per-route core options and the policies.
function app_mt:ws(path, handler, options)
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    error("bad argument #1 to 'ws' (path starting with '/' expected)", 2)
  end
  local t = type(handler)
  if t ~= "table" and t ~= "function" then
    error("bad argument #2 to 'ws' (table or function expected, got "
          .. t .. ")", 2)
  end
  -- `app:ws(path, require "m")` passes require's second result, the
  -- module's file name: that is no options table
  if type(options) == "string" then options = nil end
  local core_opts, lua_opts = split_options(options, "ws")
  local p = {}
  for k, v in pairs(self.policy) do p[k] = v end
  for k, v in pairs(lua_opts) do p[k] = v end
  check_route_policy(p)
  local route = {
    path = path,
    core = core.route_options(self.core_options, core_opts, path),
    origins = policy.origin_policy(p.allowed_origins),
    upgrade = p.upgrade,
    select_subprotocol = p.select_subprotocol,
    subprotocol_required = p.subprotocol_required,
  }
  if p.subprotocols then
    route.speaks = {}
    for _, name in ipairs(p.subprotocols) do route.speaks[name] = true end
  end
  self.routes[#self.routes + 1] = route
  -- the first route of a path that no other middleware comes before,
  -- with nothing to decide about an upgrade, is what the core opens
  -- upgrades to by itself (core.listen's ws_routes), without the
  -- pipeline or a request table; false marks a path whose first route
  -- has hooks
  if not self.sealed and self.ws_routes[path] == nil then
    local plain = not (route.origins or route.upgrade or route.speaks
                       or route.select_subprotocol)
    self.ws_routes[path] = plain and { handler, route.core }
    self.ws_fast = self.ws_fast or plain
  end
  local sealed = self.sealed
  self:use(function(req, next)
    if req.path ~= path then return next() end
    if not req.upgrade then return handler end   -- the core answers 426
    return admit(route, handler, req)
  end)
  self.sealed = sealed    -- a route passes other paths on: no seal
  return self
end

local respond, WAITING, FAILED = core.respond, core.WAITING, core.FAILED
local parse_query = _M.url.parse_query

local body_read, body_wait = core.body_read, core.body_wait
local request_headers = core.request_headers
local math_type = math.type
local rawget, rawset = rawget, rawset
local waiter, wait, wake = runtime.waiter, runtime.wait, runtime.wake

-- Read the body of req: all of it (n nil) or up to n bytes, waiting
-- while it arrives.
local function read_body(req, n, what)
  while true do
    local data, err, code = body_read(req, n)
    if data ~= WAITING then return data, err, code end
    local co = waiter(what)
    body_wait(req, function() wake(co) end)
    wait(co, function() body_wait(req, nil) end)
  end
end

local BODY = {}          -- req[BODY]: the body, once req:body() read it
local request_methods = {}

-- req:body(): the whole body (what req:read has not taken), waiting
-- while it arrives; "" when there is none.  nil, message, code when it
-- cannot be read: "ETOOLARGE" (over max_body_size: answered 413),
-- "EINVAL" (bad chunked coding: 400), "ETIMEDOUT" (body_timeout: 408),
-- "ECLOSED" (the client left, or the request was answered).
function request_methods.body(req)
  local body = rawget(req, BODY)
  if body then return body end
  local err, code
  body, err, code = read_body(req, nil, "req:body()")
  if body then rawset(req, BODY, body) end
  return body, err, code
end

-- req:read(n): the next 1 to n bytes of the body, waiting for some;
-- nil at its end; nil, message, code as req:body().
function request_methods.read(req, n)
  if math_type(n) ~= "integer" or n < 1 then
    error("bad argument #1 to 'read' (positive integer expected, got "
      .. (math_type(n) or type(n)) .. ")", 2)
  end
  return read_body(req, n, "req:read()")
end

-- What a request table has beyond its fields: req.headers, made from
-- the head when first read (core.request_headers); req.args, the query
-- decoded (url.parse_query), made when first read; req:body() and
-- req:read(n).
local request_mt = {
  __index = function(req, key)
    if key == "headers" then return request_headers(req) end
    if key == "args" then
      local args = parse_query(req.query)
      req.args = args
      return args
    end
    return request_methods[key]
  end,
}
local co_resume, co_running, co_yield =
  coroutine.resume, coroutine.running, coroutine.yield
local traceback = debug.traceback
local xpcall = xpcall
local DONE = {}          -- a pipeline answered without waiting
local POOL_MAX = 64      -- idle pipeline coroutines kept per app

-- The request handler the core calls: runs the middleware in order, in
-- a pooled coroutine, so that a middleware may wait (sleep, join, a
-- queue).  One that does not wait is answered at once, as the results
-- of this call; one that waits answers later, through core.respond.
function app_mt:handler()
  local stack = self.stack
  local function step(req, i)
    local middleware = stack[i]
    if not middleware then return nil end      -- the core answers 404
    return middleware(req, function() return step(req, i + 1) end)
  end
  local pool, npool = {}, 0
  local inline           -- the coroutine whose answer the core awaits
  -- A pipeline coroutine answers requests one after another: yields
  -- DONE and the answer to the handler when the request did not wait;
  -- after a wait, answers through core.respond and ends.
  local function body(conn, req)
    while true do
      local ok, a, b, c, d = xpcall(step, traceback, req, 1)
      if not ok then a, b = FAILED, a end
      if inline ~= co_running() then
        respond(conn, req, a, b, c, d)
        return
      end
      conn, req = co_yield(DONE, a, b, c, d)
    end
  end
  return function(req, conn)
    setmetatable(req, request_mt)
    local co
    if npool > 0 then
      co, pool[npool], npool = pool[npool], nil, npool - 1
    else
      co = runtime.coroutine(body)
    end
    local outer = inline
    inline = co
    local _, tag, a, b, c, d = co_resume(co, conn, req)
    inline = outer
    if tag ~= DONE then return WAITING end     -- it waits
    if npool < POOL_MAX then
      npool = npool + 1
      pool[npool] = co
    end
    return a, b, c, d
  end
end

-- app:listen{host = "127.0.0.1", port = 5000, backlog = 511, tls = nil,
-- workers = 1}: returns the server, or nil, message, "ELISTEN" (or "ETLS"
-- when the certificates cannot be loaded).  workers = N (or "auto", one
-- per CPU) serves in N forked processes that share the port; run() then
-- supervises them, and a publish reaches the subscribers of all.  tls = { cert, key, password,
-- min_version, ciphers, ciphersuites, sni } serves https and wss.  http2
-- (true with tls, else false) serves HTTP/2 beside HTTP/1.1.
function app_mt:listen(where)
  where = where or {}
  local server, err, code = core.listen {
    host = where.host, port = where.port, backlog = where.backlog,
    tls = where.tls, handler = self:handler(), options = self.core_options,
    workers = where.workers, http2 = where.http2,
    -- (routes added later go into the same table, until a middleware)
    ws_routes = (self.ws_fast or not self.sealed) and self.ws_routes or nil,
  }
  if not server then return nil, err, code end
  local host, port = server:address()
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  if self.core_options.log_format == "json" then
    core.log("info", "listening on " .. host .. ":" .. port)
  else
    io_stderr:write("moonsocket: listening on ", host, ":", port, "\n")
  end
  self.servers[#self.servers + 1] = server
  return server
end

-- app:on_start(fn): fn(worker) when the process begins to serve: once in
-- each worker after its fork (worker is its number), or once in the one
-- process (worker is nil); in its own coroutine, so it may wait.  The
-- place to start an app's timers when it runs with workers.
function app_mt:on_start(fn)
  runtime.on_start(fn)
  return self
end

-- app:on_stop(fn): fn(worker) when a graceful shutdown begins (SIGTERM,
-- SIGINT, moonsocket.shutdown), in a process that started.
function app_mt:on_stop(fn)
  runtime.on_stop(fn)
  return self
end

-- app:close(): stop accepting and close this app's connections (1001).
function app_mt:close()
  for _, server in ipairs(self.servers) do server:close() end
end

-- app:shutdown(timeout): stop accepting, close every WebSocket with 1001,
-- wait up to timeout seconds (5) for the closing handshakes; messages
-- already queued go out before the close frames.
function app_mt:shutdown(timeout)
  for _, server in ipairs(self.servers) do server:shutdown(timeout) end
end

-- app:publish(topic, data, kind): queue data ("text", the default, or
-- "binary") to every socket subscribed to topic (ws:subscribe); returns
-- how many it reached, and for a topic with history its position
-- { epoch, offset }.  The frame is built once for all of them.
function app_mt:publish(topic, data, kind)
  return core.publish(topic, data, kind)
end

local HISTORY_OPTIONS = { size = true, ttl = true }

-- app:history(pattern, { size = 100, ttl = 0 }): topics named pattern, or
-- beginning with it when it ends with "*" ("room:*"), keep their last
-- size messages (younger than ttl seconds, 0: no age limit), each at a
-- position, and their subscribers get each message behind its position
-- ("<epoch>:<offset> "); ws:subscribe(topic, { since = position }) then
-- recovers what a client missed (docs/pubsub.md).  Returns the app.
function app_mt:history(pattern, options)
  if options ~= nil and type(options) ~= "table" then
    error("bad argument #2 to 'history' (table of options expected, got "
          .. type(options) .. ")", 2)
  end
  options = options or {}
  for k in pairs(options) do
    if not HISTORY_OPTIONS[k] then
      error("bad argument #2 to 'history' (unknown option '"
            .. tostring(k) .. "')", 2)
    end
  end
  local size, ttl = options.size or 100, options.ttl or 0
  if math.type(size) ~= "integer" or size < 1 or size > 10000000 then
    error("bad argument #2 to 'history' (size must be an integer from 1 "
          .. "to 10000000)", 2)
  end
  if type(ttl) ~= "number" or ttl < 0 or ttl > 31622400 then
    error("bad argument #2 to 'history' (ttl must be a number of seconds "
          .. "from 0 to 31622400)", 2)
  end
  if type(pattern) ~= "string" then
    error("bad argument #1 to 'history' (string expected, got "
          .. type(pattern) .. ")", 2)
  end
  core.history(pattern, size, ttl)
  return self
end

-- app:history_read(topic, { since = position, limit = 0, reverse = false })
-- -> list of { offset, data, kind }, position of the last message: the
-- messages kept after since (all without), oldest first or newest first,
-- at most limit (0: all); nil, message, "EEPOCH" when since is of
-- another epoch.
function app_mt:history_read(topic, options)
  if options ~= nil and type(options) ~= "table" then
    error("bad argument #2 to 'history_read' (table of options expected, "
          .. "got " .. type(options) .. ")", 2)
  end
  options = options or {}
  return core.history_read(topic, options.since, options.limit,
                           options.reverse)
end

-- Presence: ws:subscribe(topic, { presence = info }) makes the socket
-- present on topic while subscribed; these read who is, in every
-- worker.  The handlers of on_presence are the process's, of any app.
local presence_handlers = {}   -- { prefix | name, exact, fn }

-- app:presence(topic): the info tables of the sockets present on topic,
-- in every worker, in the order they joined.
function app_mt:presence(topic)
  return core.presence(topic)
end

-- app:presence_count(topic): how many, without making the list.
function app_mt:presence_count(topic)
  return core.presence_count(topic)
end

local function presence_task(fn, topic, kind, info)
  local ok, err = xpcall(fn, traceback, topic, kind, info)
  if not ok then
    core.log("error", format("error in presence handler: %s",
                             tostring(err)))
  end
end

local function presence_event(topic, kind, info)
  for _, h in ipairs(presence_handlers) do
    if (h.exact and topic == h.name) or
       (not h.exact and topic:sub(1, #h.name) == h.name) then
      runtime.run(presence_task, h.fn, topic, kind, info)
    end
  end
end

-- app:on_presence(pattern, fn): fn(topic, "join" | "leave", info) when a
-- socket becomes present on a topic named pattern (or beginning with it:
-- "room:*"), in this worker or another, or stops being; in its own
-- coroutine, so it may wait.  Returns the app.
function app_mt:on_presence(pattern, fn)
  if type(pattern) ~= "string" or pattern == "" then
    error("bad argument #1 to 'on_presence' (topic name or pattern "
          .. "expected)", 2)
  end
  if type(fn) ~= "function" then
    error("bad argument #2 to 'on_presence' (function expected, got "
          .. type(fn) .. ")", 2)
  end
  local star = pattern:find("*", 1, true)
  if star and star ~= #pattern then
    error("bad argument #1 to 'on_presence' ('*' may only end a pattern)",
          2)
  end
  presence_handlers[#presence_handlers + 1] = {
    name = star and pattern:sub(1, -2) or pattern, exact = not star, fn = fn }
  core.presence_hook(presence_event)
  return self
end

-- app:subscribers(topic): how many sockets are subscribed to topic.
function app_mt:subscribers(topic)
  return core.subscribers(topic)
end

-- app:use_backplane{ redis = "redis://127.0.0.1:6379",
-- channel_prefix = "moonsocket:", max_pending = 16 MiB }: from now on
-- app:publish and ws:publish also reach the subscribers of every other
-- process using that Redis (README: Backplane).  Returns the app.
function app_mt:use_backplane(options)
  if type(options) ~= "table" then
    error("bad argument #1 to 'use_backplane' (table of options expected, "
          .. "got " .. type(options) .. ")", 2)
  end
  self.backplane = core.backplane(options)   -- a bad option fails here
  return self
end

-- moonsocket.static(dir, opts): middleware serving the files of dir.
function _M.static(dir, opts)
  return require("moonsocket.static").new(dir, opts)
end

-- moonsocket.metrics{ path = "/metrics" }: middleware serving the
-- core's counters to Prometheus; moonsocket.metrics.collect(): a table.
-- Loaded when first used: an app that does not use it keeps a smaller
-- heap (the echo's garbage collection measured 5 % dearer with it).
_M.metrics = setmetatable({}, {
  __index = function(_, name) return require("moonsocket.metrics")[name] end,
  __call = function(_, opts)
    return require("moonsocket.metrics").middleware(opts)
  end,
})

-- moonsocket.status{ path = "/status" }: a live status page, the
-- figures pushed over a WebSocket; loaded when first used.
function _M.status(opts)
  return require("moonsocket.status").middleware(opts)
end

-- Options of moonsocket.connect that are not the core's WebSocket options.
local CLIENT_OPTIONS = {
  handler = true, protocols = true, headers = true, origin = true,
  tls = true, handshake_timeout = true,
}

-- "ws://host:port/path?query" (RFC 6455 section 3): secure, host, port,
-- target; nil and a message for anything else.
local function parse_url(url)
  local scheme, rest = url:match("^(%a+)://(.*)$")
  scheme = scheme and scheme:lower()
  if scheme ~= "ws" and scheme ~= "wss" then
    return nil, "the scheme must be ws:// or wss://"
  end
  if rest:find("#", 1, true) then
    return nil, "a WebSocket URL has no fragment"
  end
  local authority, target = rest:match("^([^/?]*)(.*)$")
  if target == "" then target = "/"
  elseif target:sub(1, 1) == "?" then target = "/" .. target end
  if target:find("[%s%c]") then
    return nil, "the path holds spaces or control characters"
  end
  local host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:@%[%]]+):?(%d*)$") end
  if not host then return nil, "no valid host" end
  local secure = scheme == "wss"
  port = port ~= "" and tonumber(port) or (secure and 443 or 80)
  if port < 1 or port > 65535 then return nil, "port out of range" end
  return { secure = secure, host = host, port = port, target = target }
end

-- moonsocket.connect(url, opts): a client WebSocket to url, connecting
-- on the loop; the ws object comes back at once (ws.state is
-- "connecting").  opts.handler is a table of callbacks or a function run
-- as a coroutine, as on the server; the other options are in README.md
-- (Client).  A malformed URL or option raises.
function _M.connect(url, opts)
  if type(url) ~= "string" then
    error("bad argument #1 to 'connect' (string expected, got "
          .. type(url) .. ")", 2)
  end
  if type(opts) ~= "table" then
    error("bad argument #2 to 'connect' (table of options expected, got "
          .. type(opts) .. ")", 2)
  end
  local params, err = parse_url(url)
  if not params then
    error("bad argument #1 to 'connect' (" .. err .. ")", 2)
  end
  local core_opts = {}
  for k, v in pairs(opts) do
    if CLIENT_OPTIONS[k] then params[k] = v else core_opts[k] = v end
  end
  params.options = core_opts
  return core.connect(params)
end

-- Time and threads (moonsocket.runtime): after(seconds, fn, ...) and
-- every(seconds, fn, ...) run fn in its own coroutine, once or every
-- period, and return the timer (timer:cancel()); sleep(seconds) waits in
-- a coroutine moonsocket runs; spawn(fn, ...) starts a light thread
-- (thread:join(), thread:cancel()); queue() hands values between them.
_M.after = runtime.after
_M.every = runtime.every
_M.sleep = runtime.sleep
_M.spawn = runtime.spawn
_M.queue = runtime.queue

-- Names (moonsocket.resolver): resolve(name) waits, in a coroutine
-- moonsocket runs, for the addresses of name, looked up on the loop;
-- resolver{ servers, timeout, cache } picks the DNS servers, as nginx's
-- resolver directive does.
_M.resolve = resolver.resolve
_M.resolver = core.resolver

-- worker(): this process's worker number (1..n), nil without workers.
_M.worker = core.worker

-- Serve until every server has closed; SIGINT and SIGTERM shut down.
_M.run = core.run

-- Close every WebSocket with 1001, wait up to timeout seconds (5) for
-- the close handshakes, then stop.
_M.shutdown = core.shutdown

return _M
