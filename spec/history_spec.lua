-- spec/history_spec.lua: app:history, positions, ws:subscribe with since,
-- app:history_read, the bounds, and recovery on another worker
-- (spec/apps/history.lua's protocol).

local socket = require "socket"
local helper = require "helper"
local moonsocket = require "moonsocket"

local ask, close_all = helper.ask, helper.close_all
local recv_positioned, split_pos = helper.recv_positioned, helper.split_pos

local function client(port, path)
  return assert(helper.ws_connect(port, path or "/ws"))
end

-- Reads each client's catch-up ({ ws = ..., next = the first offset
-- it asked for }) through offset final: every message from next on, no
-- gap and no duplicate (in epoch, when given), and the reply "since
-- true true ..." anywhere among them (its offset kept as answered);
-- then drops the client.
local function read_catch_up(list, final, epoch)
  for _, c in ipairs(list) do
    local seen_reply = false
    while c.next <= final or not seen_reply do
      local kind, msg = c.ws:recv_message(5)
      assert.are.equal(helper.TEXT, kind, msg)
      if msg:find("^since ") then
        assert.is_truthy(msg:find("^since true true "), msg)
        c.answered = tonumber(msg:match(":(%d+)$"))
        seen_reply = true
      else
        local e, o = msg:match("^(%x+):(%d+) ")
        if epoch then assert.are.equal(epoch, e) end
        assert.are.equal(c.next, tonumber(o))   -- no gap, no duplicate
        c.next = c.next + 1
      end
    end
    c.ws:abort()
  end
end

-- ready on a topic without history: fn(ws, true), or fn(ws, false)
-- when subscribed already, before ws:subscribe returns; a publish then
-- reaches sub as published (no position).
local function ready_without_history(sub, pub, topic)
  assert.are.equal("readynow ready true,returned",
                   ask(sub, "readynow " .. topic))
  assert.are.equal("readynow ready false,returned",
                   ask(sub, "readynow " .. topic))
  assert.is_truthy(ask(pub, "plain " .. topic .. " hello")
                   :match("^plain %d+$"))
  assert.are.same({ helper.TEXT, "hello" }, { sub:recv_message() })
end

describe("history, one process", function()
  local server, port

  setup(function()
    server = helper.start_server("spec/apps/history.lua",
                                 { HSIZE = 50, MAX_BACKPRESSURE = 8 << 20 })
    port = server.port
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  it("gives every publish the next position and sends it first", function()
    local sub = client(port)
    assert.are.equal("sub h:a true", ask(sub, "sub h:a"))
    local pub = client(port)
    local r1 = ask(pub, "pub h:a one")
    local n, p1 = r1:match("^pub (%d+) (%S+)$")
    assert.are.equal("1", n)
    local epoch, off1 = split_pos(p1)
    assert.are.equal(16, #epoch)
    local _, p2 = ask(pub, "pub h:a two"):match("^pub (%d+) (%S+)$")
    local epoch2, off2 = split_pos(p2)
    assert.are.equal(epoch, epoch2)
    assert.are.equal(off1 + 1, off2)
    assert.are.same({ epoch, off1, "one" }, { recv_positioned(sub) })
    assert.are.same({ epoch, off2, "two" }, { recv_positioned(sub) })
    -- binary keeps its kind, the envelope before the bytes
    ask(pub, "pubbin h:a \1\2")
    local kind, msg = sub:recv_message()
    assert.are.equal(helper.BINARY, kind)
    assert.are.equal(epoch .. ":" .. (off2 + 1) .. " \1\2", msg)
    -- a pattern is per topic: h:b counts from 1, its own epoch
    local _, pb = ask(pub, "pub h:b x"):match("^pub (%d+) (%S+)$")
    local eb, ob = split_pos(pb)
    assert.are.equal(1, ob)
    assert.are_not.equal(epoch, eb)
    close_all { sub, pub }
  end)

  it("leaves topics without history exactly as they were", function()
    local sub = client(port)
    assert.are.equal("sub plain true", ask(sub, "sub plain"))
    sub:send_text("plain plain hello")
    -- the very bytes published, then the answer
    assert.are.same({ helper.TEXT, "hello" }, { sub:recv_message() })
    assert.are.same({ helper.TEXT, "plain 1" }, { sub:recv_message() })
    close_all { sub }
  end)

  it("recovers exactly the missed messages, in order, then live ones",
     function()
    local pub = client(port)
    local _, p0 = ask(pub, "pub h:r start"):match("^pub (%d+) (%S+)$")
    local epoch, off0 = split_pos(p0)
    for i = 1, 10 do ask(pub, "pub h:r missed" .. i) end
    local sub = client(port)
    sub:send_text("since h:r " .. p0)
    for i = 1, 10 do
      assert.are.same({ epoch, off0 + i, "missed" .. i },
                      { recv_positioned(sub) })
    end
    assert.are.equal(("since true true %s:%d"):format(epoch, off0 + 10),
                     select(2, sub:recv_message()))
    ask(pub, "pub h:r live")
    assert.are.same({ epoch, off0 + 11, "live" }, { recv_positioned(sub) })
    -- nothing missed: nothing sent, recovered
    local sub2 = client(port)
    assert.are.equal(("since true true %s:%d"):format(epoch, off0 + 11),
                     ask(sub2, ("since h:r %s:%d"):format(epoch, off0 + 11)))
    close_all { pub, sub, sub2 }
  end)

  it("gives a topic nothing was published to a position to come back from",
     function()
    local first = client(port)
    local reply = ask(first, "since h:empty")
    local epoch, off = reply:match("^since true false (%x+):(%d+)$")
    assert.is_truthy(epoch, reply)
    assert.are_not.equal(("0"):rep(16), epoch)
    assert.are.equal("0", off)
    first:abort()
    local pub = client(port)
    for i = 1, 3 do ask(pub, "pub h:empty m" .. i) end
    local back = client(port)
    back:send_text(("since h:empty %s:0"):format(epoch))
    for i = 1, 3 do
      assert.are.same({ epoch, i, "m" .. i }, { recv_positioned(back) })
    end
    assert.are.equal(("since true true %s:3"):format(epoch),
                     select(2, back:recv_message()))
    close_all { pub, back }
  end)

  it("gives ready the answer at once where it is known", function()
    for _, path in ipairs { "/cb", "/ws" } do
      local topic = "h:ready" .. path:sub(2)
      local first = client(port, path)
      local epoch = split_pos(ask(first, "ready " .. topic)
                              :match("^ready true false (%S+:0)$"))
      assert.are_not.equal(("0"):rep(16), epoch)
      local pub = client(port)
      ask(pub, "pub " .. topic .. " m1")
      assert.are.same({ epoch, 1, "m1" }, { recv_positioned(first) })
      first:abort()
      ask(pub, "pub " .. topic .. " m2")
      local back = client(port, path)
      back:send_text(("ready %s %s:1"):format(topic, epoch))
      assert.are.same({ epoch, 2, "m2" }, { recv_positioned(back) })
      assert.are.equal(("ready true true %s:2"):format(epoch),
                       select(2, back:recv_message()))
      -- subscribed already: false, as subscribe returns
      assert.are.equal(("ready false false %s:2"):format(epoch),
                       ask(back, "ready " .. topic))
      close_all { pub, back }
    end
  end)

  it("gives ready its answer at once on a topic without history",
     function()
    for _, path in ipairs { "/cb", "/ws" } do
      local sub, pub = client(port, path), client(port)
      ready_without_history(sub, pub, "plain" .. path:sub(2))
      close_all { sub, pub }
    end
  end)

  it("raises on a ready that is not a function", function()
    local ws = client(port, "/cb")
    assert.are.equal("readybad bad argument #2 to 'subscribe' (ready must "
                     .. "be a function)", ask(ws, "readybad h:bad"))
    assert.are.equal("sub h:bad true", ask(ws, "sub h:bad"))  -- not before
    ws:abort()
  end)

  it("closes the socket with 1011 when ready raises", function()
    local ws = client(port, "/cb")
    ws:send_text("ready h:raise raise")
    ws:expect_close(1011)
    ws:abort()
  end)

  it("says recovered = false for another epoch, a position too old or "
     .. "ahead, and without since", function()
    local pub = client(port)
    for i = 1, 60 do ask(pub, "pub h:old m" .. i) end  -- size 50
    local _, p = ask(pub, "pub h:old last"):match("^pub (%d+) (%S+)$")
    local epoch, last = split_pos(p)
    local cur = ("%s:%d"):format(epoch, last)
    local sub = client(port)
    assert.are.equal("since true false " .. cur,
                     ask(sub, "since h:old 0123456789abcdef:" .. last))
    sub:abort()
    sub = client(port)
    -- 61 published, 50 kept (12..61): after 10 is too old, after 11 is not
    assert.are.equal("since true false " .. cur,
                     ask(sub, ("since h:old %s:%d"):format(epoch, 10)))
    sub:abort()
    sub = client(port)
    assert.are.equal("since true false " .. cur,
                     ask(sub, ("since h:old %s:%d"):format(epoch, last + 1)))
    sub:abort()
    sub = client(port)
    assert.are.equal("since true false " .. cur, ask(sub, "since h:old"))
    sub:abort()
    sub = client(port)
    sub:send_text(("since h:old %s:%d"):format(epoch, 11))
    for i = 12, last do
      assert.are.equal(i, select(2, recv_positioned(sub)))
    end
    assert.are.equal("since true true " .. cur, select(2, sub:recv_message()))
    -- already subscribed: false, nothing sent again
    assert.are.equal("since false false " .. cur,
                     ask(sub, ("since h:old %s:%d"):format(epoch, 11)))
    close_all { pub, sub }
  end)

  it("recovers 1,000 clients while a publisher runs at full speed, with "
     .. "no gap and no duplicate", function()
    local ctl = client(port)
    local function mark()
      local _, now = ask(ctl, "pub f:flood mark"):match("^pub (%d+) (%S+)$")
      return select(2, split_pos(now))
    end
    local _, p0 = ask(ctl, "pub f:flood begin"):match("^pub (%d+) (%S+)$")
    local epoch, off0 = split_pos(p0)
    local list = {}
    for i = 1, 1000 do list[i] = { ws = client(port) } end
    for i = 1, 40 do ask(ctl, "pub f:flood m" .. i) end
    assert.are.equal("started", ask(ctl, "start f:flood 5"))
    -- ten waves of 100, each from up to 40 back; between waves, more
    -- than a tick of the publisher's (5 a tick), besides the marks
    local last = mark()
    for wave = 0, 9 do
      for i = wave * 100 + 1, wave * 100 + 100 do
        local since = off0 + i % 41
        assert.is_true(list[i].ws:send_text(("since f:flood %s:%d")
                                            :format(epoch, since)))
        list[i].next = since + 1
      end
      local asked = 0
      assert.is_truthy(helper.wait_until(function()
        asked = asked + 1
        return mark() > last + asked + 5
      end, helper.scaled(10), 0.005), "the publisher runs")
      last = mark()
    end
    local _, final = split_pos(ask(ctl, "stop"):match("^stopped (%S+)$"))
    read_catch_up(list, final, epoch)
    -- each wave was answered after the one before had been, and some
    -- publishes after it: the recoveries ran among the publishes
    local positions, n = {}, 0
    for _, c in ipairs(list) do
      if not positions[c.answered] then n = n + 1 end
      positions[c.answered] = true
    end
    assert.is_true(n >= 10, "recoveries answered at " .. n .. " positions")
    ctl:abort()
  end)

  it("reads history with since, limit and reverse", function()
    local pub = client(port)
    local _, p = ask(pub, "pub h:read r1"):match("^pub (%d+) (%S+)$")
    local epoch, first = split_pos(p)
    for i = 2, 5 do ask(pub, "pub h:read r" .. i) end
    local cur = ("%s:%d"):format(epoch, first + 4)
    local function offs(...)
      local t = {}
      for _, d in ipairs { ... } do t[#t + 1] = tostring(first + d) end
      return table.concat(t, ",")
    end
    assert.are.equal("read " .. offs(0, 1, 2, 3, 4) .. " " .. cur,
                     ask(pub, "read h:read"))
    assert.are.equal("read " .. offs(1, 2) .. " " .. cur,
                     ask(pub, ("read h:read %s:%d 2"):format(epoch, first)))
    assert.are.equal("read " .. offs(4, 3) .. " " .. cur,
                     ask(pub, "read h:read - 2 reverse"))
    assert.are.equal("read  " .. cur,
                     ask(pub, "read h:read " .. cur))
    assert.are.equal("read nil the position is of another epoch EEPOCH",
                     ask(pub, "read h:read 0123456789abcdef:1"))
    assert.are.equal("data text r2",
                     ask(pub, ("data h:read %s:%d"):format(epoch, first)))
    ask(pub, "pubbin h:read b\0")
    assert.are.equal("data binary b\0",
                     ask(pub, ("data h:read %s:%d"):format(epoch, first + 4)))
    close_all { pub }
  end)

  it("keeps at most size messages of a topic, the oldest dropped first",
     function()
    local pub = client(port)
    local last
    for i = 1, 5 do                                     -- size 3
      last = select(2, split_pos(ask(pub, "pub exact e" .. i)
                                 :match("^pub %d+ (%S+)$")))
    end
    local offs = ask(pub, "read exact"):match("^read (%S+) ")
    assert.are.equal(("%d,%d,%d"):format(last - 2, last - 1, last), offs)
    close_all { pub }
  end)
end)

describe("history across a restart", function()
  it("begins a new epoch: a position of before is not recovered",
     function()
    local before = helper.start_server("spec/apps/history.lua", {})
    local pub = client(before.port)
    for i = 1, 3 do ask(pub, "pub h:again m" .. i) end
    local old = ask(pub, "pub h:again m4"):match("^pub %d+ (%S+)$")
    pub:abort()
    helper.stop_and_check(before)
    local after = helper.start_server("spec/apps/history.lua", {})
    pub = client(after.port)
    local epoch, off = split_pos(ask(pub, "pub h:again n1")
                                 :match("^pub %d+ (%S+)$"))
    assert.are_not.equal(split_pos(old), epoch)
    local sub = client(after.port)
    assert.are.equal(("since true false %s:%d"):format(epoch, off),
                     ask(sub, "since h:again " .. old))
    close_all { pub, sub }
    helper.stop_and_check(after)
  end)
end)

describe("history, a publish from inside a delivery", function()
  local server, port

  setup(function()
    server = helper.start_server("spec/apps/history.lua",
                                 { MAX_BACKPRESSURE = 1024 })
    port = server.port
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  -- first, second, third subscribe to topic in that order; second
  -- subscribes with second_sub, reads nothing and fills itself over
  -- max_backpressure (fill_topic), so the next publish fails it, and a
  -- handler of its close publishes nested to the same topic while the
  -- first publish is still on its way to third.  Both first and third
  -- receive "hello" and then nested, at the next position.
  local function nested_publish(topic, second_sub, fill_topic, nested)
    local first, third = client(port), client(port)
    local second = assert(helper.ws_connect(port, "/cb"))
    assert.are.equal("sub filled true", ask(first, "sub filled"))
    assert.are.equal("sub " .. topic .. " true",
                     ask(first, "sub " .. topic))
    assert.is_true(second:send_text(second_sub .. " " .. topic))
    assert.is_true(second:send_text("fill " .. fill_topic .. " 25165824"))
    assert.are.equal("filled", select(2, first:recv_message()))
    assert.are.equal("sub " .. topic .. " true",
                     ask(third, "sub " .. topic))
    local pub = client(port)
    local reply = ask(pub, "pub " .. topic .. " hello")
    local epoch, off = split_pos(reply:match("^pub %d+ (%S+)$"))
    for _, ws in ipairs { first, third } do
      assert.are.same({ epoch, off, "hello" }, { recv_positioned(ws) })
      assert.are.same({ epoch, off + 1, nested }, { recv_positioned(ws) })
    end
    second:abort()
    close_all { first, third, pub }
  end

  it("reaches every subscriber after the message being delivered",
     function()
    -- second's close handler publishes "bye"
    nested_publish("h:nest", "sub", "h:nest", "bye")
  end)

  it("so does one an on_presence handler publishes", function()
    -- the leave of second's presence publishes "left"
    nested_publish("p:nest", "psub", "none", "left")
  end)
end)

describe("history ttl", function()
  local s = helper.with_server("spec/apps/history.lua", { HTTL = 0.3 })

  it("drops messages older than ttl", function()
    local pub = client(s.port)
    local _, p = ask(pub, "pub h:t a"):match("^pub (%d+) (%S+)$")
    local epoch, off = split_pos(p)
    ask(pub, "pub h:t b")
    assert.is_truthy(ask(pub, "read h:t"):find("^read %d+,%d+ "))
    helper.sleep(0.5)
    assert.are.equal(("read  %s:%d"):format(epoch, off + 1),
                     ask(pub, "read h:t"))
    local sub = client(s.port)
    assert.are.equal(("since true false %s:%d"):format(epoch, off + 1),
                     ask(sub, ("since h:t %s:%d"):format(epoch, off)))
    close_all { pub, sub }
  end)
end)

describe("history ttl, one message at a time", function()
  local TTL = helper.scaled(1)
  local s = helper.with_server("spec/apps/history.lua", { HTTL = TTL })

  it("drops a message once it is older than ttl, the newer kept",
     function()
    local pub = client(s.port)
    local t1 = socket.gettime()
    local epoch, off = split_pos(ask(pub, "pub h:aging a")
                                 :match("^pub %d+ (%S+)$"))
    -- ttl is time: b comes later, so that a is older than ttl and b not,
    -- for a while
    helper.sleep(TTL * 0.6)
    ask(pub, "pub h:aging b")
    local t2 = socket.gettime()
    helper.sleep(math.max(0, t1 + TTL * 1.1 - socket.gettime()))
    assert.are.equal(("read %d %s:%d"):format(off + 1, epoch, off + 1),
                     ask(pub, "read h:aging"))
    assert.is_true(socket.gettime() < t2 + TTL, "b outlived ttl: too slow")
    close_all { pub }
  end)
end)

describe("max_history_bytes", function()
  local s = helper.with_server("spec/apps/history.lua",
                               { MAX_HISTORY_BYTES = 64 * 1024,
                                 HSIZE = 100000 })

  it("keeps the process under it, oldest first", function()
    local pub = client(s.port)
    local big = ("x"):rep(1000)
    for i = 1, 200 do ask(pub, "pub h:m" .. (i % 2) .. " " .. big) end
    local n = 0
    for t = 0, 1 do
      local offs = ask(pub, "read h:m" .. t):match("^read (%S*) ")
      n = n + select(2, offs:gsub(",", "")) + 1
      -- what is kept is the newest of each topic: the oldest went first
      local want = {}
      for o = 101 - (select(2, offs:gsub(",", "")) + 1), 100 do
        want[#want + 1] = o
      end
      assert.are.equal(table.concat(want, ","), offs)
    end
    -- about 1 KiB each: fewer than 64 of the 200 remain
    assert.is_true(n > 30 and n < 64, "kept " .. n)
    close_all { pub }
  end)
end)

describe("max_history_bytes over topics", function()
  local s = helper.with_server("spec/apps/history.lua",
                               { MAX_HISTORY_BYTES = 8 * 1024 })

  it("drops the topics least recently published to, whose positions "
     .. "then begin a new epoch", function()
    local pub = client(s.port)
    local first = ask(pub, "pub h:lru1 m"):match("^pub %d+ (%S+)$")
    local last
    for i = 2, 300 do
      last = ask(pub, "pub h:lru" .. i .. " m"):match("^pub %d+ (%S+)$")
    end
    -- the first topic is gone: nothing to read, and its old position is
    -- of another epoch
    local sub = client(s.port)
    local reply = ask(sub, "since h:lru1 " .. first)
    local epoch = reply:match("^since true false (%x+):0$")
    assert.is_truthy(epoch, reply)
    assert.are_not.equal(split_pos(first), epoch)
    -- the ten last published to keep their message
    for i = 291, 300 do
      assert.is_truthy(ask(pub, "read h:lru" .. i):match("^read 1 %x+:1$"))
    end
    -- the last one published to recovers
    local back = client(s.port)
    local e, o = split_pos(last)
    back:send_text(("since h:lru300 %s:%d"):format(e, o - 1))
    assert.are.same({ e, o, "m" }, { recv_positioned(back) })
    assert.are.equal(("since true true %s:%d"):format(e, o),
                     select(2, back:recv_message()))
    close_all { pub, sub, back }
  end)
end)

describe("history misuse", function()
  local app = moonsocket.app {}

  local function err_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok)
    return (tostring(err):gsub("^[^:]+:%d+: ", ""))
  end

  it("raises with clear messages", function()
    assert.are.equal("bad argument #1 to 'history' (string expected, got nil)",
                     err_of(app.history, app, nil))
    assert.are.equal("bad argument #1 to 'history' ('*' may only end a "
                     .. "pattern)", err_of(app.history, app, "a*b"))
    assert.are.equal("bad argument #1 to 'history' (empty topic name)",
                     err_of(app.history, app, ""))
    assert.are.equal("bad argument #2 to 'history' (size must be an integer "
                     .. "from 1 to 10000000)",
                     err_of(app.history, app, "t", { size = 0 }))
    assert.are.equal("bad argument #2 to 'history' (ttl must be a number of "
                     .. "seconds from 0 to 31622400)",
                     err_of(app.history, app, "t", { ttl = -1 }))
    assert.are.equal("bad argument #2 to 'history' (unknown option 'sise')",
                     err_of(app.history, app, "t", { sise = 1 }))
    assert.are.equal("option 'max_history_bytes' must be an integer from "
                     .. "1024 to 1099511627776",
                     err_of(moonsocket.app, { max_history_bytes = 10 }))
    assert.are.equal("topic 'nohist' keeps no history (see app:history)",
                     err_of(app.history_read, app, "nohist"))
    app:history("t:*")
    assert.are.equal("bad argument #2 to 'history_read' (since must be a "
                     .. "position { epoch = \"16 hex digits\", offset = n } "
                     .. "or \"epoch:offset\")",
                     err_of(app.history_read, app, "t:x", { since = "12" }))
    local list, pos = app:history_read("t:x")
    assert.are.same({}, list)
    assert.are.equal(0, pos.offset)
  end)

  it("raises for a position that is not exactly \"epoch:offset\": a sign, "
     .. "blanks, a negative number wrapping around, more than 2^63 - 1, "
     .. "an epoch that is no string", function()
    app:history("t:*")
    local wrong = "bad argument #2 to 'history_read' (since must be a "
      .. "position { epoch = \"16 hex digits\", offset = n } or "
      .. "\"epoch:offset\")"
    local E = "0123456789abcdef:"
    for _, since in ipairs {
      E .. "+5", E .. " 5", E .. "\t5", E .. "5 ", E .. " -0",
      E .. " -18446744073709551615",     -- strtoull's 1
      E .. "\t-18446744073709551614",    -- and 2
      E .. "9223372036854775808", E .. "18446744073709551615",
      E .. "99999999999999999999", E .. "", E .. "0x10", E .. "1e3",
      { epoch = 1234567890123456, offset = 1 },
      { epoch = "0123456789abcdef", offset = 0 / 0 },
    } do
      assert.are.equal(wrong, err_of(app.history_read, app, "t:x",
                                     { since = since }))
    end
    -- the largest offset and a well-formed one are taken
    for _, since in ipairs { E .. "9223372036854775807", E .. "0", E .. "7",
                             { epoch = "0123456789abcdef", offset = 7 } } do
      assert.are.same({ nil, "the position is of another epoch", "EEPOCH" },
                      { app:history_read("t:x", { since = since }) })
    end
  end)

end)

describe("history misuse on a socket", function()
  local s = helper.with_server("spec/apps/history.lua", {})

  it("raises on since for a topic without history", function()
    local ws = client(s.port)
    ws:send_text("since plainly 0123456789abcdef:1")
    -- the handler's error closes the socket with 1011
    ws:expect_close(1011)
    ws:abort()
    assert.is_truthy(helper.wait_until(function()
      return s:log():find("topic 'plainly' keeps no history", 1, true)
    end, 5))
  end)
end)

describe("history with workers = 2", function()
  local server

  setup(function()
    server = helper.start_server("spec/apps/history.lua",
                                 { WORKERS = 2, HSIZE = 1000 })
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  -- A client served by worker w (at /ws, or path).
  local function on_worker(w, path)
    for _ = 1, 400 do
      local ws = helper.ws_connect(server.port, path or "/ws")
      if ws and ask(ws, "pid") == "pid " .. w then return ws end
      if ws then ws:abort() else helper.sleep(0.05) end  -- not forked yet
    end
    error("no connection reached worker " .. w)
  end

  it("gives a callback handler's ready its answer at once on a topic "
     .. "without history", function()
    local sub, pub = on_worker(1, "/cb"), on_worker(2)
    ready_without_history(sub, pub, "plain:w")
    close_all { sub, pub }
  end)

  it("gives positions from the master and recovers on the other worker",
     function()
    local w1, w2 = on_worker(1), on_worker(2)
    local sub = on_worker(1)
    assert.are.equal("sub h:w true", ask(sub, "sub h:w"))
    local _, p0 = ask(w1, "pub h:w first"):match("^pub (%d+) (%S+)$")
    local epoch, off0 = split_pos(p0)
    -- both workers publish: one sequence
    for i = 1, 100 do
      local from = i % 2 == 0 and w1 or w2
      local _, p = ask(from, "pub h:w m" .. i):match("^pub (%d+) (%S+)$")
      assert.are.equal(("%s:%d"):format(epoch, off0 + i), p)
    end
    for i = 0, 100 do
      assert.are.equal(off0 + i, select(2, recv_positioned(sub)))
    end
    -- the subscriber drops after 40 and comes back on worker 2
    sub:abort()
    local again = on_worker(2)
    again:send_text(("since h:w %s:%d"):format(epoch, off0 + 40))
    for i = 41, 100 do
      assert.are.same({ epoch, off0 + i, "m" .. i },
                      { recv_positioned(again) })
    end
    assert.are.equal(("since true true %s:%d"):format(epoch, off0 + 100),
                     select(2, again:recv_message()))
    ask(w1, "pub h:w live")
    assert.are.same({ epoch, off0 + 101, "live" },
                    { recv_positioned(again) })
    close_all { w1, w2, again }
  end)

  -- Runs fn with the master stopped (SIGSTOP): it answers no publish.
  local function master_stopped(fn)
    assert.is_true(os.execute("kill -STOP " .. server.pid))
    local ok, err = pcall(fn)
    assert.is_true(os.execute("kill -CONT " .. server.pid))
    assert(ok, err)
  end

  it("serves others while a publish waits for its position", function()
    local a, b = on_worker(1), on_worker(1)
    local cb = on_worker(1, "/cb")
    local sub = on_worker(2)
    assert.are.equal("sub h:held true", ask(b, "sub h:held"))
    assert.are.equal("sub h:held true", ask(sub, "sub h:held"))
    master_stopped(function()
      -- a's coroutine waits for the master; its worker serves on
      assert.is_true(a:send_text("pub h:held one"))
      assert.are.equal("echo hi", ask(b, "echo hi"))
      assert.are.equal("echo again", ask(b, "echo again"))
      -- a callback handler cannot wait: 0 and no position, at once
      assert.are.equal("pub 0 nil", ask(cb, "pub h:held two"))
      assert.are.equal("timeout", select(2, a:recv_message(0.2)))
      assert.are.equal("timeout", select(2, sub:recv_message(0.1)))
    end)
    -- the position comes back; both messages in the master's order
    local reply = select(2, a:recv_message())
    local n, p = reply:match("^pub (%d+) (%S+)$")
    assert.are.equal("1", n, reply)                -- b, on worker 1
    local epoch, off = split_pos(p)
    for _, ws in ipairs { b, sub } do
      assert.are.same({ epoch, off, "one" }, { recv_positioned(ws) })
      assert.are.same({ epoch, off + 1, "two" }, { recv_positioned(ws) })
    end
    close_all { a, b, cb, sub }
  end)

  it("waits for the master's positions without blocking the worker",
     function()
    local a, echo = on_worker(1), on_worker(1)
    local cb = on_worker(1, "/cb")
    local sub, gone = on_worker(1), on_worker(1)
    local epoch, off = split_pos(ask(a, "pub h:sync first")
                                 :match("^pub %d+ (%S+)$"))
    master_stopped(function()
      -- three publishes on their way: their positions are not here yet
      assert.are.equal("burst nil", ask(cb, "burst h:sync 3"))
      -- a position worker 1 has yet to get: it asks the master and the
      -- coroutine waits; the loop serves on
      local since = ("since h:sync %s:%d"):format(epoch, off + 2)
      assert.is_true(sub:send_text(since))
      assert.is_true(gone:send_text(since))
      gone:abort()                              -- closed meanwhile
      for i = 1, 5 do
        assert.is_true(echo:send_text("echo " .. i))
        assert.are.same({ helper.TEXT, "echo " .. i },
                        { echo:recv_message(helper.scaled(2)) })
      end
      assert.are.equal("timeout", select(2, sub:recv_message(0.2)))
    end)
    -- the master answers in order: the three, then the sync; exactly
    -- the one after since comes
    assert.are.same({ epoch, off + 3, "b3" }, { recv_positioned(sub) })
    assert.are.equal(("since true true %s:%d"):format(epoch, off + 3),
                     select(2, sub:recv_message()))
    assert.are.equal("echo on", ask(echo, "echo on"))
    close_all { a, echo, cb, sub }
  end)

  it("gives a topic nothing was published to its epoch from the master",
     function()
    local sub = on_worker(1)
    local epoch, off = split_pos(ask(sub, "since h:fresh")
                                 :match("^since true false (%S+)$"))
    assert.are_not.equal(("0"):rep(16), epoch)
    assert.are.equal(0, off)
    sub:abort()
    local pub = on_worker(2)
    for i = 1, 3 do
      local reply = ask(pub, "pub h:fresh m" .. i)
      assert.are.equal(("%s:%d"):format(epoch, i),
                       reply:match("^pub %d+ (%S+)$"), reply)
    end
    for w = 1, 2 do
      local back = on_worker(w)
      assert.is_true(back:send_text(("since h:fresh %s:0"):format(epoch)))
      for i = 1, 3 do
        assert.are.same({ epoch, i, "m" .. i }, { recv_positioned(back) })
      end
      assert.are.equal(("since true true %s:3"):format(epoch),
                       select(2, back:recv_message()))
      back:abort()
    end
    -- a callback handler cannot wait: what the worker has, at once
    local cb = on_worker(1, "/cb")
    assert.are.equal("since true false 0000000000000000:0",
                     ask(cb, "since h:cbfresh"))
    close_all { pub, cb }
  end)

  it("gives a callback handler's ready the master's epoch", function()
    local cb = on_worker(1, "/cb")
    local epoch, off = split_pos(ask(cb, "ready h:cbready")
                                 :match("^ready true false (%S+)$"))
    assert.are_not.equal(("0"):rep(16), epoch)
    assert.are.equal(0, off)
    cb:abort()
    local pub = on_worker(2)
    for i = 1, 3 do
      local reply = ask(pub, "pub h:cbready m" .. i)
      assert.are.equal(("%s:%d"):format(epoch, i),
                       reply:match("^pub %d+ (%S+)$"), reply)
    end
    for w = 1, 2 do
      local back = on_worker(w, "/cb")
      assert.is_true(back:send_text(("ready h:cbready %s:0"):format(epoch)))
      for i = 1, 3 do
        assert.are.same({ epoch, i, "m" .. i }, { recv_positioned(back) })
      end
      assert.are.equal(("ready true true %s:3"):format(epoch),
                       select(2, back:recv_message()))
      back:abort()
    end
    close_all { pub }
  end)

  it("gives ready a position the worker has yet to get from the master",
     function()
    local a = on_worker(1)
    local cb, gone = on_worker(1, "/cb"), on_worker(1, "/cb")
    local epoch, off = split_pos(ask(a, "pub h:cbsync first")
                                 :match("^pub %d+ (%S+)$"))
    master_stopped(function()
      assert.are.equal("burst nil", ask(cb, "burst h:cbsync 3"))
      local since = ("ready h:cbsync %s:%d"):format(epoch, off + 2)
      assert.is_true(cb:send_text(since))
      assert.is_true(gone:send_text(since))
      gone:abort()                              -- closed meanwhile
      assert.are.equal("timeout", select(2, cb:recv_message(0.2)))
    end)
    -- the master answers in order: the three, then the sync; exactly
    -- the one after since comes, then ready's answer
    assert.are.same({ epoch, off + 3, "b3" }, { recv_positioned(cb) })
    assert.are.equal(("ready true true %s:%d"):format(epoch, off + 3),
                     select(2, cb:recv_message()))
    assert.are.equal("echo on", ask(cb, "echo on"))
    close_all { a, cb }
  end)

  it("fails a publish the master leaves unanswered for 5 s", function()
    local a, sub, s = on_worker(1), on_worker(2), on_worker(1)
    assert.are.equal("sub h:late true", ask(sub, "sub h:late"))
    local epoch, off = split_pos(ask(a, "pub h:late first")
                                 :match("^pub %d+ (%S+)$"))
    assert.are.equal("first", select(3, recv_positioned(sub)))
    master_stopped(function()
      assert.is_true(a:send_text("pub h:late slow"))
      -- a subscribe waiting for the master meanwhile: after 5 s, what
      -- the worker has
      assert.is_true(s:send_text(("since h:late %s:%d")
                                 :format(epoch, off + 1)))
      local kind, reply = a:recv_message(8)
      assert.are.equal(helper.TEXT, kind, server:log())
      assert.are.equal("pub nil the master process did not give a "
                       .. "position EUNAVAILABLE", reply)
      assert.are.same({ helper.TEXT, ("since true false %s:%d")
                                       :format(epoch, off) },
                      { s:recv_message(8) })
      assert.are.equal("echo on", ask(a, "echo on"))
    end)
    -- the message itself may still come, as the failure says
    assert.are.equal("slow", select(3, recv_positioned(sub)))
    assert.is_truthy(server:log():find("the master gave no position "
                                       .. "within 5 s", 1, true))
    close_all { a, sub, s }
  end)

  it("recovers on one worker while the other publishes at full speed",
     function()
    local ctl = on_worker(1)
    local _, p0 = ask(ctl, "pub f:wf begin"):match("^pub (%d+) (%S+)$")
    local epoch, off0 = split_pos(p0)
    assert.are.equal("started", ask(ctl, "start f:wf 5"))
    local list = {}
    for i = 1, 50 do
      local ws = on_worker(2)
      ws:send_text(("since f:wf %s:%d"):format(epoch, off0))
      list[i] = { ws = ws, next = off0 + 1 }
    end
    local _, final = split_pos(ask(ctl, "stop"):match("^stopped (%S+)$"))
    read_catch_up(list, final)
    ctl:abort()
  end)
end)
