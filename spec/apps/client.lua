-- Test client: moonsocket.connect in one scenario, printing what
-- happens.  Usage: client.lua SCENARIO URL.  Each line is "event ...".
local moonsocket = require "moonsocket"

local scenario, url = arg[1], arg[2]
local function say(...) print(...) io.stdout:flush() end

local SIZES = { 0, 125, 126, 65536, 16 * 1024 * 1024 }

-- The messages of the echo scenarios: every size, text and binary.
local function messages()
  local list = {}
  for _, n in ipairs(SIZES) do
    if scenario == "deflate" and n > 65536 then break end  -- its limit
    list[#list + 1] = { string.rep("a", n), "text" }
    list[#list + 1] = { string.rep("\0\255", n // 2)
                        .. (n % 2 == 1 and "\1" or ""), "binary" }
  end
  return list
end

local function on_close(_, code, reason, why)
  say("close", code, reason, why)
end

local opts = { max_message_size = 17 * 1024 * 1024 }
if os.getenv("CAFILE") then opts.tls = { cafile = os.getenv("CAFILE") } end
if os.getenv("NOVERIFY") then opts.tls = { verify = false } end
if os.getenv("HANDSHAKE_TIMEOUT") then
  opts.handshake_timeout = tonumber(os.getenv("HANDSHAKE_TIMEOUT"))
end
if os.getenv("DNS") then           -- host names from this DNS server
  assert(moonsocket.resolver { servers = { os.getenv("DNS") } })
end

if scenario == "echo" or scenario == "deflate" then
  local list, i = messages(), 1
  if scenario == "deflate" then opts.compression = true end
  opts.handler = {
    open = function(ws)
      say("open", tostring(ws.protocol), tostring(ws.compressed))
      ws:send(list[1][1], list[1][2])
    end,
    message = function(ws, data, kind)
      local want = list[i]
      say(data == want[1] and kind == want[2] and "ok" or "MISMATCH",
          #data, kind)
      i = i + 1
      if list[i] then ws:send(list[i][1], list[i][2])
      else ws:close(1000, "done") end
    end,
    close = on_close,
  }
elseif scenario == "co_echo" then
  opts.handler = function(ws)
    if ws.state ~= "open" then
      say("receive", ws:receive())
      return
    end
    say("open", tostring(ws.protocol), tostring(ws.compressed))
    for _, m in ipairs(messages()) do
      say("send", ws:send(m[1], m[2]))
      local data, kind = ws:receive()
      say(data == m[1] and kind == m[2] and "ok" or "MISMATCH", #data, kind)
    end
    ws:close(4000, "co done")
    say("receive", ws:receive())
  end
elseif scenario == "protocol" then
  opts.protocols = { "chat.v1", "chat.v2" }
  opts.handler = {
    open = function(ws) say("open", ws.protocol) ws:send("x") end,
    message = function(ws, data) say("message", data) ws:close() end,
    close = on_close,
  }
elseif scenario == "ping" then
  opts.handler = {
    open = function(ws) say("ping", ws:ping("abc")) end,
    pong = function(ws, data) say("pong", data) ws:close(1001) end,
    close = on_close,
  }
elseif scenario == "abort" then
  -- the close handler runs inside abort; a second abort answers ECLOSED
  opts.handler = {
    open = function(ws)
      say("send", ws:send("hello"))
      say("abort", ws:abort(), ws.state)
      say("again", ws:abort())
    end,
    close = on_close,
  }
elseif scenario == "backpressure" then
  local chunk = string.rep("b", 1024 * 1024)
  opts.max_backpressure = 64 * 1024 * 1024
  opts.handler = {
    open = function(ws)
      local status, n = nil, 0
      repeat
        status = ws:send(chunk, "binary")
        n = n + 1
      until status ~= "sent" or n == 64
      say("send", status, ws.buffered_amount > 0)
      ws.data.sent = n
    end,
    drain = function(ws)
      say("drain", ws.buffered_amount)
      ws:close()
    end,
    message = function() end,
    close = on_close,
  }
elseif scenario == "lines" then             -- for a raw peer: N messages
  opts.handler = {
    open = function(ws)
      for n = 1, 20 do ws:send("message " .. n) end
      ws:send(string.rep("z", 70000), "binary")
      ws:close()
    end,
    message = function(_, data) say("message", #data) end,
    close = on_close,
  }
else
  opts.handler = {
    open = function(ws) say("open") end,
    message = function(_, data) say("message", data) end,
    close = on_close,
  }
end

local ws = moonsocket.connect(url, opts)
say("state", ws.state)
