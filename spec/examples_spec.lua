-- The examples run, and do what their comments say.
local helper = require "helper"

describe("examples/policies", function()
  local server = helper.with_server("examples/policies/app.lua", {})

  it("admits a session and tells the user and protocol", function()
    local ws = assert(helper.ws_connect(server.port, "/chat?token=abc123",
      { ["Sec-WebSocket-Protocol"] = "chat.v1, chat.v2",
        Origin = "http://localhost:5001" }))
    assert.are.equal("chat.v1", ws.response_headers["sec-websocket-protocol"])
    assert.are.same({ helper.TEXT, "hello alice, you speak chat.v1" },
                    { ws:recv_message() })
    ws:abort()
  end)

  it("refuses strangers and other sites", function()
    local request = helper.upgrade_request{ path = "/chat",
      headers = { ["Sec-WebSocket-Protocol"] = "chat.v1" } }
    local status, _, _, sock = helper.http(server.port, request)
    assert.are.equal(401, status)
    sock:close()
    request = helper.upgrade_request{ path = "/feed",
      headers = { Origin = "https://evil.test" } }
    status, _, _, sock = helper.http(server.port, request)
    assert.are.equal(403, status)
    sock:close()
    local ws = assert(helper.ws_connect(server.port, "/feed",
      { Origin = "https://news.example.com" }))
    ws:abort()
  end)

  it("asks its auth service over HTTP", function()
    local status, _, body, sock = helper.http(server.port,
      "GET /auth/check?token=abc123 HTTP/1.1\r\nHost: x\r\n\r\n")
    sock:close()
    assert.are.same({ 200, "alice\n" }, { status, body })
    local request = helper.upgrade_request{ path = "/chat?token=nobody",
      headers = { ["Sec-WebSocket-Protocol"] = "chat.v1" } }
    status, _, _, sock = helper.http(server.port, request)
    sock:close()
    assert.are.equal(401, status)
  end)
end)

describe("examples/policies without its auth service", function()
  local server = helper.with_server("examples/policies/app.lua",
    { AUTH_URL = ("http://127.0.0.1:%d/check"):format(helper.free_port()) })

  it("answers 503 when the auth service does not answer", function()
    local request = helper.upgrade_request{ path = "/chat?token=abc123",
      headers = { ["Sec-WebSocket-Protocol"] = "chat.v1" } }
    local status, _, body, sock = helper.http(server.port, request)
    sock:close()
    assert.are.same({ 503, "the auth service is down\n" }, { status, body })
  end)
end)

describe("examples/echo", function()
  it("serves the page and the echo on one port", function()
    local server = helper.start_server("examples/echo/app.lua", {})
    local status, headers, _, sock = helper.http(server.port,
      "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sock:close()
    assert.are.equal(200, status)
    assert.are.equal("text/html; charset=utf-8", headers["content-type"])
    local ws = assert(helper.ws_connect(server.port, "/ws"))
    ws:send_text("hi")
    assert.are.same({ helper.TEXT, "hi" }, { ws:recv_message() })
    ws:close(1000)
    ws:expect_close(1000)
    ws:abort()
    helper.stop_and_check(server)
  end)
end)
