-- spec/policy_spec.lua: route policies (origins, the upgrade hook,
-- subprotocols) and per-route options.
local helper = require "helper"

local TEXT = helper.TEXT

-- The status an upgrade to path with extra headers gets (101 or other),
-- the response headers, and the socket.
local function upgrade(port, path, headers)
  local request = helper.upgrade_request{ path = path, headers = headers }
  local status, h, _, sock = helper.http(port, request)
  return status, h, sock
end

describe("policies", function()
  local server = helper.with_server("spec/apps/policy.lua",
                                    { MAX_CONNECTIONS = 100 })

  describe("allowed_origins", function()
    it("accepts a listed origin however it is cased or ported", function()
      for _, origin in ipairs { "https://example.com",
          "HTTPS://EXAMPLE.COM:443", "http://localhost:5000" } do
        local status, _, sock = upgrade(server.port, "/origins",
                                        { Origin = origin })
        assert.are.equal(101, status, origin)
        sock:close()
      end
    end)

    it("answers 403 to another origin and closes", function()
      for _, origin in ipairs { "https://evil.test", "http://example.com",
          "https://example.com:8443", "null" } do
        local status, _, sock = upgrade(server.port, "/origins",
                                        { Origin = origin })
        assert.are.equal(403, status, origin)
        assert.is_true((helper.socket_closed(sock, 2)))
        sock:close()
      end
    end)

    it("lets a request without Origin through (it is no browser)", function()
      local status, _, sock = upgrade(server.port, "/origins")
      assert.are.equal(101, status)
      sock:close()
    end)

    it("asks a policy function", function()
      local ok, _, a = upgrade(server.port, "/originfn",
                               { Origin = "https://ok.test" })
      local no, _, b = upgrade(server.port, "/originfn",
                               { Origin = "https://no.test" })
      local none, _, c = upgrade(server.port, "/originfn")
      assert.are.same({ 101, 403, 403 }, { ok, no, none })
      a:close(); b:close(); c:close()
    end)
  end)

  describe("the upgrade hook", function()
    it("accepts and attaches data", function()
      for _, try in ipairs { { "/auth?token=secret" },
          { "/auth", { Cookie = "theme=dark; session=abc" } } } do
        local ws = assert(helper.ws_connect(server.port, try[1], try[2]))
        ws:send_text("who")
        assert.are.same({ TEXT, "alice" }, { ws:recv_message() })
        ws:abort()
      end
    end)

    it("refuses with its own status and headers", function()
      local status, headers, sock = upgrade(server.port, "/auth?token=bad")
      assert.are.equal(401, status)
      assert.are.equal("Bearer", headers["www-authenticate"])
      sock:close()
    end)

    it("refuses with 403 when it says false", function()
      local status, _, sock = upgrade(server.port, "/auth")
      assert.are.equal(403, status)
      sock:close()
    end)

    -- The upgrade to /verdict?QUERY with a request pipelined behind it:
    -- the whole first response, and whether the connection then closed.
    local function verdict(query)
      local sock = assert(helper.connect(server.port))
      sock:send(helper.upgrade_request{ path = "/verdict?" .. query }
        .. "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
      local response = helper.read_raw_response(sock)
      local closed = helper.socket_closed(sock, 3)
      sock:close()
      return response, closed
    end

    local SERVER_ERROR = "HTTP/1.1 500 Internal Server Error\r\n"
      .. "Content-Length: 50\r\nConnection: close\r\n"
      .. "Content-Type: text/plain; charset=utf-8\r\n\r\n"
      .. "500 Internal Server Error: the application failed\n"

    local FORBIDDEN = "HTTP/1.1 403 Forbidden\r\nContent-Length: 14\r\n"
      .. "Connection: close\r\nContent-Type: text/plain; charset=utf-8"
      .. "\r\n\r\n403 Forbidden\n"

    it("accepts only with true or a table", function()
      for _, query in ipairs { "true", "table" } do
        local ws = assert(helper.ws_connect(server.port,
                                            "/verdict?" .. query))
        ws:send_text("who")
        assert.are.same({ TEXT, query == "table" and "bob" or "nil" },
                        { ws:recv_message() }, query)
        ws:abort()
      end
    end)

    it("refuses with 403 on false, nil or nothing", function()
      for _, query in ipairs { "false", "nil", "nothing", "nil-denied" } do
        assert.are.same({ FORBIDDEN, true }, { verdict(query) }, query)
      end
    end)

    it("answers 500, logged, to any other verdict", function()
      assert.are.same({ SERVER_ERROR, true }, { verdict("string") })
      assert.matches("moonsocket: error error in request handler: the "
        .. "upgrade hook of route '/verdict' %(spec/apps/policy.lua:%d+%) "
        .. 'returned a string %("denied"%); it must return true, a table, '
        .. "false, nil or a status\nstack traceback:", server:log())
    end)

    it("answers 500 and closes when it raises", function()
      assert.are.same({ SERVER_ERROR, true }, { verdict("raise") })
      assert.matches("error in request handler: spec/apps/policy.lua:%d+: "
        .. "hook failed on purpose\nstack traceback:", server:log())
    end)

    it("answers 500 and closes when it returns a header with CR LF",
       function()
      assert.are.same({ SERVER_ERROR, true }, { verdict("crlf") })
    end)
  end)

  describe("subprotocols (Python websockets)", function()
    local function negotiate(path, ...)
      local out, status = helper.run_peer("policy_client.py",
        { server.port, "subprotocol", path, ... })
      assert.are.equal(0, status, out)
      return out
    end

    it("picks the first of the client's list that the route speaks",
       function()
      assert.are.equal("chat.v1 chat.v1\n",
                       negotiate("/chat", "chat.v0", "chat.v1", "chat.v2"))
      assert.are.equal("chat.v2 chat.v2\n", negotiate("/chat", "chat.v2"))
    end)

    it("refuses when nothing matches, unless told not to", function()
      assert.are.equal("refused 400\n", negotiate("/chat", "other"))
      assert.are.equal("refused 400\n", negotiate("/chat"))
      assert.are.equal("None nil\n", negotiate("/chat-optional", "other"))
    end)

    it("lets a chooser pick from the offer", function()
      assert.are.equal("b b\n", negotiate("/choose", "a", "b"))
    end)
  end)

  it("applies per-route options over the app's", function()
    local small = assert(helper.ws_connect(server.port, "/small"))
    small:send_text(string.rep("x", 11))
    assert.are.equal(1009, small:expect_close())
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text(string.rep("x", 11))
    assert.are.same({ TEXT, string.rep("x", 11) }, { ws:recv_message() })
    ws:abort()
  end)
end)

describe("routes that no middleware comes before", function()
  local server = helper.with_server("spec/apps/ws_routes.lua")

  -- the first message of an upgrade to path, or its status
  local function first(path, headers)
    local ws, err = helper.ws_connect(server.port, path, headers)
    if not ws then return err end
    local opcode, payload = ws:recv_message()
    ws:close(1000)
    assert.are.equal(TEXT, opcode)
    return payload
  end

  it("open as the pipeline would, with ws.request", function()
    assert.are.equal("first /first me", first("/first", { ["X-Who"] = "me" }))
    assert.are.equal("first /first nil", first("/first?room=1"))
    assert.are.equal("hooked /hooked ok",
                     first("/hooked", { ["X-Who"] = "ok" }))
    assert.are.equal("after /after nil", first("/after"))
    assert.are.equal(403, upgrade(server.port, "/hooked"))
    assert.are.equal(403, upgrade(server.port, "/late"))
    local status = helper.http(server.port,
      "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(426, status)
  end)

  it("log the peer and target of what they open and close", function()
    assert.are.equal("first /first nil", first("/first?log=1"))
    helper.wait_until(function()
      return server:log():find("close 127.0.0.1 /first?log=1 ", 1, true)
    end)
    assert.truthy(server:log():find("open 127.0.0.1 /first?log=1\n", 1,
                                    true))
  end)
end)
