-- moonsocket.static: middleware serving the files under one directory.
-- The core sends the bytes (sendfile); this module decides what may be
-- served: no path outside the root, by name or by symbolic link.
local core = require "moonsocket.core"

local char = string.char
local error = error
local find = string.find
local format = string.format
local gmatch = string.gmatch
local gsub = string.gsub
local lower = string.lower
local match = string.match
local sub = string.sub
local tonumber = tonumber
local type = type

local _M = { _VERSION = core._VERSION }

-- Content types by file extension; text types say their charset.
_M.types = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8", js = "text/javascript; charset=utf-8",
  mjs = "text/javascript; charset=utf-8", txt = "text/plain; charset=utf-8",
  json = "application/json", map = "application/json",
  xml = "application/xml", svg = "image/svg+xml", png = "image/png",
  jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif",
  webp = "image/webp", ico = "image/x-icon", avif = "image/avif",
  woff = "font/woff", woff2 = "font/woff2", wasm = "application/wasm",
  pdf = "application/pdf", webmanifest = "application/manifest+json",
}

local function content_type(path)
  local ext = match(path, "%.([%w]+)$")
  return ext and _M.types[lower(ext)] or "application/octet-stream"
end

-- Percent-decode a path; nil for a malformed escape or a NUL byte.
local function decode(path)
  if not find(path, "%", 1, true) then           -- the most: as it is
    return not find(path, "\0", 1, true) and path or nil
  end
  if match(path, "%%[^%x]") or match(path, "%%%x[^%x]")
     or match(path, "%%%x?$") then
    return nil
  end
  local decoded = gsub(path, "%%(%x%x)", function(hex)
    return char(tonumber(hex, 16))
  end)
  if decoded:find("\0", 1, true) then return nil end
  return decoded
end

-- Whether a decoded path has a "." or ".." segment, or a backslash.
local function has_dot_segment(path)
  if find(path, "\\", 1, true) then return true end
  if not find(path, "/.", 1, true) then return false end  -- the most
  for segment in gmatch(path, "[^/]+") do
    if segment == ".." or segment == "." then return true end
  end
  return false
end

-- Whether the request's validators say the client's copy is current
-- (RFC 7232 section 6: If-None-Match first, else If-Modified-Since).
local function not_modified(headers, etag, file)
  local inm = headers["if-none-match"]
  local ims = headers["if-modified-since"]
  if not inm and not ims then return false end         -- the most
  if inm then
    if inm == "*" then return true end
    for tag in inm:gmatch("[^,%s]+") do
      if gsub(tag, "^W/", "") == etag then return true end
    end
    return false
  end
  local since = core.parse_http_date(ims)
  return since ~= nil and file.mtime <= since
end

local function bad_request(why)
  return 400, { ["Content-Type"] = "text/plain; charset=utf-8" },
    "400 Bad Request: " .. why .. "\n"
end

-- moonsocket.static(dir, opts) -> middleware.  opts:
--   index = "index.html"   the file for a directory
--   max_age = nil          seconds for Cache-Control; nil: "no-cache"
--                          (clients revalidate with ETag every time)
function _M.new(dir, opts)
  if type(dir) ~= "string" then
    error("bad argument #1 to 'static' (directory expected)", 2)
  end
  opts = opts or {}
  local index = opts.index or "index.html"
  local cache_control = opts.max_age
    and format("public, max-age=%d", opts.max_age) or "no-cache"
  local root, err = core.realpath(dir)
  if not root then error("static: " .. err, 2) end

  return function(req, next)
    local path = decode(req.path)
    if not path then return bad_request("malformed path") end
    if sub(path, 1, 1) ~= "/" or has_dot_segment(path) then
      return next()
    end
    -- the file opened must be under the root once its links are
    -- resolved: "EXDEV" else; full is its resolved path
    local file, full, code = core.open_file(root .. path, root)
    if code == "EISDIR" then
      if sub(path, -1) ~= "/" then  -- relative links need the slash
        -- one leading slash: browsers take "//evil.example/" to be
        -- another host (an open redirect)
        local target = gsub(req.path, "^/+", "/") .. "/"
                       .. (req.query and "?" .. req.query or "")
        return 301, { Location = target }, ""
      end
      file, full = core.open_file(root .. path .. index, root)
    end
    if not file then return next() end  -- missing, or a link out of root
    if req.method ~= "GET" and req.method ~= "HEAD" then
      file:close()
      return 405, { Allow = "GET, HEAD" }, "405 Method Not Allowed\n"
    end
    local etag = file.etag
    local headers = {
      ["Content-Type"] = content_type(full),
      ["ETag"] = etag,
      ["Last-Modified"] = file.last_modified,
      ["Cache-Control"] = cache_control,
      ["X-Content-Type-Options"] = "nosniff",
    }
    if not_modified(req.headers, etag, file) then
      file:close()
      return 304, headers
    end
    return 200, headers, file
  end
end

return _M
