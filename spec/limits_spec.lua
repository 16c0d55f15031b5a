-- spec/limits_spec.lua: max_connections.
local helper = require "helper"

describe("max_connections", function()
  it("answers 503 beyond max_connections", function()
    local server = helper.start_server("spec/apps/policy.lua",
      { MAX_CONNECTIONS = 3, LOG_LEVEL = "error" })
    local open = {}
    for i = 1, 3 do open[i] = assert(helper.ws_connect(server.port, "/ws")) end
    local status, _, _, sock = helper.http(server.port,
      "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(503, status)
    assert.is_true((helper.socket_closed(sock, 2)))
    sock:close()
    open[1]:close(1000)
    open[1]:expect_close(1000)
    helper.wait_until(function()
      local st, _, _, s = helper.http(server.port,
        "GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      if s then s:close() end
      return st == 200
    end, 3)
    for i = 2, 3 do open[i]:abort() end
    helper.stop_and_check(server)
    -- log_level = "error" left out the open and close lines
    assert.does_not.match("info open", server:log())
  end)
end)
