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
