-- spec/webhook_spec.lua: the webhook sample (examples/webhook): a JSON
-- notification POSTed to /notify reaches the sockets listening on its
-- topic; what is not one gets the documented answer.
local helper = require "helper"
local cjson = require "cjson"
local socket = require "socket"

local JSON = "Content-Type: application/json\r\n"

-- POST body to /notify (chunked when asked); returns status, headers,
-- decoded body.
local function post(port, body, opts)
  opts = opts or {}
  local head = ("%s /notify HTTP/1.1\r\nHost: x\r\n%s%s"):format(
    opts.method or "POST", opts.headers or JSON, opts.chunked
    and "Transfer-Encoding: chunked\r\n\r\n"
    or ("Content-Length: %d\r\n\r\n"):format(#body))
  if opts.chunked then
    body = ("%x\r\n%s\r\n0\r\n\r\n"):format(#body, body)
  end
  local status, headers, text, sock = helper.http(port, head .. body)
  if sock then sock:close() end
  local ok, decoded = pcall(cjson.decode, text or "")
  return status, headers, ok and decoded or text
end

describe("examples/webhook", function()
  local server = helper.with_server("examples/webhook/app.lua", {})
  local open = {}

  local function listen(topic)
    local ws = assert(helper.ws_connect(server.port, "/listen?topic="
                                                     .. topic))
    open[#open + 1] = ws
    return ws
  end

  after_each(function()
    for _, ws in ipairs(open) do ws:abort() end
    open = {}
  end)

  it("delivers a notification to the sockets on its topic only",
     function()
    local a1, a2, b = listen("deploys"), listen("deploys"), listen("alerts")
    for _, chunked in ipairs { false, true } do
      local status, headers, answer = post(server.port, cjson.encode {
        topic = "deploys", text = "v1.2 is out ✓" }, { chunked = chunked })
      assert.are.equal(202, status)
      assert.are.equal("application/json", headers["content-type"])
      assert.are.same({ delivered = 2 }, answer)
      for _, ws in ipairs { a1, a2 } do
        local kind, data = ws:recv_message(helper.scaled(2))
        assert.are.equal(helper.TEXT, kind)
        assert.are.same({ topic = "deploys", text = "v1.2 is out ✓" },
                        cjson.decode(data))
      end
    end
    assert.is_nil((b:recv_message(0.2)))
  end)

  it("answers 400 for a body that is not a valid notification",
     function()
    local cases = {
      { "not json", "the body is not a JSON object" },
      { "[1, 2]", "topic: 1 to 64 letters, digits or ._:- expected" },
      { '"text"', "the body is not a JSON object" },
      { '{"text": "x"}', "topic: 1 to 64 letters, digits or ._:- expected" },
      { '{"topic": "a b", "text": "x"}',
        "topic: 1 to 64 letters, digits or ._:- expected" },
      { '{"topic": "t"}', "text: a UTF-8 string expected" },
      { '{"topic": "t", "text": 5}', "text: a UTF-8 string expected" },
      { '{"topic": "t", "text": "\255"}', "text: a UTF-8 string expected" },
      { '{"topic": "t", "text": {"deep": [1]}}',
        "the body is not a JSON object" },
    }
    for _, case in ipairs(cases) do
      local status, _, answer = post(server.port, case[1])
      assert.are.equal(400, status, case[1])
      assert.are.same({ error = case[2] }, answer, case[1])
    end
  end)

  it("answers 413 for a body over 64 KiB, declared or chunked", function()
    local body = cjson.encode { topic = "t", text = ("x"):rep(70000) }
    for _, chunked in ipairs { false, true } do
      local status, headers = post(server.port, body, { chunked = chunked })
      assert.are.equal(413, status)
      assert.are.equal("close", headers.connection)
    end
  end)

  it("answers 405 with Allow: POST for another method", function()
    for _, method in ipairs { "GET", "PUT", "DELETE" } do
      local status, headers, answer = post(server.port, "",
                                           { method = method })
      assert.are.equal(405, status, method)
      assert.are.equal("POST", headers.allow)
      assert.are.same({ error = "use POST" }, answer)
    end
  end)

  it("answers 415 for a body that says it is not JSON", function()
    local status, _, answer = post(server.port, "topic=t&text=x",
      { headers = "Content-Type: application/x-www-form-urlencoded\r\n" })
    assert.are.equal(415, status)
    assert.are.same({
      error = "the body must be JSON (Content-Type: application/json)" },
      answer)
  end)

  it("refuses a socket without a topic, and one that talks", function()
    local status, _, _, sock = helper.http(server.port,
      helper.upgrade_request { path = "/listen" })
    assert.are.equal(400, status)
    sock:close()
    local ws = listen("t")
    ws:send_text("hello")
    ws:expect_close(1008)
  end)

  it("serves notifications while another one's body is slow to come",
     function()
    local ws = listen("slow")
    local sock = assert(helper.connect(server.port))
    local body = cjson.encode { topic = "slow", text = "late" }
    sock:send("POST /notify HTTP/1.1\r\nHost: x\r\n" .. JSON
              .. "Content-Length: " .. #body .. "\r\n\r\n" .. body:sub(1, 5))
    local status = post(server.port, cjson.encode {
      topic = "slow", text = "first" })
    assert.are.equal(202, status)
    assert.are.equal("first", cjson.decode(select(2,
      ws:recv_message(helper.scaled(2)))).text)
    socket.sleep(0.1)
    sock:send(body:sub(6))
    local late = helper.read_response(sock)
    sock:close()
    assert.are.equal(202, late)
    assert.are.equal("late", cjson.decode(select(2,
      ws:recv_message(helper.scaled(2)))).text)
  end)
end)

describe("examples/webhook with WEBHOOK_TOKEN", function()
  local server = helper.with_server("examples/webhook/app.lua",
                                    { WEBHOOK_TOKEN = "s3cret" })

  it("answers 401 without the token, 202 with it", function()
    local body = cjson.encode { topic = "t", text = "x" }
    local status, headers = post(server.port, body)
    assert.are.equal(401, status)
    assert.are.equal("Bearer", headers["www-authenticate"])
    status = post(server.port, body, { headers = JSON
      .. "Authorization: Bearer wrong\r\n" })
    assert.are.equal(401, status)
    status = post(server.port, body, { headers = JSON
      .. "Authorization: Bearer s3cret\r\n" })
    assert.are.equal(202, status)
  end)
end)
