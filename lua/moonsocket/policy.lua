-- moonsocket.policy: the checks a WebSocket route makes before the core
-- answers 101: allowed origins, the upgrade hook's verdict, subprotocols.
local error = error
local gmatch = string.gmatch
local ipairs = ipairs
local lower = string.lower
local match = string.match
local type = type

local _M = { _VERSION = "0.1.0" }

local default_ports = { http = "80", https = "443", ws = "80", wss = "443" }

-- An origin as RFC 6454 section 6.2 serialises it: lowercase scheme and
-- host, the port only when it is not the scheme's default.  Anything
-- else ("null", garbage) is kept as it is, lowercased.
function _M.serialize_origin(origin)
  local scheme, host, port = match(origin, "^(%a[%w+.-]*)://([^/:]+):?(%d*)/?$")
  if not scheme then
    scheme, host = match(origin, "^(%a[%w+.-]*)://(%[[%x:.]+%])/?$")
    port = ""
    if not scheme then
      scheme, host, port = match(origin, "^(%a[%w+.-]*)://(%[[%x:.]+%]):(%d+)/?$")
    end
  end
  if not scheme then return lower(origin) end
  scheme, host = lower(scheme), lower(host)
  if port == "" or port == default_ports[scheme] then
    return scheme .. "://" .. host
  end
  return scheme .. "://" .. host .. ":" .. port
end

-- A set of serialised origins from a list, or the function itself.
function _M.origin_policy(allowed)
  if allowed == nil or type(allowed) == "function" then return allowed end
  if type(allowed) ~= "table" then
    error("option 'allowed_origins' must be a list of origins or a "
          .. "function", 3)
  end
  local set = {}
  for _, origin in ipairs(allowed) do
    if type(origin) ~= "string" then
      error("option 'allowed_origins' must hold strings", 3)
    end
    set[_M.serialize_origin(origin)] = true
  end
  return set
end

-- Whether the request's Origin passes the policy.  A request without
-- Origin (not from a browser) passes a list; a function decides alone.
function _M.origin_allowed(policy, req)
  if policy == nil then return true end
  local origin = req.headers.origin
  if type(policy) == "function" then return policy(origin, req) == true end
  if origin == nil then return true end
  return policy[_M.serialize_origin(origin)] == true
end

-- The tokens of a comma-separated header value, in order.
function _M.tokens(value)
  local list = {}
  for token in gmatch(value or "", "[^,%s]+") do list[#list + 1] = token end
  return list
end

-- Cookie: a=1; b=2 -> { a = "1", b = "2" } (RFC 6265 section 4.2.1)
function _M.cookies(value)
  local jar = {}
  for pair in gmatch(value or "", "[^;]+") do
    local name, val = match(pair, "^%s*([^=%s]+)%s*=%s*(.-)%s*$")
    if name then
      jar[name] = match(val, '^"(.*)"$') or val
    end
  end
  return jar
end

-- The subprotocol to answer with: the chooser's pick, else the first of
-- the client's list that the route speaks.  nil when nothing matches.
function _M.choose_subprotocol(route, req)
  local offered = _M.tokens(req.headers["sec-websocket-protocol"])
  if route.select_subprotocol then
    local pick = route.select_subprotocol(offered, req)
    for _, name in ipairs(offered) do
      if name == pick then return pick end
    end
    return nil                -- a pick the client did not offer is none
  end
  for _, name in ipairs(offered) do
    if route.speaks[name] then return name end
  end
  return nil
end

return _M
