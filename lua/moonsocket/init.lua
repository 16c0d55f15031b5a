-- moonsocket: an app is a pipeline of middleware in front of WebSocket
-- routes; the C core (moonsocket.core) does the sockets and the protocol.
local core = require "moonsocket.core"

local error = error
local io_stderr = io.stderr
local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local type = type

local _M = { _VERSION = core._VERSION, core = core }

local app_mt = {}
app_mt.__index = app_mt

-- moonsocket.app(options): options are the core's server options
-- (max_message_size, keep_alive_interval, ...); listen() checks them.
function _M.app(options)
  if options ~= nil and type(options) ~= "table" then
    error("bad argument #1 to 'app' (table expected, got "
          .. type(options) .. ")", 2)
  end
  local opts = {}
  for k, v in pairs(options or {}) do opts[k] = v end
  return setmetatable({ options = opts, stack = {}, servers = {} }, app_mt)
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
  return self
end

-- app:ws(path, handler): a WebSocket route.  handler is a table of
-- callbacks (open, message, close, drain, pong) or a function run as a
-- coroutine per connection.
function app_mt:ws(path, handler)
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    error("bad argument #1 to 'ws' (path starting with '/' expected)", 2)
  end
  local t = type(handler)
  if t ~= "table" and t ~= "function" then
    error("bad argument #2 to 'ws' (table or function expected, got "
          .. t .. ")", 2)
  end
  return self:use(function(req, next)
    if req.path == path then return handler end
    return next()
  end)
end

-- The request handler the core calls: runs the middleware in order.
function app_mt:handler()
  local stack = self.stack
  local function step(req, i)
    local middleware = stack[i]
    if not middleware then return nil end      -- the core answers 404
    return middleware(req, function() return step(req, i + 1) end)
  end
  return function(req) return step(req, 1) end
end

-- app:listen{host = "127.0.0.1", port = 5000, backlog = 511}: returns
-- the server, or nil, message, "ELISTEN".
function app_mt:listen(where)
  where = where or {}
  local opts = { handler = self:handler() }
  for k, v in pairs(self.options) do opts[k] = v end
  for _, k in ipairs { "host", "port", "backlog" } do opts[k] = where[k] end
  local server, err, code = core.listen(opts)
  if not server then return nil, err, code end
  local host, port = server:address()
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  io_stderr:write("moonsocket: listening on ", host, ":", port, "\n")
  self.servers[#self.servers + 1] = server
  return server
end

-- app:close(): stop accepting and close this app's connections (1001).
function app_mt:close()
  for _, server in ipairs(self.servers) do server:close() end
end

-- moonsocket.static(dir, opts): middleware serving the files of dir.
function _M.static(dir, opts)
  return require("moonsocket.static").new(dir, opts)
end

-- Serve until every server has closed; SIGINT and SIGTERM shut down.
_M.run = core.run

-- Close every WebSocket with 1001, wait up to timeout seconds (5) for
-- the close handshakes, then stop.
_M.shutdown = core.shutdown

return _M
