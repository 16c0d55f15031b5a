-- spec/log_spec.lua: the open and close lines, escaped so that no
-- peer can forge a line, and repeated warnings counted, not repeated.
local helper = require "helper"

describe("logging", function()
  local server = helper.with_server("spec/apps/policy.lua",
                                    { MAX_CONNECTIONS = 100 })

  it("logs a line per open and close", function()
    local ws = assert(helper.ws_connect(server.port, "/ws?x=1"))
    ws:close(1000, "logged")
    ws:expect_close(1000)
    helper.wait_until(function()
      return server:log():find('"logged"', 1, true) ~= nil
    end, 3)
    local log = server:log()
    assert.matches("moonsocket: info open 127%.0%.0%.1 /ws%?x=1\n", log)
    assert.matches('moonsocket: info close 127%.0%.0%.1 /ws%?x=1 '
      .. '%d+%.%d%d%ds 1000 "logged" peer\n', log)
  end)

  it("logs the same close line for a route that keeps its request",
     function()
    local ws = assert(helper.ws_connect(server.port, "/kept?y=2"))
    ws:send_text("bye")
    ws:expect_close(4001)
    helper.wait_until(function()
      return server:log():find("close 127.0.0.1 /kept?y=2 ", 1, true) ~= nil
    end, 3)
    -- the peer's answer to our close frame: its code, no reason
    assert.matches('moonsocket: info close 127%.0%.0%.1 /kept%?y=2 '
      .. '%d+%.%d%d%ds 4001 "" local\n', server:log())
  end)

  it("keeps the subprotocol beside the close line's label", function()
    local ws = assert(helper.ws_connect(server.port, "/chat?z=3",
      { ["Sec-WebSocket-Protocol"] = "chat.v1" }))
    ws:send_text("protocol")
    assert.are.same({ helper.TEXT, "chat.v1" }, { ws:recv_message() })
    ws:close(1000, "chatted")
    ws:expect_close(1000)
    helper.wait_until(function()
      return server:log():find('"chatted"', 1, true) ~= nil
    end, 3)
    assert.matches('moonsocket: info close 127%.0%.0%.1 /chat%?z=3 '
      .. '%d+%.%d%d%ds 1000 "chatted" peer\n', server:log())
  end)

  -- The lines of the log that contain text (plain).
  local function lines_with(text)
    local found = {}
    for line in server:log():gmatch("[^\n]*") do
      if line:find(text, 1, true) then found[#found + 1] = line end
    end
    return found
  end

  it("escapes a close reason that would forge a line", function()
    local ws = assert(helper.ws_connect(server.port, "/ws?forge=1"))
    ws:close(1000, 'bye\nmoonsocket: error accept: x\27[2J "q" \\')
    ws:expect_close(1000)
    helper.wait_until(function() return #lines_with("?forge=1 ") > 0 end, 3)
    local lines = lines_with("?forge=1 ")
    assert.are.equal(1, #lines)
    local tail = ' 1000 "bye\\nmoonsocket: error accept: x\\x1b[2J \\"q\\" '
      .. '\\\\" peer'
    assert.are.equal(tail, lines[1]:sub(-#tail), lines[1])
    assert.matches("^moonsocket: info close 127%.0%.0%.1 /ws%?forge=1 "
      .. "%d+%.%d%d%ds 1000 ", lines[1])
    assert.are.same({}, lines_with("\27"))
    assert.is_nil(("\n" .. server:log()):find("\nmoonsocket: error accept",
                                               1, true))
  end)

  it("escapes control bytes and bad UTF-8 in the request target",
     function()
    -- the request line admits no C0 byte; C1 ones (raw, or as UTF-8)
    -- and stray bytes get through, as may a long target
    local target = '/ws?t=\155[2J\194\155\255\194\169"\\'
    local ws = assert(helper.ws_connect(server.port, target))
    ws:close(1000)
    ws:expect_close(1000)
    local long = "/ws?long=" .. string.rep("a", 2000)
    ws = assert(helper.ws_connect(server.port, long))
    ws:close(1000)
    ws:expect_close(1000)
    helper.wait_until(function()
      return #lines_with("close 127.0.0.1 /ws?long=") > 0
    end, 3)
    local escaped = '/ws?t=\\x9b[2J\\xc2\\x9b\\xff\194\169\\"\\\\'
    assert.are.same({ "moonsocket: info open 127.0.0.1 " .. escaped },
                    lines_with("open 127.0.0.1 /ws?t="))
    assert.are.equal(1, #lines_with("close 127.0.0.1 " .. escaped .. " "))
    assert.are.same({}, lines_with("\155"))
    assert.are.same({}, lines_with("\255"))
    -- cut to a bounded length, with the count of what was left out
    local open = lines_with("open 127.0.0.1 /ws?long=")
    assert.are.equal(1, #open)
    local kept, cut = open[1]:match("/ws%?long=(a+)%.%.%.%(%+(%d+) bytes%)$")
    assert.is_truthy(kept, open[1])
    assert.is_true(#open[1] < 300)
    assert.are.equal(#long, 9 + #kept + tonumber(cut))
  end)
end)

describe("repeated warnings", function()
  it("counts repeated warnings instead of writing each", function()
    local server = helper.start_server("spec/apps/policy.lua",
      { MAX_CONNECTIONS = 1, LOG_LEVEL = "warn" })
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    local socket = require "socket"
    local started = socket.gettime()
    for i = 1, 2000 do
      local sock = assert(helper.connect(server.port))
      local answer = sock:receive("*a")
      sock:close()
      assert.matches("^HTTP/1%.1 503 ", answer, nil, "connection " .. i)
    end
    local took = socket.gettime() - started
    ws:abort()
    assert.are.equal(0, server:stop())
    -- each line is one refusal, or the count of its repeats
    local lines, refused = 0, 0
    for line in server:log():gmatch("[^\n]*") do
      if line:find("max_connections (1) reached: 503", 1, true) then
        lines = lines + 1
        refused = refused + tonumber(line:match(
          " %((%d+) similar lines suppressed%)$") or 1)
      end
    end
    assert.are.equal(2000, refused)
    -- a line, then the count of its repeats, per 10 s window
    assert.is_true(lines <= 2 * (math.floor(took / 10) + 1),
                   lines .. " lines in " .. took .. " s")
    assert.matches("moonsocket: warn max_connections %(1%) reached: 503 "
      .. "%(%d+ similar lines suppressed%)\n", server:log())
  end)
end)

-- The lines of a log that decode as JSON objects (each a whole line).
local function json_lines(log)
  local cjson = require "cjson"
  local found = {}
  for line in log:gmatch("[^\n]+") do
    local ok, v = pcall(cjson.decode, line)
    assert(ok and type(v) == "table", "not a JSON line: " .. line)
    found[#found + 1] = v
  end
  return found
end

local function find(lines, fields)
  for _, l in ipairs(lines) do
    local all = true
    for k, v in pairs(fields) do
      if l[k] ~= v then all = false end
    end
    if all then return l end
  end
end

describe("log_format = json", function()
  local server = helper.with_server("spec/apps/policy.lua",
    { LOG_FORMAT = "json", ACCESS_LOG = "1" },
    { ready = 'listening on %S*:(%d+)"' })

  it("writes open, close and requests as one JSON object per line",
     function()
    local ws = assert(helper.ws_connect(server.port, "/ws?j=1"))
    ws:close(1000, "done")
    ws:expect_close(1000)
    local status = helper.http(server.port, "GET /events?a=1 HTTP/1.1\r\n"
      .. "Host: x\r\nConnection: close\r\n\r\n")
    assert.are.equal(200, status)
    helper.wait_until(function()
      local lines = json_lines(server:log())
      return find(lines, { message = "close", target = "/ws?j=1" })
         and find(lines, { message = "request", target = "/events?a=1" })
    end, 3)
    local lines = json_lines(server:log())
    local open = find(lines, { message = "open", target = "/ws?j=1" })
    assert.are.equal("info", open.level)
    assert.are.equal("127.0.0.1", open.remote)
    assert.is_false(open.http2)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$",
                   open.time)
    local close = find(lines, { message = "close", target = "/ws?j=1" })
    assert.are.same({ "127.0.0.1", 1000, "done", "peer" },
                    { close.remote, close.code, close.reason, close.why })
    assert.is_true(close.duration >= 0 and close.duration < 5)
    local req = find(lines, { message = "request", target = "/events?a=1" })
    assert.are.same({ "127.0.0.1", "GET", 200, "info" },
                    { req.remote, req.method, req.status, req.level })
    assert.is_true(req.bytes >= 0 and req.duration >= 0
                   and req.duration < 5)
  end)

  it("escapes what a peer sent so each line stays one valid object",
     function()
    local target = '/ws?t=\155[2J\194\155\255\226\128\168"\\'
    local ws = assert(helper.ws_connect(server.port, target))
    ws:close(1000, 'bye\n{"message":"forged"}\27[2J \\ "')
    ws:expect_close(1000)
    helper.wait_until(function()
      return find(json_lines(server:log()), { message = "close",
                  reason = 'bye\n{"message":"forged"}\27[2J \\ "' })
    end, 3)
    local log = server:log()
    -- nothing raw reaches the stream: no ESC, no C1, no bad byte
    assert.is_nil(log:find("\27", 1, true))
    assert.is_nil(log:find("\194\155", 1, true))
    assert.is_nil(log:find("\255", 1, true))
    assert.is_nil(log:find("\226\128\168", 1, true))
    assert.is_nil(find(json_lines(log), { message = "forged" }))
    -- the target decodes to what came, but a byte that is not UTF-8,
    -- which becomes U+FFFD
    local open = find(json_lines(log), { message = "open",
      target = '/ws?t=\239\191\189[2J\194\155\239\191\189\226\128\168"\\' })
    assert.is_truthy(open, log)
    assert.is_truthy(log:find('\\u009b', 1, true))
    assert.is_truthy(log:find('\\u2028', 1, true))
  end)

  it("logs answers the core gives, with what is known of the request",
     function()
    local status = helper.http(server.port, "GET /nowhere HTTP/1.1\r\n"
      .. "Connection: close\r\n\r\n")        -- no Host: 400
    assert.are.equal(400, status)
    local sock = assert(helper.connect(server.port))
    sock:send("NOT A REQUEST\r\n\r\n")
    assert.matches("^HTTP/1%.1 400 ", sock:receive("*a"))
    sock:close()
    helper.wait_until(function()
      return find(json_lines(server:log()), { message = "request",
                                              method = "-" })
    end, 3)
    local lines = json_lines(server:log())
    local nohost = find(lines, { message = "request", target = "/nowhere" })
    assert.are.same({ "GET", 400 }, { nohost.method, nohost.status })
    local bad = find(lines, { message = "request", method = "-" })
    assert.are.same({ "-", 400 }, { bad.target, bad.status })
  end)
end)

describe("access_log", function()
  it("writes a text line per answer, after the same escaping", function()
    local server = helper.start_server("spec/apps/policy.lua",
                                       { ACCESS_LOG = "1" })
    local status, _, _, sock = helper.http(server.port,
      "HEAD /events?\155x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert.are.equal(200, status)
    sock:close()
    helper.wait_until(function()
      return server:log():find("info request ", 1, true) ~= nil
    end, 3)
    assert.are.equal(0, server:stop())
    assert.matches("moonsocket: info request 127%.0%.0%.1 HEAD "
      .. "/events%?\\x9bx 200 0 %d+%.%d+s\n", server:log())
  end)

  it("is off by default", function()
    local server = helper.start_server("spec/apps/policy.lua", {})
    assert.are.equal(200, helper.http(server.port, "GET /events HTTP/1.1\r\n"
      .. "Host: x\r\nConnection: close\r\n\r\n"))
    assert.are.equal(0, server:stop())
    assert.is_nil(server:log():find(" request ", 1, true))
  end)

  it("rejects a log_format it does not know", function()
    local moonsocket = require "moonsocket"
    local ok, err = pcall(moonsocket.app, { log_format = "xml" })
    assert.is_false(ok)
    assert.matches("option 'log_format' must be one of text, json", err)
    ok, err = pcall(moonsocket.app, { access_log = "yes" })
    assert.is_false(ok)
    assert.matches("option 'access_log' must be a boolean", err)
  end)
end)
