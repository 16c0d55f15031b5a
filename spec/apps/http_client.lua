-- The app of spec/http_client_spec.lua: middleware that calls other
-- servers with moonsocket.http and reports what came back, and an echo
-- WebSocket whose round trips must stay fast meanwhile.
local moonsocket = require "moonsocket"
local http = require "moonsocket.http"

local app = moonsocket.app { log_level = "debug" }

local now = moonsocket.core.now

-- The options of a fetch, from the query.
local function options(args)
  local opts = {}
  opts.method = args.method
  opts.body = args.body
  opts.timeout = tonumber(args.timeout)
  opts.max_body_size = tonumber(args.max)
  opts.redirects = tonumber(args.redirects)
  if args.keepalive == "off" then opts.keepalive = false end
  if args.cafile or args.verify then
    opts.tls = { cafile = args.cafile, verify = args.verify ~= "off",
                 server_name = args.server_name }
  end
  if args.header then opts.headers = { ["X-Test"] = args.header } end
  return opts
end

local function report(status, headers, body)
  if not status then return "ERR " .. tostring(headers) .. "\n" end
  local names = {}
  for name in pairs(headers) do names[#names + 1] = name end
  table.sort(names)
  return ("%d %s\n%s"):format(status, table.concat(names, ","), body)
end

app:use(function(req, next)
  if req.path == "/fetch" then
    return 200, {}, report(http.request(req.args.url, options(req.args)))
  elseif req.path == "/parallel" then     -- n fetches at once
    local n = tonumber(req.args.n)
    local t0, threads = now(), {}
    for i = 1, n do
      threads[i] = moonsocket.spawn(http.request, req.args.url)
    end
    local ok = 0
    for i = 1, n do
      local done, status = threads[i]:join()
      if done and status == 200 then ok = ok + 1 end
    end
    return 200, {}, ("%d ok in %.3f s\n"):format(ok, now() - t0)
  elseif req.path == "/misuse" then
    local _, err = pcall(http.request, req.args.url, { nope = 1 })
    local _, err2 = pcall(http.request, 5)
    local _, err3 = pcall(http.request, req.args.url,
                          { headers = { Host = "x" } })
    local _, err4 = pcall(http.request, req.args.url,
                          { headers = { ["X-A"] = "a\r\nInjected: 1" } })
    return 200, {}, table.concat({ err, err2, err3, err4 }, "\n") .. "\n"
  end
  return next()
end)

app:ws("/ws", require "moonsocket.handlers.echo")

assert(app:listen { host = "127.0.0.1", port = tonumber(os.getenv("PORT")) })
moonsocket.run()
