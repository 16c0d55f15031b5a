-- moonsocket.http: an HTTP/1.1 client on moonsocket's sockets.  A
-- request waits in the running coroutine (middleware, a handler, a
-- timer, a thread) while the loop serves everyone else; connections
-- are kept alive in the sockets' pool.
--
--   local status, headers, body = http.request("https://api.example/x", {
--     method = "POST", headers = { ["Content-Type"] = "application/json" },
--     body = '{"a":1}', timeout = 5 })
local concat = table.concat
local error = error
local find = string.find
local format = string.format
local lower = string.lower
local match = string.match
local pairs = pairs
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local type = type

local _M = { _VERSION = "0.1.0" }

local DEFAULTS = {
  timeout = 30,               -- seconds for each connect, send, receive
  max_body_size = 16 * 1024 * 1024,  -- a larger response body fails
  max_header_size = 64 * 1024,       -- the response head, likewise
  max_headers = 100,
  redirects = 0,              -- redirects followed; 0: none
  keepalive = 60,             -- seconds a pooled connection may idle;
                              -- false: close after each request
  pool_size = 32,             -- idle connections kept per host and port
}
_M.DEFAULTS = DEFAULTS

local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true,
                   [308] = true }
-- methods a request on a pooled connection the server had closed may
-- be sent again with (RFC 9110 section 9.2.2)
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true,
                     OPTIONS = true, TRACE = true }
-- fields the client writes itself
local OWN = { host = true, ["content-length"] = true,
              ["transfer-encoding"] = true, connection = true }

local tcp                     -- moonsocket.socket.tcp, loaded when used

------------------------------------------------------------------------
-- The URL
------------------------------------------------------------------------

-- "http[s]://host[:port][/path][?query]" -> scheme, host, port, target;
-- or nil, why.
local function parse_url(url)
  local scheme, rest = match(url, "^(%a[%w+.-]*)://(.*)$")
  scheme = scheme and lower(scheme)
  if scheme ~= "http" and scheme ~= "https" then
    return nil, "an http:// or https:// URL expected"
  end
  local authority, target = match(rest, "^([^/?#]*)([^#]*)")
  if find(authority, "@", 1, true) then
    return nil, "a URL with userinfo is not accepted"
  end
  local host, port = match(authority, "^%[([%x:.]+)%]:?(%d*)$")
  if not host then host, port = match(authority, "^([^:]+):?(%d*)$") end
  if not host or host == "" then return nil, "the URL has no host" end
  port = port ~= "" and tonumber(port) or (scheme == "https" and 443 or 80)
  if port < 1 or port > 65535 then return nil, "invalid port" end
  if target == "" then target = "/"
  elseif sub(target, 1, 1) == "?" then target = "/" .. target end
  return scheme, host, port, target
end
_M.parse_url = parse_url

------------------------------------------------------------------------
-- Reading the response
------------------------------------------------------------------------

-- The status line and fields: status, headers (names lowercased,
-- repeated fields joined with ", "), version; or nil, why, partial
-- where partial says whether any byte came.
local function read_head(sock, opts)
  local line, err = sock:receive("*l")
  if not line then return nil, err, false end
  local version, status = match(line, "^HTTP/1%.([01]) (%d%d%d)")
  if not version then return nil, "invalid status line", true end
  local headers, size, count = {}, #line, 0
  while true do
    line, err = sock:receive("*l")
    if not line then return nil, err, true end
    if line == "" then break end
    size, count = size + #line + 2, count + 1
    if size > opts.max_header_size or count > opts.max_headers then
      return nil, "response head too large", true
    end
    local name, value = match(line, "^([^:%s]+):[ \t]*(.-)[ \t]*$")
    if not name then return nil, "invalid header line", true end
    name = lower(name)
    local was = headers[name]
    headers[name] = was and was .. ", " .. value or value
  end
  return tonumber(status), headers, version
end

-- A chunked body (RFC 9112 section 7.1): the body, or nil, why.
local function read_chunked(sock, limit)
  local parts, size = {}, 0
  while true do
    local line, err = sock:receive("*l")
    if not line then return nil, err end
    local hex = match(line, "^(%x+)[ \t]*;?") or match(line, "^(%x+)$")
    if not hex or #hex > 15 then return nil, "invalid chunk size" end
    local n = tonumber(hex, 16)
    if n == 0 then break end
    size = size + n
    if size > limit then return nil, "response body too large" end
    local data
    data, err = sock:receive(n)
    if not data then return nil, err end
    parts[#parts + 1] = data
    line, err = sock:receive("*l")
    if line ~= "" then return nil, err or "invalid chunk end" end
  end
  repeat                                     -- the trailer, dropped
    local line, err = sock:receive("*l")
    if not line then return nil, err end
  until line == ""
  return concat(parts)
end

-- The body of a response to method: body, reusable; or nil, why.
local function read_body(sock, method, status, headers, opts)
  if method == "HEAD" or status == 204 or status == 304
      or (status >= 100 and status < 200) then
    return "", true
  end
  local te = headers["transfer-encoding"]
  if te then
    if lower(te) ~= "chunked" then
      return nil, "unsupported transfer coding '" .. te .. "'"
    end
    local body, err = read_chunked(sock, opts.max_body_size)
    if not body then return nil, err end
    return body, true
  end
  local cl = headers["content-length"]
  if cl then
    local n = match(cl, "^%d+$") and tonumber(cl)
    if not n then return nil, "invalid Content-Length" end
    if n > opts.max_body_size then return nil, "response body too large" end
    if n == 0 then return "", true end
    local data, err = sock:receive(n)
    if not data then return nil, err end
    return data, true
  end
  -- the body ends when the connection does (RFC 9112 section 6.3)
  local parts, size = {}, 0
  while true do
    local data, err, partial = sock:receive(65536)
    data = data or partial
    if data and #data > 0 then
      size = size + #data
      if size > opts.max_body_size then
        return nil, "response body too large"
      end
      parts[#parts + 1] = data
    end
    if err == "closed" then break end
    if err then return nil, err end
  end
  return concat(parts), false
end

------------------------------------------------------------------------
-- One exchange
------------------------------------------------------------------------

local function request_text(method, host, port, scheme, target, opts)
  local default = scheme == "https" and 443 or 80
  local authority = find(host, ":", 1, true) and "[" .. host .. "]" or host
  if port ~= default then authority = authority .. ":" .. port end
  local lines = { format("%s %s HTTP/1.1", method, target),
                  "Host: " .. authority }
  local has_agent = false
  for name, value in pairs(opts.headers or {}) do   -- checked already
    has_agent = has_agent or lower(name) == "user-agent"
    lines[#lines + 1] = name .. ": " .. value
  end
  if not has_agent then
    lines[#lines + 1] = "User-Agent: moonsocket/" .. _M._VERSION
  end
  local body = opts.body
  if body or method == "POST" or method == "PUT" or method == "PATCH" then
    lines[#lines + 1] = "Content-Length: " .. #(body or "")
  end
  if not opts.keepalive then lines[#lines + 1] = "Connection: close" end
  lines[#lines + 1] = ""
  lines[#lines + 1] = body or ""
  return concat(lines, "\r\n")
end

-- Connected and, for https, TLS done: the socket, or nil, why.
local function open(scheme, host, port, opts)
  tcp = tcp or require("moonsocket.socket").tcp
  local sock = tcp()
  sock:settimeout(opts.timeout)
  local pool
  local tls = opts.tls or {}
  if scheme == "https" then
    -- a connection is reused only by requests that would have verified
    -- it the same way
    pool = format("https:%s:%d:%s:%s:%s", host, port,
                  tostring(tls.verify ~= false), tls.cafile or "",
                  tls.server_name or host)
  end
  local ok, err = sock:connect(host, port, pool and { pool = pool })
  if not ok then
    sock:close()
    return nil, format("failed to connect to %s:%d: %s", host, port, err)
  end
  if scheme == "https" and sock:getreusedtimes() == 0 then
    ok, err = sock:sslhandshake {
      server_name = tls.server_name or host,
      verify = tls.verify ~= false,
      cafile = tls.cafile,
    }
    if not ok then
      sock:close()
      return nil, format("TLS handshake with %s:%d failed: %s", host, port,
                         err)
    end
  end
  return sock
end

-- One request and its response: status, headers, body; or nil, why,
-- retry (the pooled connection was found closed before any answer).
local function exchange(method, scheme, host, port, target, opts)
  local sock, err = open(scheme, host, port, opts)
  if not sock then return nil, err end
  local reused = sock:getreusedtimes() > 0
  local text = request_text(method, host, port, scheme, target, opts)
  local ok
  ok, err = sock:send(text)
  if not ok then
    sock:close()
    return nil, "failed to send the request: " .. err, reused
  end
  local status, headers, version
  repeat                                     -- 1xx answers are skipped
    local any
    status, headers, version = read_head(sock, opts)
    if not status then
      any = version
      sock:close()
      return nil, "failed to read the response: " .. headers,
             reused and not any
    end
  until status >= 200 or status == 101
  local body, reusable = read_body(sock, method, status, headers, opts)
  if not body then
    sock:close()
    return nil, "failed to read the response body: " .. reusable
  end
  local conn = lower(headers.connection or "")
  if opts.keepalive and reusable and version == "1"
      and not find(conn, "close", 1, true) then
    sock:setkeepalive(opts.keepalive, opts.pool_size)
  else
    sock:close()
  end
  return status, headers, body
end

------------------------------------------------------------------------
-- The API
------------------------------------------------------------------------

local function check_options(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'request' (table expected, got "
          .. type(opts) .. ")", 3)
  end
  local o = {}
  for name, value in pairs(DEFAULTS) do o[name] = value end
  for name, value in pairs(opts or {}) do
    if DEFAULTS[name] == nil and name ~= "method" and name ~= "headers"
        and name ~= "body" and name ~= "tls" then
      error("bad argument #2 to 'request' (unknown option '"
            .. tostring(name) .. "')", 3)
    end
    o[name] = value
  end
  o.method = o.method or (o.body and "POST" or "GET")
  if type(o.method) ~= "string" or not match(o.method, "^%u+$") then
    error("bad option 'method' (an upper-case token expected)", 3)
  end
  if o.headers ~= nil and type(o.headers) ~= "table" then
    error("bad option 'headers' (table expected, got " .. type(o.headers)
          .. ")", 3)
  end
  for name, value in pairs(o.headers or {}) do
    if type(name) ~= "string" or (type(value) ~= "string"
        and type(value) ~= "number") then
      error("bad option 'headers' (string names and values expected)", 3)
    end
    if OWN[lower(name)] then
      error("bad option 'headers' (the client writes '" .. name .. "')", 3)
    end
    if name == "" or find(name, "[^%w!#$%%&'*+.^_`|~-]")
        or find(tostring(value), "%c") then
      error("bad option 'headers' (invalid field '" .. name .. "')", 3)
    end
  end
  if o.body ~= nil and type(o.body) ~= "string" then
    error("bad option 'body' (string expected, got " .. type(o.body)
          .. ")", 3)
  end
  for _, name in pairs { "timeout", "max_body_size", "max_header_size",
                         "max_headers", "redirects", "pool_size" } do
    if type(o[name]) ~= "number" or o[name] < 0 then
      error("bad option '" .. name .. "' (a number >= 0 expected)", 3)
    end
  end
  if o.keepalive ~= false and (type(o.keepalive) ~= "number"
      or o.keepalive <= 0) then
    error("bad option 'keepalive' (seconds above 0 or false expected)", 3)
  end
  return o
end

-- http.request(url [, opts]) -> status, headers, body; or nil, why.
-- opts: method (GET, or POST with a body), headers, body (a string),
-- timeout, max_body_size, max_header_size, max_headers, redirects,
-- keepalive, pool_size, tls = { verify = true, cafile, server_name }.
function _M.request(url, opts)
  if type(url) ~= "string" then
    error("bad argument #1 to 'request' (string expected, got "
          .. type(url) .. ")", 2)
  end
  opts = check_options(opts)
  local redirects = opts.redirects
  while true do
    local scheme, host, port, target = parse_url(url)
    if not scheme then return nil, "invalid URL '" .. url .. "': " .. host end
    local status, headers, body = exchange(opts.method, scheme, host, port,
                                           target, opts)
    if not status and body and IDEMPOTENT[opts.method] then
      -- a pooled connection the server had closed: once more, fresh
      status, headers, body = exchange(opts.method, scheme, host, port,
                                       target, opts)
    end
    if not status then return nil, headers end
    local location = headers.location
    if not (REDIRECT[status] and location and redirects > 0) then
      return status, headers, body
    end
    redirects = redirects - 1
    if sub(location, 1, 1) == "/" then
      local default = scheme == "https" and 443 or 80
      local authority = find(host, ":", 1, true) and "[" .. host .. "]"
                        or host
      if port ~= default then authority = authority .. ":" .. port end
      location = scheme .. "://" .. authority .. location
    end
    url = location
    if status == 303 or ((status == 301 or status == 302)
        and opts.method == "POST") then
      opts.method, opts.body = "GET", nil
    end
  end
end

return _M
