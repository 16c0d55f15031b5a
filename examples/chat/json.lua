-- json.lua - the JSON (RFC 8259) the chat example speaks.  Lua 5.4 has
-- none of its own; this one is small and strict: decode() reads any JSON
-- text and says where it went wrong, encode() writes strings, numbers,
-- booleans, null, arrays and objects.
local byte, char, find, format, gsub, match, sub =
  string.byte, string.char, string.find, string.format, string.gsub,
  string.match, string.sub
local concat, sort = table.concat, table.sort
local error, getmetatable, ipairs, pairs, pcall, setmetatable, tonumber,
      type =
  error, getmetatable, ipairs, pairs, pcall, setmetatable, tonumber, type
local math_type, huge = math.type, math.huge
local utf8_char, utf8_len = utf8.char, utf8.len

local _M = { _VERSION = "0.1.0" }

local MAX_DEPTH = 32     -- arrays and objects inside each other

-- null, where a Lua nil would lose an array slot or an object key
_M.null = setmetatable({}, { __tostring = function() return "null" end })

local ARRAY = { __name = "json.array" }

-- json.array(t): t, marked to encode as an array (decoded arrays are)
function _M.array(t)
  return setmetatable(t or {}, ARRAY)
end

-- json.type(v): "object", "array", "string", "number", "boolean" or
-- "null": what v is as decode() makes values.
function _M.type(v)
  local t = type(v)
  if t == "table" then
    if v == _M.null then return "null" end
    return getmetatable(v) == ARRAY and "array" or "object"
  end
  return t == "nil" and "null" or t
end

------------------------------------------------------------------------
-- Decoding
------------------------------------------------------------------------

-- A decoding error: raised inside, returned as nil, message by decode.
local Failure = {}

local function fail(pos, what)
  error(setmetatable({ message = format("invalid JSON at byte %d: %s",
    pos, what) }, Failure), 0)
end

local function describe(s, pos)
  local c = byte(s, pos)
  if c == nil then return "the end of the text" end
  if c > 0x20 and c < 0x7F then return format("'%s'", char(c)) end
  return format("byte 0x%02X", c)
end

-- Section 2: insignificant whitespace is space, tab, LF and CR only.
local function skip_space(s, pos)
  return match(s, "^[ \t\n\r]*()", pos)
end

local SIMPLE_ESCAPES = {
  [0x22] = '"', [0x5C] = "\\", [0x2F] = "/", [0x62] = "\b",
  [0x66] = "\f", [0x6E] = "\n", [0x72] = "\r", [0x74] = "\t",
}

-- \uXXXX at pos (the backslash), and its low surrogate when it is a
-- high one (section 7).  Returns the character and the position after.
local function unicode_escape(s, pos)
  local hex = match(s, "^\\u(%x%x%x%x)", pos)
  if not hex then fail(pos, "\\u needs four hexadecimal digits") end
  local cp = tonumber(hex, 16)
  if cp >= 0xDC00 and cp <= 0xDFFF then
    fail(pos, "a low surrogate without a high one")
  elseif cp >= 0xD800 and cp <= 0xDBFF then
    local low = match(s, "^\\u(%x%x%x%x)", pos + 6)
    low = low and tonumber(low, 16)
    if not low or low < 0xDC00 or low > 0xDFFF then
      fail(pos, "a high surrogate without a low one")
    end
    return utf8_char(0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)),
      pos + 12
  end
  return utf8_char(cp), pos + 6
end

-- A string from pos (its opening quote); returns it and the position
-- after its closing quote.
local function parse_string(s, pos)
  local parts, n = {}, 0
  local i = pos + 1
  while true do
    local j = find(s, '["\\\0-\31]', i)
    if not j then fail(pos, "unterminated string") end
    if j > i then
      n = n + 1
      parts[n] = sub(s, i, j - 1)
    end
    local c = byte(s, j)
    if c == 0x22 then
      return concat(parts), j + 1
    elseif c == 0x5C then
      local e = byte(s, j + 1)
      local simple = SIMPLE_ESCAPES[e]
      n = n + 1
      if simple then
        parts[n], i = simple, j + 2
      elseif e == 0x75 then
        parts[n], i = unicode_escape(s, j)
      else
        fail(j, "invalid escape \\" .. (e and char(e) or ""))
      end
    else
      fail(j, "a control character in a string (escape it)")
    end
  end
end

-- Section 6: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
local function parse_number(s, pos)
  local e = match(s, "^-?0()", pos) or match(s, "^-?[1-9]%d*()", pos)
  if not e then fail(pos, "invalid number") end
  local after = match(s, "^%.%d+()", e)
  if after then
    e = after
  elseif byte(s, e) == 0x2E then
    fail(e, "digits expected after '.'")
  end
  after = match(s, "^[eE][+-]?%d+()", e)
  if after then
    e = after
  elseif byte(s, e) == 0x65 or byte(s, e) == 0x45 then
    fail(e, "digits expected in the exponent")
  end
  return tonumber(sub(s, pos, e - 1)), e
end

local LITERALS = { t = { "true", true }, f = { "false", false },
                   n = { "null", _M.null } }

local parse_value

local function parse_array(s, pos, depth)
  local list, n = setmetatable({}, ARRAY), 0
  pos = skip_space(s, pos + 1)
  if byte(s, pos) == 0x5D then return list, pos + 1 end
  while true do
    n = n + 1
    list[n], pos = parse_value(s, pos, depth)
    pos = skip_space(s, pos)
    local c = byte(s, pos)
    if c == 0x5D then return list, pos + 1 end
    if c ~= 0x2C then
      fail(pos, "expected ',' or ']', found " .. describe(s, pos))
    end
    pos = pos + 1
  end
end

local function parse_object(s, pos, depth)
  local object = {}
  pos = skip_space(s, pos + 1)
  if byte(s, pos) == 0x7D then return object, pos + 1 end
  while true do
    pos = skip_space(s, pos)
    if byte(s, pos) ~= 0x22 then
      fail(pos, "expected a string key, found " .. describe(s, pos))
    end
    local key
    key, pos = parse_string(s, pos)
    pos = skip_space(s, pos)
    if byte(s, pos) ~= 0x3A then
      fail(pos, "expected ':' after a key, found " .. describe(s, pos))
    end
    object[key], pos = parse_value(s, pos + 1, depth)
    pos = skip_space(s, pos)
    local c = byte(s, pos)
    if c == 0x7D then return object, pos + 1 end
    if c ~= 0x2C then
      fail(pos, "expected ',' or '}', found " .. describe(s, pos))
    end
    pos = pos + 1
  end
end

function parse_value(s, pos, depth)
  pos = skip_space(s, pos)
  local c = byte(s, pos)
  if c == 0x22 then return parse_string(s, pos) end
  if c == 0x2D or (c and c >= 0x30 and c <= 0x39) then
    return parse_number(s, pos)
  end
  if c == 0x7B or c == 0x5B then
    if depth == MAX_DEPTH then fail(pos, "nested too deeply") end
    if c == 0x7B then return parse_object(s, pos, depth + 1) end
    return parse_array(s, pos, depth + 1)
  end
  local literal = c and LITERALS[char(c)]
  if literal and sub(s, pos, pos + #literal[1] - 1) == literal[1] then
    return literal[2], pos + #literal[1]
  end
  fail(pos, "expected a value, found " .. describe(s, pos))
end

-- json.decode(text) -> value | nil, "invalid JSON at byte N: why".
-- Objects become tables, arrays json.array tables, null json.null.
function _M.decode(text)
  if type(text) ~= "string" then
    error("bad argument #1 to 'decode' (string expected, got "
          .. type(text) .. ")", 2)
  end
  local valid, bad = utf8_len(text)
  if not valid then                       -- section 8.1
    return nil, format("invalid JSON at byte %d: not UTF-8", bad)
  end
  local ok, value, pos = pcall(parse_value, text, 1, 0)
  if not ok then
    if getmetatable(value) == Failure then return nil, value.message end
    error(value, 0)
  end
  pos = skip_space(text, pos)
  if pos <= #text then
    return nil, format("invalid JSON at byte %d: %s after the value", pos,
      describe(text, pos))
  end
  return value
end

------------------------------------------------------------------------
-- Encoding
------------------------------------------------------------------------

-- Section 7: the quotation mark, the backslash and U+0000..U+001F must
-- be escaped; everything else goes as it is, in UTF-8.
local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b",
                  ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
                  ["\t"] = "\\t" }
for c = 0, 0x1F do
  ESCAPES[char(c)] = ESCAPES[char(c)] or format("\\u%04x", c)
end

local function encode_string(s)
  if not utf8_len(s) then
    error("cannot encode a string that is not UTF-8", 0)
  end
  return '"' .. gsub(s, '["\\\0-\31]', ESCAPES) .. '"'
end

-- The shortest of %.15g..%.17g that reads back as the same number.
local function encode_number(x)
  if math_type(x) == "integer" then return format("%d", x) end
  if x ~= x then error("cannot encode NaN", 0) end
  if x == huge or x == -huge then error("cannot encode infinity", 0) end
  for digits = 15, 17 do
    local text = format("%." .. digits .. "g", x)
    if tonumber(text) == x or digits == 17 then return text end
  end
end

local encode_value

local function encode_table(t, depth)
  if depth == MAX_DEPTH then error("nested too deeply (a cycle?)", 0) end
  if getmetatable(t) == ARRAY then
    local parts = {}
    for i = 1, #t do parts[i] = encode_value(t[i], depth + 1) end
    return "[" .. concat(parts, ",") .. "]"
  end
  local keys = {}
  for key in pairs(t) do
    if type(key) ~= "string" then
      error("cannot encode a key of type " .. type(key), 0)
    end
    keys[#keys + 1] = key
  end
  sort(keys)                  -- the same object, the same text
  for i, key in ipairs(keys) do
    keys[i] = encode_string(key) .. ":" .. encode_value(t[key], depth + 1)
  end
  return "{" .. concat(keys, ",") .. "}"
end

function encode_value(value, depth)
  local t = type(value)
  if t == "string" then return encode_string(value) end
  if t == "number" then return encode_number(value) end
  if t == "boolean" then return value and "true" or "false" end
  if value == nil or value == _M.null then return "null" end
  if t == "table" then return encode_table(value, depth) end
  error("cannot encode a " .. t, 0)
end

-- json.encode(value) -> text.  A table is an object (its keys strings,
-- written in sorted order) unless json.array marked it.  Values JSON
-- cannot hold (functions, NaN, strings that are not UTF-8) raise.
function _M.encode(value)
  local ok, text = pcall(encode_value, value, 0)
  if not ok then error("json.encode: " .. text, 2) end
  return text
end

return _M
