-- spec/dashboard_spec.lua: the dashboard sample (examples/dashboard):
-- figures pushed once a second by each serving process, alone and with
-- two workers.

local helper = require "helper"
local cjson = require "cjson"
local socket = require "socket"

local gettime = socket.gettime

local FIELDS = { "connections", "messages", "rate", "seq", "type", "worker" }

-- The next push on ws: decoded, with the time it came.
local function recv(ws, timeout)
  local kind, data = ws:recv_message(timeout or helper.scaled(3))
  assert.are.equal(helper.TEXT, kind, data)
  return cjson.decode(data), gettime()
end

local function keys(t)
  local list = {}
  for key in pairs(t) do list[#list + 1] = key end
  table.sort(list)
  return list
end

-- The pushes that reach any of clients in `seconds`: { [client] = list
-- of { figures, at } }, read as they come.
local function collect(clients, seconds)
  local got, by_sock, socks = {}, {}, {}
  for _, ws in ipairs(clients) do
    got[ws], by_sock[ws.sock] = {}, ws
    socks[#socks + 1] = ws.sock
  end
  local deadline = gettime() + seconds
  while gettime() < deadline do
    local readable = socket.select(socks, nil, 0.05)
    for _, sock in ipairs(readable) do
      local ws = by_sock[sock]
      local figures, at = recv(ws, 1)
      local list = got[ws]
      list[#list + 1] = { figures = figures, at = at }
    end
  end
  return got
end

describe("examples/dashboard", function()
  local server = helper.with_server("examples/dashboard/app.lua", {})
  local open = {}

  local function connect()
    local ws = assert(helper.ws_connect(server.port, "/live"))
    open[#open + 1] = ws
    return ws
  end

  after_each(function()
    for _, ws in ipairs(open) do ws:abort() end
    open = {}
  end)

  it("serves its page, script and style", function()
    helper.assert_sample_files(server.port)
  end)

  it("pushes the documented figures about once a second", function()
    local ws = connect()
    local first = recv(ws)
    local pushes = {}
    for i = 1, 4 do pushes[i] = { recv(ws) } end
    for i, push in ipairs(pushes) do
      local figures = push[1]
      assert.are.same(FIELDS, keys(figures))
      assert.are.equal("figures", figures.type)
      assert.are.equal(1, figures.worker)
      assert.are.equal(first.seq + i, figures.seq)
      assert.are.equal(1, figures.connections)
      assert.are.equal(0, figures.rate)
      assert.is_true(figures.messages >= 0
        and figures.messages == math.floor(figures.messages))
      if i > 1 then
        local gap = push[2] - pushes[i - 1][2]
        assert.is_true(gap > 0.7 and gap < 1.3, "gap " .. gap)
      end
    end
  end)

  it("the figures follow the sockets and their messages", function()
    local watcher = connect()
    local before = recv(watcher)
    local talker = connect()
    assert.are.equal(before.connections + 1, recv(watcher).connections)
    for _ = 1, 10 do assert.is_true(talker:send_text("bump")) end
    talker:send_binary("\0\1")           -- any message counts
    -- the 11 messages show in the next push, or are split over two
    local rates, now = 0, nil
    repeat
      now = recv(watcher)
      rates = rates + now.rate
    until now.messages == before.messages + 11 or now.seq > before.seq + 4
    assert.are.equal(before.messages + 11, now.messages)
    assert.is_true(rates >= 10.5 and rates <= 11.5, "rates " .. rates)
    assert.are.equal(0, recv(watcher).rate)
    talker:close(1000)
    talker:expect_close(1000)
    assert.are.equal(before.connections, recv(watcher).connections)
  end)

  it("a message over 1 KiB closes with 1009", function()
    local ws = connect()
    ws:send_text(string.rep("x", 1025))
    ws:expect_close(1009)
  end)
end)

describe("examples/dashboard with WORKERS=2", function()
  local server = helper.with_server("examples/dashboard/app.lua",
    { WORKERS = 2 })

  it("each worker pushes its own figures once a period, none twice",
    function()
    -- the workers listen once forked: wait until one answers
    assert.is_true(helper.wait_until(function()
      local sock = helper.connect(server.port)
      if sock then sock:close() end
      return sock ~= nil
    end, helper.scaled(10)), server:log())
    local clients = {}
    for i = 1, 8 do
      clients[i] = assert(helper.ws_connect(server.port, "/live"))
    end
    local got = collect(clients, 4.5)
    for i, ws in ipairs(clients) do
      local by_worker = { {}, {} }
      for _, push in ipairs(got[ws]) do
        assert.are.same(FIELDS, keys(push.figures))
        local list = by_worker[push.figures.worker]
        assert.is_table(list, "worker " .. tostring(push.figures.worker))
        list[#list + 1] = push
      end
      for worker, list in ipairs(by_worker) do
        local what = ("client %d, worker %d"):format(i, worker)
        -- 4 or 5 pushes in 4.5 s, numbered one after the other, never
        -- two within one period
        assert.is_true(#list >= 4 and #list <= 5, what .. ": " .. #list)
        for k = 2, #list do
          assert.are.equal(list[k - 1].figures.seq + 1, list[k].figures.seq,
            what)
          local gap = list[k].at - list[k - 1].at
          assert.is_true(gap > 0.5, what .. ": gap " .. gap)
        end
      end
      -- the latest figures of the two workers add up to every socket
      local last = got[ws]
      local seen = {}
      for k = #last, 1, -1 do
        local figures = last[k].figures
        seen[figures.worker] = seen[figures.worker] or figures.connections
      end
      assert.are.equal(#clients, seen[1] + seen[2])
    end
    for _, ws in ipairs(clients) do ws:abort() end
  end)
end)
