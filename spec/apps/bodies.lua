-- The app of spec/bodies_spec.lua's reading tests: request bodies read
-- whole, streamed, ignored, and what a reader was told.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  log_level = "debug",
  max_body_size = tonumber(os.getenv("MAX_BODY_SIZE")) or 4 * 1024 * 1024,
  body_timeout = tonumber(os.getenv("BODY_TIMEOUT")) or 30,
  max_incomplete_bytes = tonumber(os.getenv("MAX_INCOMPLETE_BYTES")),
}

local last = "none"        -- what the last reader that failed was told

local function failed(err, code)
  last = tostring(err) .. " " .. tostring(code)
end

app:use(function(req, next)
  if req.path == "/echo" then            -- the body back, whole
    local body, err, code = req:body()
    if not body then
      failed(err, code)
      return 500, {}, "failed\n"
    end
    assert(req:body() == body)           -- read once, kept
    return 200, {}, body
  elseif req.path == "/slow-echo" then   -- reads after a wait
    moonsocket.sleep(0.2)
    local body, err, code = req:body()
    if not body then
      failed(err, code)
      return 500, {}, "failed\n"
    end
    return 200, {}, body
  elseif req.path == "/stream" then      -- pieces of at most n bytes
    local n = tonumber(req.args.n) or 1000
    local size, largest, sum = 0, 0, 0
    while true do
      local piece, err, code = req:read(n)
      if not piece then
        if err then
          failed(err, code)
          return 500, {}, "failed\n"
        end
        break
      end
      if #piece > largest then largest = #piece end
      -- every 4096th byte of the body, wherever the pieces begin
      for i = (4096 - size % 4096) % 4096 + 1, #piece, 4096 do
        sum = sum + piece:byte(i)
      end
      size = size + #piece
      if req.args.pause then moonsocket.sleep(0.001) end
    end
    return 200, {}, ("%d bytes, largest piece %d, sum %d\n")
      :format(size, largest <= n and largest or -1, sum)
  elseif req.path == "/ignore" then      -- answers without reading
    return 202, {}, "ignored\n"
  elseif req.path == "/ignore-later" then
    moonsocket.sleep(0.05)
    return 202, {}, "ignored\n"
  elseif req.path == "/none" then        -- a request without a body
    return 200, {}, ("%q %s\n"):format(req:body(), tostring(req:read(10)))
  elseif req.path == "/misuse" then
    local ok, err = pcall(req.read, req, 0)
    return 200, {}, tostring(ok) .. " " .. err .. "\n"
  elseif req.path == "/last" then
    return 200, {}, last .. "\n"
  end
  return next()
end)

app:use(function(req, next)
  if req.path == "/fast" then return 200, {}, "fast\n" end
  return next()
end)

assert(app:listen { host = "127.0.0.1", port = tonumber(os.getenv("PORT")) })
moonsocket.run()
