-- spec/game_spec.lua: the game sample (examples/game): its 20 Hz tick,
-- movement inside the world, the idle close, and what it answers to
-- input it cannot use.

local helper = require "helper"
local cjson = require "cjson"
local socket = require "socket"

local gettime, rep = socket.gettime, string.rep

-- The next message, which must be text, decoded.
local function recv(ws)
  local kind, data = ws:recv_message()
  assert.are.equal(helper.TEXT, kind, data)
  return cjson.decode(data)
end

-- The next message that is not a tick's state.
local function reply(ws)
  while true do
    local event = recv(ws)
    if event.type ~= "state" then return event end
  end
end

local function next_state(ws)
  while true do
    local event = recv(ws)
    if event.type == "state" then return event end
  end
end

local function input(ws, dx, dy)
  assert.is_true(ws:send_text(cjson.encode { type = "input", dx = dx,
    dy = dy }))
end

-- Where player id is in state.
local function where(state, id)
  for _, p in ipairs(state.players) do
    if p.id == id then return p end
  end
end

-- States until check(position of id) holds, within `ticks` ticks.
local function until_at(ws, id, ticks, check)
  local p
  for _ = 1, ticks do
    p = where(next_state(ws), id)
    if check(p) then return p end
  end
  error(("not there after %d ticks: %d, %d"):format(ticks, p.x, p.y), 2)
end

local function median(list)
  local sorted = { table.unpack(list) }
  table.sort(sorted)
  local n = #sorted
  if n % 2 == 1 then return sorted[(n + 1) // 2] end
  return (sorted[n // 2] + sorted[n // 2 + 1]) / 2
end

describe("examples/game", function()
  local server = helper.with_server("examples/game/app.lua", {})
  local open = {}

  -- A new player; returns it and its welcome.
  local function join()
    local ws = assert(helper.ws_connect(server.port, "/play"))
    open[#open + 1] = ws
    local welcome = recv(ws)
    assert.are.equal("welcome", welcome.type, cjson.encode(welcome))
    return ws, welcome
  end

  after_each(function()
    for _, ws in ipairs(open) do ws:abort() end
    open = {}
  end)

  it("serves its page, script and style", function()
    helper.assert_sample_files(server.port)
  end)

  it("welcomes a player in the middle, with the world's rules", function()
    local ws, welcome = join()
    assert.are.same({ type = "welcome", id = welcome.id, width = 640,
      height = 480, rate = 20, idle = 10 }, welcome)
    assert.are.same({ id = welcome.id, x = 320, y = 240 },
      where(next_state(ws), welcome.id))
    -- the documented constant, which the welcome reports
    local source = assert(helper.read_file("examples/game/app.lua"))
    assert.truthy(source:find('local IDLE_SECONDS = tonumber(os.getenv('
      .. '"GAME_IDLE_SECONDS")) or 10\n', 1, true))
  end)

  -- The tick's own clock ("time", the loop's time when it ran) is what
  -- is measured: the client reads on a loaded machine, and its arrival
  -- times jitter with it.  Every tick must reach the client too.
  it("ticks at 20 +/- 1 Hz over 5 s, 50 ms apart in the median", function()
    local ws, welcome = join()
    local first = next_state(ws)
    local states, started = { first }, gettime()
    while states[#states].time - first.time < 5000 do
      states[#states + 1] = next_state(ws)
    end
    local elapsed = gettime() - started
    local ticks, gaps = 0, {}
    for i = 2, #states do
      assert.are.equal(states[i - 1].tick + 1, states[i].tick, "a tick lost")
      assert.truthy(where(states[i], welcome.id))
      gaps[#gaps + 1] = states[i].time - states[i - 1].time
      if states[i].time - first.time <= 5000 then ticks = ticks + 1 end
    end
    local hz = ticks / 5
    assert.is_true(hz >= 19 and hz <= 21, ("%.2f Hz"):format(hz))
    local gap = median(gaps)
    assert.is_true(gap >= 45 and gap <= 55, ("median gap %g ms"):format(gap))
    -- and the client got them in about as long
    assert.is_true(elapsed > 4.5 and elapsed < 6, ("%.2f s"):format(elapsed))
  end)

  it("inputs move the player 5 px a tick until the next", function()
    local ws, welcome = join()
    local id = welcome.id
    input(ws, 1, 0)
    local p = until_at(ws, id, 20, function(q) return q.x > 320 end)
    for _ = 1, 5 do
      local q = where(next_state(ws), id)
      assert.are.same({ id = id, x = p.x + 5, y = 240 }, q)
      p = q
    end
    input(ws, 0, -1)
    p = until_at(ws, id, 20, function(q) return q.y < 240 end)
    local q = where(next_state(ws), id)
    assert.are.same({ id = id, x = p.x, y = p.y - 5 }, q)
    input(ws, 0, 0)
    p = until_at(ws, id, 20, function(r) return r.y == q.y end)
    for _ = 1, 3 do
      assert.are.same(p, where(next_state(ws), id))
    end
    -- a diagonal moves both ways; others see it too
    local other = join()
    input(ws, -1, 1)
    until_at(other, id, 20, function(r) return r.x < p.x and r.y > p.y end)
  end)

  it("the world's edges hold", function()
    local ws, welcome = join()
    local id = welcome.id
    input(ws, -1, -1)
    until_at(ws, id, 100, function(q) return q.x == 0 and q.y == 0 end)
    for _ = 1, 3 do
      assert.are.same({ id = id, x = 0, y = 0 }, where(next_state(ws), id))
    end
    input(ws, 1, 1)
    until_at(ws, id, 160, function(q) return q.x == 640 end)
    until_at(ws, id, 160, function(q) return q.y == 480 end)
    for _ = 1, 3 do
      assert.are.same({ id = id, x = 640, y = 480 },
        where(next_state(ws), id))
    end
  end)

  it("what it cannot use gets an error reply, and nothing moves",
    function()
    local ws, welcome = join()
    local type_error = '"dx" and "dy" must be -1, 0 or 1'
    local cases = {
      { "hello", "invalid JSON: expected value but found invalid token at "
        .. "character 1" },
      { "", "invalid JSON: expected value but found T_END at character 1" },
      { '{"type":"input","dx":1} x', "invalid JSON: expected the end but "
        .. "found invalid token at character 25" },
      { '{"type":"input","dx":1,"dy":0}\0', "invalid JSON: control character" },
      { '{"type":"input","dx":NaN,"dy":0}', "invalid JSON: expected value "
        .. "but found invalid token at character 22" },
      { '{"type":"input","dx":{"a":{}},"dy":0}', "invalid JSON: found too "
        .. "many nested data structures (3) at character 27" },
      { "[1,0]", "expected a JSON object" },
      { "1", "expected a JSON object" },
      { "{}", '"type" must be "input"' },
      { '{"type":"move","dx":1,"dy":0}', '"type" must be "input"' },
      { '{"type":"input"}', type_error },
      { '{"type":"input","dx":1}', type_error },
      { '{"type":"input","dx":2,"dy":0}', type_error },
      { '{"type":"input","dx":0.5,"dy":0}', type_error },
      { '{"type":"input","dx":"1","dy":0}', type_error },
      { '{"type":"input","dx":[1],"dy":0}', type_error },
      { '{"type":"input","dx":true,"dy":0}', type_error },
    }
    for _, case in ipairs(cases) do
      assert.is_true(ws:send_text(case[1]))
      assert.are.same({ type = "error", error = case[2] }, reply(ws),
        case[1])
    end
    assert.is_true(ws:send_binary('{"type":"input","dx":1,"dy":0}'))
    assert.are.same({ type = "error", error = "send JSON as text" },
      reply(ws))
    for _ = 1, 3 do
      assert.are.same({ id = welcome.id, x = 320, y = 240 },
        where(next_state(ws), welcome.id))
    end
  end)

  it("a message over 256 bytes closes with 1009", function()
    local ws = join()
    input(ws, 1, 0)
    assert.is_true(ws:send_text('{"type":"input","dx":1,"dy":0,"pad":"'
      .. rep("x", 256) .. '"}'))
    ws:expect_close(1009)
  end)

  it("more than 40 messages in a second close with 1008", function()
    local ws = join()
    -- 81 in a row: however the seconds fall, one holds 41
    for i = 1, 81 do input(ws, i % 2, 0) end
    local code, reason = ws:expect_close()
    assert.are.same({ 1008, "more than 40 messages a second" },
      { code, reason })
    -- 30 a second for 2 s are fine
    local calm = join()
    for i = 1, 60 do
      input(calm, i % 2, 0)
      helper.sleep(1 / 30)
    end
    input(calm, 0, 0)
    assert.are.equal("state", recv(calm).type)
    assert.is_false(calm:is_closed())
  end)

  it("takes 16 players; the seventeenth is closed with 1013", function()
    local players = {}
    for i = 1, 16 do players[i] = join() end
    local state = next_state(players[16])
    assert.are.equal(16, #state.players)
    local extra = assert(helper.ws_connect(server.port, "/play"))
    open[#open + 1] = extra
    local code, reason = extra:expect_close()
    assert.are.same({ 1013, "the game is full" }, { code, reason })
    players[1]:close(1000)
    players[1]:expect_close(1000)
    local _, welcome = join()
    assert.are.equal("welcome", welcome.type)
  end)
end)

describe("examples/game with GAME_IDLE_SECONDS=1", function()
  local server = helper.with_server("examples/game/app.lua",
    { GAME_IDLE_SECONDS = 1 })

  it("a silent player is closed with 4000 idle; one who plays stays",
    function()
    local silent = assert(helper.ws_connect(server.port, "/play"))
    local started = gettime()
    local busy = assert(helper.ws_connect(server.port, "/play"))
    assert.are.equal(1, recv(silent).idle)
    assert.are.equal("welcome", recv(busy).type)
    -- input every 0.4 s keeps a player
    for _ = 1, 3 do
      input(busy, 0, 0)
      helper.sleep(0.4)
    end
    local code, reason = silent:expect_close()
    local after = gettime() - started
    assert.are.same({ 4000, "idle" }, { code, reason })
    -- a tick (every 50 ms) finds it silent for 1 s, and closes it
    assert.is_true(after >= 0.95 and after < 1.5, ("%.2f s"):format(after))
    for _ = 1, 3 do
      input(busy, 0, 0)
      helper.sleep(0.4)
    end
    -- the silent one has left the state (older states may be waiting)
    local alone = false
    for _ = 1, 60 do
      alone = #next_state(busy).players == 1
      if alone then break end
    end
    assert.is_true(alone)
    code, reason = busy:expect_close()
    assert.are.same({ 4000, "idle" }, { code, reason })
    silent:abort()
    busy:abort()
  end)
end)
