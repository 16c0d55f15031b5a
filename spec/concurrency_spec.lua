-- spec/concurrency_spec.lua: many connections served at once.

local helper = require "helper"

local CLIENTS = 1000

describe("concurrency", function()
  local server = helper.with_server("spec/apps/echo.lua")

  it(CLIENTS .. " simultaneous connections each echo and close with 1000",
    function()
      local started = os.time()
      local output, status = helper.run_peer("many_clients.py",
        { server.port, CLIENTS })
      assert.are.equal(0, status, output)
      assert.are.equal(string.format("opened=%d echoed=%d closed_1000=%d",
        CLIENTS, CLIENTS, CLIENTS),
        output:match("opened=%d+ echoed=%d+ closed_1000=%d+"), output)
      assert.is_true(os.time() - started <= 30,
        "took " .. os.time() - started .. " s: " .. output)
    end)

  it("keeps partial frames of 200 connections apart", function()
    local clients, frames = {}, {}
    for i = 1, 200 do
      clients[i] = assert(helper.ws_connect(server.port))
      frames[i] = helper.build_frame{ opcode = helper.TEXT,
        payload = "client " .. i .. " " .. helper.text_of_size(i * 10) }
    end
    -- Every connection gets the first half of its frame, then the rest,
    -- so the server holds 200 incomplete frames at once.
    for i, ws in ipairs(clients) do
      local frame = frames[i]
      assert.is_true(ws:send_raw(frame:sub(1, #frame // 2)))
    end
    helper.sleep(0.1)
    for i = #clients, 1, -1 do
      local frame = frames[i]
      assert.is_true(clients[i]:send_raw(frame:sub(#frame // 2 + 1)))
    end
    for i, ws in ipairs(clients) do
      assert.are.same(
        { helper.TEXT, "client " .. i .. " " .. helper.text_of_size(i * 10) },
        { ws:recv_message() })
    end
    for _, ws in ipairs(clients) do assert.is_true(ws:close(1000)) end
    for _, ws in ipairs(clients) do
      assert.are.equal(1000, ws:expect_close())
      ws:abort()
    end
  end)

  it("still accepts connections afterwards", function()
    local ws = assert(helper.ws_connect(server.port))
    assert.is_true(ws:send_text("last"))
    assert.are.same({ helper.TEXT, "last" }, { ws:recv_message() })
    ws:close(1000)
    assert.are.equal(1000, ws:expect_close())
    ws:abort()
  end)
end)
