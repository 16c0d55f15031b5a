-- spec/pubsub_spec.lua: topics, publish and subscribers in one process.

local helper = require "helper"

local ask, close_all = helper.ask, helper.close_all

local function open(port, n)
  local list = {}
  for i = 1, n do list[i] = assert(helper.ws_connect(port)) end
  return list
end

-- The cast of the slow-subscriber tests: one socket subscribed to
-- topics whose close handler closes the victim and publishes "gone" to
-- topic (spec/apps/pubsub.lua's "nest"), the victim, three readers of
-- topic, and a publisher.
local function nest_scene(port, topic, topics)
  local nester = assert(helper.ws_connect(port))
  for _, t in ipairs(topics) do ask(nester, "sub " .. t) end
  ask(nester, "nest " .. topic)
  local victim = assert(helper.ws_connect(port))
  ask(victim, "sub " .. topic)
  assert.are.equal("victim", ask(victim, "victim"))
  local good = open(port, 3)
  for _, ws in ipairs(good) do ask(ws, "sub " .. topic) end
  return nester, victim, good, assert(helper.ws_connect(port))
end

describe("topics", function()
  local server = helper.with_server("spec/apps/pubsub.lua",
    { MAX_BACKPRESSURE = 65536 })

  it("subscribe, unsubscribe and subscribed report what changed", function()
    local ws = assert(helper.ws_connect(server.port))
    assert.are.equal("subscribed a false", ask(ws, "subscribed a"))
    assert.are.equal("sub a true", ask(ws, "sub a"))
    assert.are.equal("sub a false", ask(ws, "sub a"))
    assert.are.equal("sub b true", ask(ws, "sub b"))
    assert.are.equal("subscribed a true", ask(ws, "subscribed a"))
    assert.are.equal("topics a,b", ask(ws, "topics"))
    assert.are.equal("count a 1", ask(ws, "count a"))
    assert.are.equal("unsub a true", ask(ws, "unsub a"))
    assert.are.equal("unsub a false", ask(ws, "unsub a"))
    assert.are.equal("count a 0", ask(ws, "count a"))
    assert.are.equal("topics b", ask(ws, "topics"))
    close_all { ws }
  end)

  it("publish reaches every subscriber once, text and binary", function()
    local subs = open(server.port, 5)
    for _, ws in ipairs(subs) do assert.are.equal("sub room true",
      ask(ws, "sub room")) end
    local other = assert(helper.ws_connect(server.port))
    assert.are.equal("sub elsewhere true", ask(other, "sub elsewhere"))
    local pub = assert(helper.ws_connect(server.port))
    assert.are.equal("count room 5", ask(pub, "count room"))
    assert.are.equal("pub 5", ask(pub, "pub room héllo"))
    assert.are.equal("pub 5", ask(pub, "pubbin room \0\1\2"))
    assert.are.equal("pub 0", ask(pub, "pub nobody x"))
    for _, ws in ipairs(subs) do
      assert.are.same({ helper.TEXT, "héllo" }, { ws:recv_message() })
      assert.are.same({ helper.BINARY, "\0\1\2" }, { ws:recv_message() })
    end
    -- the socket on another topic got nothing: its next frame is the
    -- answer to its own question
    assert.are.equal("count room 5", ask(other, "count room"))
    close_all(subs)
    close_all { other, pub }
  end)

  it("ws:publish skips the sender", function()
    local a, b = assert(helper.ws_connect(server.port)),
                 assert(helper.ws_connect(server.port))
    ask(a, "sub chat")
    ask(b, "sub chat")
    assert.are.equal("wspub 1", ask(a, "wspub chat from a"))
    assert.are.same({ helper.TEXT, "from a" }, { b:recv_message() })
    assert.are.equal("count chat 2", ask(a, "count chat"))
    close_all { a, b }
  end)

  it("a closed socket leaves its topics", function()
    local a = assert(helper.ws_connect(server.port))
    local b = assert(helper.ws_connect(server.port))
    ask(a, "sub gone")
    ask(b, "sub gone")
    assert.are.equal("count gone 2", ask(b, "count gone"))
    a:abort()                                  -- vanishes
    assert.is_true(helper.wait_until(function()
      return ask(b, "count gone") == "count gone 1"
    end, 5))
    close_all { b }
    local c = assert(helper.ws_connect(server.port))
    assert.are.equal("count gone 0", ask(c, "count gone"))
    close_all { c }
  end)

  it("closes a WebSocket held in a <close> variable with 1000", function()
    local ws = assert(helper.ws_connect(server.port))
    assert.are.equal("scope", ask(ws, "scope"))
    assert.are.equal(1000, ws:expect_close())
    ws:abort()
  end)

  it("large messages are shared by every subscriber intact", function()
    local subs = open(server.port, 3)
    for _, ws in ipairs(subs) do ask(ws, "sub big") end
    local pub = assert(helper.ws_connect(server.port))
    assert.are.equal("pub 3", ask(pub, "pubbig big 40000"))
    assert.are.equal("pub 3", ask(pub, "pubbig big 200"))
    for _, ws in ipairs(subs) do
      assert.are.same({ helper.TEXT, ("x"):rep(40000) }, { ws:recv_message() })
      assert.are.same({ helper.TEXT, ("x"):rep(200) }, { ws:recv_message() })
    end
    close_all(subs)
    close_all { pub }
  end)

  it("a subscriber that never reads is closed with 1008, the others get"
    .. " every message", function()
    local stuck, victim, good, pub = nest_scene(server.port, "flood",
      { "flood" })
    -- 100,000-byte messages until the socket that does not read is
    -- over the 64 KiB limit (beyond what the kernel buffers), while
    -- the readers keep up.  The victim reads too: left unread, it would
    -- be over the limit when the kernel happens to buffer less for it
    -- than for the stuck socket, and be failed first.
    local got, gone, sent = { 0, 0, 0 }, { 0, 0, 0 }, 0
    local function read_one(j)
      local kind, msg = good[j]:recv_message()
      assert.are.equal(helper.TEXT, kind)
      if msg == "gone" then       -- the close handler's nested publish
        gone[j] = gone[j] + 1
      else
        assert.are.equal(100000, #msg)
        got[j] = got[j] + 1
      end
    end
    local n
    repeat
      n = tonumber(ask(pub, "pubbig flood 100000"):match("^pub (%d+)"))
      sent = sent + 1
      for j = 1, 3 do read_one(j) end
      if n == 5 then
        local kind, msg = victim:recv_message()
        assert.are.same({ helper.TEXT, 100000 }, { kind, msg and #msg })
      end
    until n ~= 5 or sent == 500
    assert.are.equal(3, n, "the stuck socket was never closed alone")
    assert.is_true(sent > 2)
    -- the stuck socket's close handler closed the victim before that
    -- publish reached it: its close frame follows the message before
    assert.are.equal(4000, victim:expect_close())
    assert.are.same({}, victim.skipped)
    victim:abort()
    for _ = 1, 5 do
      assert.are.equal("pub 3", ask(pub, "pubbig flood 100000"))
      sent = sent + 1
      for j = 1, 3 do read_one(j) end
    end
    for j = 1, 3 do
      while got[j] < sent or gone[j] < 1 do read_one(j) end
      assert.are.same({ sent, 1 }, { got[j], gone[j] })
    end
    -- the stuck socket was failed with 1008 (its close frame is queued
    -- behind the message being written, which it never read); its
    -- handler was told of the messages dropped, and of that one
    local code, unsent = ask(pub, "closed flood"):match("^closed (%d+) (%d+)$")
    assert.are.equal("1008", code)
    assert.is_true(tonumber(unsent) >= 1, unsent)
    stuck:abort()
    assert.are.equal("count flood 3", ask(pub, "count flood"))
    close_all(good)
    close_all { pub }
  end)

  it("a subscriber failed during a publish is told at once what it lost;"
    .. " its close handler may close others and publish", function()
    -- x is over the limit with nothing of the first message written
    -- when the second publish reaches it: it is failed in the middle
    -- of that publish, and its handler closes a later subscriber and
    -- publishes again
    local x, victim, good, pub = nest_scene(server.port, "second",
      { "first", "second" })
    -- x and the readers get the second message; the victim, closed by
    -- x's handler before the publish reached it, does not
    assert.are.equal("pub2 1 3", ask(pub, "pub2 first second 100000"))
    for _, ws in ipairs(good) do
      local seen = {}
      for _ = 1, 2 do
        local kind, msg = ws:recv_message()
        assert.are.equal(helper.TEXT, kind)
        seen[#seen + 1] = #msg
      end
      table.sort(seen)
      assert.are.same({ 4, 100000 }, seen)       -- "gone" and the message
    end
    -- the first message was dropped before a byte of it went out
    assert.are.equal("closed 1008 1", ask(pub, "closed second"))
    assert.are.equal(1008, x:expect_close())
    x:abort()
    assert.are.equal(4000, victim:expect_close())
    victim:abort()
    assert.are.equal("count second 3", ask(pub, "count second"))
    close_all(good)
    close_all { pub }
  end)
end)
