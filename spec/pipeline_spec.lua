-- spec/pipeline_spec.lua: a request pipeline that waits.  Middleware, a
-- route's upgrade hook and select_subprotocol run in a coroutine: they
-- may sleep before they answer; other connections are served meanwhile,
-- pipelined requests are answered in order, a client that leaves does
-- not hurt, and request_timeout bounds a pipeline that never answers.
local helper = require "helper"

local now = require("socket").gettime

local PLAIN = "Content-Type: text/plain; charset=utf-8\r\n"

local function core_error(status, reason, why)
  local body = ("%d %s: %s\n"):format(status, reason, why)
  return ("HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n"
    .. "%s\r\n%s"):format(status, reason, #body, PLAIN, body)
end

local function get(path, extra)
  return ("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n"):format(path, extra or "")
end

describe("a pipeline that waits", function()
  local server = helper.with_server("spec/apps/pipeline.lua")

  it("makes the headers of a request kept after its answer", function()
    local status, _, body = helper.http(server.port, get("/keep",
      "X-Who: a\r\nX-Who: b\r\n"))
    assert.are.equal(200, status)
    assert.are.equal("kept\n", body)
    status, _, body = helper.http(server.port, get("/kept"))
    assert.are.equal(200, status)
    assert.are.equal("a, b x true\n", body)
  end)

  it("answers after its middleware slept, serving others meanwhile",
  function()
    local slow = assert(helper.connect(server.port))
    local t0 = now()
    slow:send(get("/sleep/0.3"))
    -- the fast request on another connection is answered first
    local status, _, body = helper.http(server.port, get("/fast"))
    assert.are.equal(200, status)
    assert.are.equal("fast\n", body)
    assert.is_true(now() - t0 < 0.25)
    assert.are.equal("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"
      .. "Content-Type: text/plain\r\n\r\nslept 0.3\n",
      helper.read_raw_response(slow))
    assert.is_true(now() - t0 >= 0.3)
    slow:close()
  end)

  it("answers pipelined requests in order", function()
    local sock = assert(helper.connect(server.port))
    sock:send(get("/sleep/0.2") .. get("/fast") .. get("/sleep/0.05")
              .. get("/fast", "Connection: close\r\n"))
    local bodies = {}
    for i = 1, 4 do
      local status, _, body = helper.read_response(sock)
      assert.are.equal(200, status)
      bodies[i] = body
    end
    assert.are.same({ "slept 0.2\n", "fast\n", "slept 0.05\n", "fast\n" },
                    bodies)
    assert.is_true(helper.socket_closed(sock))
    sock:close()
  end)

  it("answers 500 to a middleware that raised after a wait, and goes on",
  function()
    local sock = assert(helper.connect(server.port))
    sock:send(get("/raise") .. get("/fast"))
    local status = helper.read_response(sock)
    assert.are.equal(500, status)
    local status2, _, body = helper.read_response(sock)
    assert.are.equal(200, status2)
    assert.are.equal("fast\n", body)
    sock:close()
    assert.matches("moonsocket: error error in request handler: "
      .. "spec/apps/pipeline.lua:%d+: raised after a wait\nstack traceback",
      server:log())
  end)

  it("upgrades after the hook and select_subprotocol waited; frames sent "
     .. "early wait for the open socket", function()
    local request, key = helper.upgrade_request{ path = "/ws?me",
      headers = { ["Sec-WebSocket-Protocol"] = "a, b" } }
    local sock = assert(helper.connect(server.port))
    sock:send(request .. helper.build_frame{ payload = "early" })
    local status, headers = helper.read_response(sock)
    assert.are.equal(101, status)
    assert.are.equal(helper.accept_for(key), headers["sec-websocket-accept"])
    assert.are.equal("b", headers["sec-websocket-protocol"])
    local ws = helper.wrap(sock, headers)
    local frame = assert(ws:read_frame())
    assert.are.equal("early", frame.payload)
    sock:close()
  end)

  it("opens with the data the waiting hook returned", function()
    local ws = assert(helper.ws_connect(server.port, "/later",
                                        { ["X-Who"] = "ann" }))
    local frame = assert(ws:read_frame())
    assert.are.equal("opened ann nil", frame.payload)
    ws.sock:close()
  end)

  it("drops the answer of a client that left, logging it once at debug",
  function()
    local sock = assert(helper.connect(server.port))
    sock:send(get("/sleep/0.2"))
    helper.sleep(0.05)
    sock:close()
    helper.sleep(0.35)
    local _, n = server:log():gsub("answer dropped: 127%.0%.0%.1 "
      .. "/sleep/0%.2 left before it came", "")
    assert.are.equal(1, n)
    local status = helper.http(server.port, get("/fast"))
    assert.are.equal(200, status)          -- and the server goes on
  end)
end)

describe("request_timeout", function()
  local server = helper.with_server("spec/apps/pipeline.lua",
                                    { REQUEST_TIMEOUT = 0.3 })

  it("answers 503 and closes when the pipeline does not answer in time",
  function()
    local sock = assert(helper.connect(server.port))
    local t0 = now()
    sock:send(get("/never") .. get("/fast"))
    assert.are.equal(core_error(503, "Service Unavailable",
                                "the application did not answer in time"),
                     helper.read_raw_response(sock))
    assert.is_true(now() - t0 >= 0.3)
    assert.is_true(helper.socket_closed(sock))
    sock:close()
    assert.matches("moonsocket: warn a request was not answered within "
      .. "request_timeout %(0%.3 s%): answered 503", server:log())
  end)
end)

describe("shutting down while a pipeline waits", function()
  it("answers 503 and closes", function()
    local server = helper.start_server("spec/apps/pipeline.lua")
    local sock = assert(helper.connect(server.port))
    sock:send(get("/never"))
    helper.sleep(0.1)
    server:kill("TERM")
    assert.are.equal(core_error(503, "Service Unavailable",
                                "the server is shutting down"),
                     helper.read_raw_response(sock))
    sock:close()
    helper.stop_and_check(server)
  end)
end)

describe("a pipeline given to core.listen", function()
  local server = helper.with_server("spec/apps/core_pipeline.lua")

  it("reads the request's headers", function()
    local status, _, body = helper.http(server.port, get("/",
      "X-Who: me\r\n"))
    assert.are.equal(200, status)
    assert.are.equal("me x\n", body)
    status, _, body = helper.http(server.port,
      "GET http://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(200, status)
    assert.are.equal("? example.com\n", body)
  end)
end)
