-- spec/python_spec.lua: the server driven by an independent client
-- (python-websockets, spec/peers/client.py).

local helper = require "helper"

for _, app in ipairs{ "spec/apps/echo.lua", "spec/apps/co_echo.lua" } do
  describe("python-websockets client (" .. app .. ")", function()
    local server = helper.with_server(app)

    it("echoes text and binary up to 1 MiB, pings and closes with 1000",
      function()
        local output, status = helper.run_peer("client.py", { server.port })
        assert.are.equal(0, status, output)
        assert.are.equal("summary: checks=17 failures=0 close_code=1000",
          output:match("summary: [^\n]*"), output)
        for _, check in ipairs{ "text 0", "binary 0", "text 1048576",
            "binary 1048576", "fragmented text", "ping answered" } do
          assert.truthy(output:find("\nok " .. check .. "\n", 1, true),
            "missing check '" .. check .. "' in:\n" .. output)
        end
      end)
  end)
end
