-- spec/deflate_spec.lua: permessage-deflate (RFC 7692) in the core:
-- negotiation over the wire, round trips with Python websockets, the
-- inflated-size limit (zip bombs), invalid data, RSV1 rules, fragments.
local helper = require "helper"

local function upgrade(port, path, offer)
  local request = helper.upgrade_request{ path = path,
    headers = { ["Sec-WebSocket-Extensions"] = offer } }
  local status, headers, _, sock = helper.http(port, request)
  sock:close()
  assert.are.equal(101, status)
  return headers["sec-websocket-extensions"]
end

describe("permessage-deflate", function()
  local server = helper.with_server("spec/apps/deflate.lua", {})

  local function peer(...)
    local out, status = helper.run_peer("deflate_client.py",
      { server.port, ... })
    assert.are.equal(0, status, out)
    return out
  end

  describe("negotiation", function()
    it("accepts the first acceptable offer and answers it", function()
      local cases = {
        { "permessage-deflate", "/ws", "permessage-deflate" },
        { "permessage-deflate; client_max_window_bits", "/ws",
          "permessage-deflate" },
        { "x-webkit-deflate-frame, permessage-deflate; "
          .. "server_no_context_takeover", "/ws",
          "permessage-deflate; server_no_context_takeover" },
        { 'permessage-deflate; server_max_window_bits="10"', "/ws",
          "permessage-deflate; server_max_window_bits=10" },
        { "permessage-deflate; client_max_window_bits", "/no-takeover",
          "permessage-deflate; server_no_context_takeover; "
          .. "client_no_context_takeover" },
        { "permessage-deflate; client_max_window_bits", "/small-window",
          "permessage-deflate; server_max_window_bits=9; "
          .. "client_max_window_bits=9" },
      }
      for _, case in ipairs(cases) do
        assert.are.equal(case[3], upgrade(server.port, case[2], case[1]),
                         case[1])
      end
    end)

    it("declines invalid offers and goes on without", function()
      for _, offer in ipairs { "permessage-deflate; unknown=1",
          "permessage-deflate; server_max_window_bits=16",
          "permessage-deflate; server_max_window_bits=8",
          "permessage-deflate; client_max_window_bits=7",
          "permessage-deflate; server_no_context_takeover=1",
          "permessage-deflate; server_no_context_takeover; "
          .. "server_no_context_takeover", "deflate-frame", ";;;", "" } do
        assert.is_nil(upgrade(server.port, "/ws", offer), offer)
      end
      assert.is_nil(upgrade(server.port, "/off", "permessage-deflate"))
    end)
  end)

  describe("round trips with Python websockets", function()
    it("with context takeover", function()
      assert.are.equal("takeover=true,true bits=15,15\n",
                       peer("echo", "/ws"))
    end)

    it("without context takeover", function()
      assert.are.equal("takeover=false,false bits=15,15\n",
                       peer("echo", "/no-takeover"))
    end)

    it("with small windows", function()
      assert.are.equal("takeover=true,true bits=9,9\n",
                       peer("small", "/small-window"))
      assert.are.equal("takeover=true,true bits=10,9\n",
                       peer("small", "/ws"))
    end)

    it("in the coroutine form", function()
      assert.are.equal("takeover=true,true bits=15,15\n",
                       peer("echo", "/co"))
    end)

    it("when compression is off", function()
      assert.are.equal("none\n", peer("echo", "/off"))
    end)
  end)

  describe("crafted messages", function()
    it("closes a decompression bomb with 1009", function()
      assert.are.equal("close 1009\n", peer("raw", "/ws", "bomb"))
    end)

    it("closes invalid compressed data with 1007", function()
      assert.are.equal("close 1007\n", peer("raw", "/ws", "invalid"))
    end)

    it("checks UTF-8 after inflating (1007)", function()
      assert.are.equal("close 1007\n", peer("raw", "/ws", "badutf8"))
    end)

    it("inflates a fragmented message with a ping inside", function()
      assert.are.equal("echo 2600 fragmented and compressed\n",
                       peer("raw", "/ws", "fragmented"))
    end)

    it("refuses RSV1 on a continuation or a control frame (1002)",
       function()
      assert.are.equal("close 1002\n",
                       peer("raw", "/ws", "rsv-continuation"))
      assert.are.equal("close 1002\n", peer("raw", "/ws", "rsv-ping"))
    end)

    it("takes an empty compressed message", function()
      assert.are.equal("echo 0 \n", peer("raw", "/ws", "empty"))
    end)
  end)

  it("sends below the threshold, or when told, uncompressed", function()
    local ws = assert(helper.ws_connect(server.port, "/ws",
      { ["Sec-WebSocket-Extensions"] = "permessage-deflate" }))
    ws:send_text("compressed?")            -- 11 bytes: under 16
    local frame = assert(ws:read_frame())
    assert.are.same({ 0, "true" }, { frame.rsv, frame.payload })
    ws:send_text("plain:" .. string.rep("p", 100))
    frame = assert(ws:read_frame())
    assert.are.same({ 0, string.rep("p", 100) }, { frame.rsv,
                                                   frame.payload })
    ws:send_text(string.rep("q", 100))   -- sent compressed: RSV1
    frame = assert(ws:read_frame())
    assert.are.equal(4, frame.rsv)
    assert.is_true(#frame.payload < 100)
    ws:abort()
  end)
end)
