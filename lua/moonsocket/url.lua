-- moonsocket.url: decoding the parts of a URL that requests carry:
-- percent-encoding (RFC 3986 section 2.1) and query strings in the
-- application/x-www-form-urlencoded form ("+" for a space).
local char = string.char
local error = error
local find = string.find
local gsub = string.gsub
local sub = string.sub
local tonumber = tonumber
local type = type

local _M = { _VERSION = "0.1.0" }

local MAX_ARGS = 100    -- parse_query's default: the rest is ignored

local function hex_byte(hex)
  return char(tonumber(hex, 16))
end

-- url.decode(s): "%XX" as the byte XX and "+" as a space; a "%" not
-- followed by two hex digits stays as it is.
function _M.decode(s)
  if type(s) ~= "string" then
    error("bad argument #1 to 'decode' (string expected, got "
          .. type(s) .. ")", 2)
  end
  if not find(s, "[%%+]") then return s end
  s = gsub(s, "+", " ")
  return (gsub(s, "%%(%x%x)", hex_byte))
end

local decode = _M.decode

-- url.parse_query(query, max): a table of the query's arguments, names
-- and values decoded.  A name given once maps to its value, a name
-- given again to the list of its values in order, a name without "="
-- to true.  Empty pairs ("a=1&&b=2") are skipped.  At most max (100)
-- arguments are read, so a long query cannot make a large table.
function _M.parse_query(query, max)
  if query == nil then return {} end
  if type(query) ~= "string" then
    error("bad argument #1 to 'parse_query' (string expected, got "
          .. type(query) .. ")", 2)
  end
  max = max or MAX_ARGS
  local args, count, at, len = {}, 0, 1, #query
  while at <= len and count < max do
    local stop = find(query, "&", at, true) or len + 1
    if stop > at then
      local pair = sub(query, at, stop - 1)
      local eq = find(pair, "=", 1, true)
      local name, value
      if eq then
        name, value = decode(sub(pair, 1, eq - 1)), decode(sub(pair, eq + 1))
      else
        name, value = decode(pair), true
      end
      local had = args[name]
      if had == nil then
        args[name] = value
      elseif type(had) == "table" then
        had[#had + 1] = value
      else
        args[name] = { had, value }
      end
      count = count + 1
    end
    at = stop + 1
  end
  return args
end

return _M
