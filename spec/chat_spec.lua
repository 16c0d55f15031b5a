-- spec/chat_spec.lua: the chat sample (examples/chat) over the wire,
-- and how strictly it reads the JSON it speaks (lua-cjson).

local helper = require "helper"
local cjson = require "cjson"

local rep = string.rep

-- What reaches the room (joined, left, message) comes with its
-- position in the room before it: "<epoch>:<offset> ".
local ROOM_EVENTS = { joined = true, left = true, message = true }

-- The next message, which must be text: decoded, its JSON as it came,
-- and its position: the envelope's, or the welcome's (taken out of the
-- welcome with its "recovered", the fourth value, so the welcome can be
-- compared whole).
local function recv(ws)
  local kind, data = ws:recv_message()
  assert.are.equal(helper.TEXT, kind, data)
  local position, json = data:match("^(%x+:%d+) (.*)$")
  json = json or data
  local event = cjson.decode(json)
  assert.are.equal(ROOM_EVENTS[event.type] ~= nil, position ~= nil, data)
  local recovered
  if event.type == "welcome" then
    position, recovered = event.position, event.recovered
    assert.matches("^%x+:%d+$", position)
    assert.is_boolean(recovered)
    event.position, event.recovered = nil, nil
  end
  return event, json, position, recovered
end

local function send(ws, event)
  assert.is_true(ws:send_text(cjson.encode(event)))
end

local function expect_error(ws, text)
  assert.are.same({ type = "error", error = text }, (recv(ws)))
end

-- Nothing is waiting for ws: the answer to a question comes first.
local function assert_quiet(ws)
  send(ws, { type = "say", text = " " })
  local event = recv(ws)
  assert.are.equal("error", event.type, cjson.encode(event))
end

describe("examples/chat", function()
  local server
  local open = {}

  -- A new client at /chat (closed after each test).
  local function connect(headers)
    local ws = assert(helper.ws_connect(server.port, "/chat", headers))
    open[#open + 1] = ws
    return ws
  end

  -- Joins room as name; returns the client and its welcome.
  local function join(name, room)
    local ws = connect()
    send(ws, { type = "join", name = name, room = room })
    local welcome = recv(ws)
    assert.are.equal("welcome", welcome.type, cjson.encode(welcome))
    return ws, welcome
  end

  setup(function()
    server = helper.start_server("examples/chat/app.lua", {})
  end)

  after_each(function()
    for _, ws in ipairs(open) do ws:abort() end
    open = {}
  end)

  teardown(function()
    helper.stop_and_check(server)
  end)

  it("serves its page, script and style", function()
    helper.assert_sample_files(server.port)
    local _, _, page, sock = helper.http(server.port,
      "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sock:close()
    assert.truthy(page:find("connect-src 'self';", 1, true))
  end)

  it("welcomes the first member and tells the room who joins", function()
    local alice = connect()
    send(alice, { type = "join", name = "alice", room = "lobby" })
    local welcome, raw = recv(alice)
    assert.truthy(raw:find('"members":["alice"]', 1, true), raw)  -- a list
    assert.are.same({ type = "welcome", room = "lobby", name = "alice",
      count = 1, members = { "alice" } }, welcome)
    local bob, welcome_bob = join("bob", "lobby")
    assert.are.same({ type = "welcome", room = "lobby", name = "bob",
      count = 2, members = { "alice", "bob" } }, welcome_bob)
    assert.are.same({ type = "joined", room = "lobby", name = "bob",
      count = 2 }, (recv(alice)))
    assert_quiet(bob)             -- no notice of its own joining
  end)

  it("a message reaches everyone in the room, its sender too, and no one"
    .. " else", function()
    local alice = join("alice", "den")
    local bob = join("bob", "den")
    recv(alice)                                        -- bob joined
    local carol = join("carol", "attic")
    local text = 'say "hi"\n\t\\ é 😀 \0 </b>'
    send(alice, { type = "say", text = text })
    for _, ws in ipairs { alice, bob } do
      local event, raw = recv(ws)
      assert.are.same({ type = "message", room = "den", name = "alice",
        text = text }, event)
      assert.is_nil(raw:find("[\0-\31]"), raw)   -- written as escapes
    end
    -- escapes from the client arrive decoded
    bob:send_text('{"type":"say","text":"\\ud83d\\ude00 \\u00e9\\/"}')
    for _, ws in ipairs { alice, bob } do
      assert.are.same({ type = "message", room = "den", name = "bob",
        text = "😀 é/" }, (recv(ws)))
    end
    assert_quiet(carol)
    send(carol, { type = "say", text = "anyone?" })
    assert.are.equal("anyone?", recv(carol).text)
    assert_quiet(alice)
    assert_quiet(bob)
  end)

  it("a name taken in the room gets a number, cut to 32 characters",
    function()
    join("dana", "names")
    local _, second = join("dana", "names")
    assert.are.equal("dana (2)", second.name)
    local _, third = join("dana", "names")
    assert.are.equal("dana (3)", third.name)
    assert.are.same({ "dana", "dana (2)", "dana (3)" }, third.members)
    local _, elsewhere = join("dana", "other names")
    assert.are.equal("dana", elsewhere.name)
    -- at most 32 characters, counted in characters, not bytes
    join(rep("x", 32), "names")
    assert.are.equal(rep("x", 28) .. " (2)",
      select(2, join(rep("x", 32), "names")).name)
    join(rep("é", 32), "names")
    assert.are.equal(rep("é", 28) .. " (2)",
      select(2, join(rep("é", 32), "names")).name)
    -- no space left before the number
    join(rep("y", 27) .. " zzzz", "names")
    assert.are.equal(rep("y", 27) .. " (2)",
      select(2, join(rep("y", 27) .. " zzzz", "names")).name)
    -- spaces around a name or room are dropped
    local _, trimmed = join("  erin ", "  names  ")
    assert.are.same({ "erin", "names" }, { trimmed.name, trimmed.room })
  end)

  it("switching rooms leaves one and joins the other, with notices",
    function()
    local alice = join("alice", "north")
    local carol = join("carol", "south")
    local bob = join("bob", "north")
    recv(alice)                                        -- bob joined
    send(bob, { type = "join", room = "south" })       -- keeps its name
    assert.are.same({ type = "welcome", room = "south", name = "bob",
      count = 2, members = { "bob", "carol" } }, (recv(bob)))
    assert.are.same({ type = "left", room = "north", name = "bob",
      count = 1 }, (recv(alice)))
    assert.are.same({ type = "joined", room = "south", name = "bob",
      count = 2 }, (recv(carol)))
    send(bob, { type = "say", text = "hello south" })
    assert.are.equal("hello south", recv(carol).text)
    assert.are.equal("hello south", recv(bob).text)
    assert_quiet(alice)
    -- the same room again is refused; a new name comes with a new room
    send(bob, { type = "join", room = "south" })
    expect_error(bob, "you are in south already")
    send(bob, { type = "join", name = "robert", room = "north" })
    assert.are.same({ type = "welcome", room = "north", name = "robert",
      count = 2, members = { "alice", "robert" } }, (recv(bob)))
    assert.are.same({ type = "left", room = "south", name = "bob",
      count = 1 }, (recv(carol)))
    assert.are.same({ type = "joined", room = "north", name = "robert",
      count = 2 }, (recv(alice)))
    -- the name it left is free again
    assert.are.equal("bob", select(2, join("bob", "south")).name)
  end)

  it("closing, or vanishing, leaves the room with a notice", function()
    local alice = join("alice", "west")
    local bob = join("bob", "west")
    local carol = join("carol", "west")
    recv(alice)
    recv(alice)
    recv(bob)
    bob:close(1001, "going away")
    bob:expect_close(1001)
    assert.are.same({ type = "left", room = "west", name = "bob",
      count = 2 }, (recv(alice)))
    assert.are.same({ type = "left", room = "west", name = "bob",
      count = 2 }, (recv(carol)))
    carol:abort()                                      -- TCP drops
    assert.are.same({ type = "left", room = "west", name = "carol",
      count = 1 }, (recv(alice)))
    -- a name taken by someone who left is free again
    local _, welcome = join("carol", "west")
    assert.are.same({ "alice", "carol" }, welcome.members)
    assert.are.equal(2, welcome.count)
  end)

  it("the count is the number of sockets in the room", function()
    local first = join("p1", "crowd")
    local crowd = { first }
    for i = 2, 12 do
      local ws, welcome = join("p" .. i, "crowd")
      assert.are.equal(i, welcome.count)
      crowd[i] = ws
    end
    for i = 2, 12 do
      assert.are.same({ type = "joined", room = "crowd", name = "p" .. i,
        count = i }, (recv(first)))
    end
    for i = 2, 7 do crowd[i]:abort() end
    local gone = {}
    for _ = 2, 7 do
      local event = recv(first)
      assert.are.equal("left", event.type)
      gone[#gone + 1] = event.count
    end
    assert.are.same({ 11, 10, 9, 8, 7, 6 }, gone)
    local _, welcome = join("late", "crowd")
    assert.are.equal(7, welcome.count)
    assert.are.equal(7, #welcome.members)
  end)

  it("invalid names and rooms get the error reply and change nothing",
    function()
    local ws = connect()
    local cases = {
      { { name = "", room = "r" }, "name must be 1 to 32 characters" },
      { { name = "   ", room = "r" }, "name must be 1 to 32 characters" },
      { { name = rep("n", 33), room = "r" },
        "name must be 1 to 32 characters" },
      { { name = rep("é", 33), room = "r" },
        "name must be 1 to 32 characters" },
      { { name = "a\nb", room = "r" },
        "name must not contain control characters" },
      { { name = "tab\t", room = "r" },
        "name must not contain control characters" },
      { { name = "nul\0", room = "r" },
        "name must not contain control characters" },
      { { name = "c1\u{85}", room = "r" },
        "name must not contain control characters" },
      { { name = "evil\u{202E}txt.exe", room = "r" },
        "name must not contain control characters" },
      { { name = 5, room = "r" }, '"name" must be a string' },
      { { room = "r" }, '"name" must be a string' },
      { { name = "ok", room = "" }, "room must be 1 to 32 characters" },
      { { name = "ok", room = rep("r", 33) },
        "room must be 1 to 32 characters" },
      { { name = "ok", room = "a\rb" },
        "room must not contain control characters" },
      { { name = "ok" }, '"room" must be a string' },
      { { name = "ok", room = { "r" } },
        '"room" must be a string' },
    }
    for _, case in ipairs(cases) do
      local event = case[1]
      event.type = "join"
      send(ws, event)
      expect_error(ws, case[2])
    end
    send(ws, { type = "say", text = "hello?" })
    expect_error(ws, "join a room first")
    -- 32 characters of two bytes each are fine
    send(ws, { type = "join", name = rep("é", 32), room = "r" })
    local welcome = recv(ws)
    assert.are.same({ rep("é", 32), 1 }, { welcome.name, welcome.count })
    -- a refused switch leaves it where it was
    send(ws, { type = "join", name = "", room = "elsewhere" })
    expect_error(ws, "name must be 1 to 32 characters")
    send(ws, { type = "say", text = "still here" })
    assert.are.same({ type = "message", room = "r", name = rep("é", 32),
      text = "still here" }, (recv(ws)))
  end)

  it("messages must be 1 to 2,000 characters", function()
    local ws = join("long", "limits")
    local other = join("reader", "limits")
    recv(ws)                                           -- reader joined
    send(ws, { type = "say", text = rep("a", 2001) })
    expect_error(ws, "the message is longer than 2000 characters")
    send(ws, { type = "say", text = rep("😀", 2001) })
    expect_error(ws, "the message is longer than 2000 characters")
    for _, text in ipairs { "", " \n\t " } do
      send(ws, { type = "say", text = text })
      expect_error(ws, "the message is empty")
    end
    send(ws, { type = "say", text = 42 })
    expect_error(ws, '"text" must be a string')
    assert_quiet(other)
    -- 2,000 characters of four bytes go through, even with every one
    -- written as an escaped surrogate pair (24,000 bytes)
    send(ws, { type = "say", text = rep("😀", 2000) })
    assert.are.equal(rep("😀", 2000), recv(other).text)
    ws:send_text('{"type":"say","text":"' .. rep("\\ud83d\\ude00", 2000)
      .. '"}')
    assert.are.equal(rep("😀", 2000), recv(other).text)
    recv(ws)
    recv(ws)
  end)

  it("a message over max_message_size closes with 1009", function()
    local ws = join("big", "limits2")
    local other = join("witness", "limits2")
    recv(ws)
    ws:send_text('{"type":"say","text":"' .. rep("a", 32 * 1024) .. '"}')
    ws:expect_close(1009)
    assert.are.same({ type = "left", room = "limits2", name = "big",
      count = 1 }, (recv(other)))
  end)

  it("a member who stops reading is dropped, and the room told", function()
    local stuck = join("stuck", "flood")
    local talker = join("talker", "flood")
    local reader = join("reader", "flood")
    recv(talker)                                       -- reader joined
    -- 8,000-byte messages until the one that never reads is over the
    -- 256 KiB max_backpressure (beyond what the kernel buffers): its
    -- close handler tells the room while the message is published
    local text = rep("😀", 2000)
    local left = {}
    local function read_until_message(ws)
      while true do
        local event = recv(ws)
        if event.type == "message" then
          assert.are.equal(text, event.text)
          return
        end
        assert.are.same({ type = "left", room = "flood", name = "stuck",
          count = 2 }, event)
        left[ws] = true
      end
    end
    local sent = 0
    repeat
      send(talker, { type = "say", text = text })
      sent = sent + 1
      read_until_message(talker)
      read_until_message(reader)
    until (left[talker] and left[reader]) or sent == 3000
    assert.is_true(left[talker] and left[reader], "never dropped")
    assert.is_true(sent > 10)
    stuck:abort()
    local _, welcome = join("late", "flood")
    assert.are.same({ "late", "reader", "talker" }, welcome.members)
    assert.are.equal(3, welcome.count)
  end)

  it("what is not a command gets an error reply, and the socket stays",
    function()
    local ws = connect()
    local cases = {
      { "hello", "invalid JSON: expected value but found invalid token at "
        .. "character 1" },
      { '{"type":"say",}', "invalid JSON: expected object key string but "
        .. "found T_OBJ_END at character 15" },
      { '{"type":"say"} x', "invalid JSON: expected the end but found "
        .. "invalid token at character 16" },
      { "", "invalid JSON: expected value but found T_END at character 1" },
      { "[]", "expected a JSON object" },
      { '"join"', "expected a JSON object" },
      { "null", "expected a JSON object" },
      { "{}", '"type" must be "join", "say" or "drop"' },
      { '{"type":"shout"}', '"type" must be "join", "say" or "drop"' },
      { '{"type":["join"]}', '"type" must be "join", "say" or "drop"' },
      { '{"type":"__index"}', '"type" must be "join", "say" or "drop"' },
    }
    for _, case in ipairs(cases) do
      assert.is_true(ws:send_text(case[1]))
      expect_error(ws, case[2])
    end
    assert.is_true(ws:send_binary(cjson.encode { type = "say", text = "x" }))
    expect_error(ws, "send JSON as text")
    send(ws, { type = "join", name = "survivor", room = "errors" })
    assert.are.equal("welcome", recv(ws).type)
  end)

  -- What a strict reader refuses, with cjson's reason, and changes nothing:
  -- lone surrogates, NaN, Infinity and hexadecimal numbers, arrays where
  -- an object belongs, and more than an object with a value in it.
  it("refuses lone surrogates, invalid numbers, arrays and deep nesting",
    function()
    local ws = join("strict", "strict")
    local witness = join("witness", "strict")
    recv(ws)                                       -- witness joined
    local function at(n, what)
      return ("invalid JSON: expected value but found %s at character %d")
        :format(what, n)
    end
    local escape, token, number = "invalid unicode escape code",
      "invalid token", "invalid number"
    local cases = {
      { '{"type":"say","text":"\\ud800"}', at(23, escape) },
      { '{"type":"say","text":"a\\ud83d"}', at(24, escape) },
      { '{"type":"say","text":"\\udc00"}', at(23, escape) },
      { '{"type":"say","text":"\\ude00\\ud83d"}', at(23, escape) },
      { '{"type":"say","text":"\\ud800\\u0041"}', at(23, escape) },
      { '{"type":"say","text":"\\ud800\\ud800"}', at(23, escape) },
      -- cjson 2.1.0 stops reading at a NUL byte, and takes control
      -- characters inside strings
      { '{"type":"say","text":"hi"}\0{"type":"say","text":"more"}',
        "invalid JSON: control character at byte 27" },
      { '{"type":"say","text":"a\0b"}',
        "invalid JSON: control character at byte 24" },
      { '{"type":"say","text":"a\27[31mred"}',
        "invalid JSON: control character at byte 24" },
      { '{"type":"say","text":NaN}', at(22, token) },
      { '{"type":"say","text":nan}', at(22, token) },
      { '{"type":"say","text":Infinity}', at(22, token) },
      { '{"type":"say","text":-Infinity}', at(22, number) },
      { '{"type":"join","name":"n","room":0x41}', at(34, number) },
      { "[]", "expected a JSON object" },
      { ' \n[{"type":"say","text":"in a list"}]', "expected a JSON object" },
      { '["say", "in a list"]', "expected a JSON object" },
      { '{"type":"say","text":[["deep"]]}', "invalid JSON: found too many "
        .. "nested data structures (3) at character 23" },
      { '{"type":"say","text":{"a":{}}}', "invalid JSON: found too many "
        .. "nested data structures (3) at character 27" },
      { rep("[", 30000), "invalid JSON: found too many nested data "
        .. "structures (3) at character 3" },
      -- one level inside the object is read, and gets a type error
      { '{"type":"say","text":["flat"]}', '"text" must be a string' },
      { ' \t\r\n{"type":"say","text":{}}', '"text" must be a string' },
    }
    for _, case in ipairs(cases) do
      assert.is_true(ws:send_text(case[1]))
      expect_error(ws, case[2])
    end
    assert_quiet(witness)
    -- a pair of escapes is one character
    ws:send_text('{"type":"say","text":"\\ud83d\\ude00"}')
    assert.are.equal("😀", recv(witness).text)
    assert.are.equal("😀", recv(ws).text)
  end)

  it("refuses text that is not UTF-8, as binary (the reply) or as text"
    .. " (1007)", function()
    local witness = join("witness", "utf8")
    -- a stray byte, an overlong "/", a surrogate, past U+10FFFF
    local bad = { "\xe9", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80" }
    local ws = join("sender", "utf8")
    assert.are.same({ type = "joined", room = "utf8", name = "sender",
      count = 2 }, (recv(witness)))
    for _, bytes in ipairs(bad) do
      local message = '{"type":"say","text":"' .. bytes .. '"}'
      assert.is_true(ws:send_binary(message))
      expect_error(ws, "send JSON as text")
      local in_name = '{"type":"join","name":"' .. bytes .. '","room":"x"}'
      assert.is_true(ws:send_binary(in_name))
      expect_error(ws, "send JSON as text")
    end
    assert_quiet(witness)
    for _, bytes in ipairs(bad) do
      local other = join("other", "utf8")
      assert.are.same({ type = "joined", room = "utf8", name = "other",
        count = 3 }, (recv(witness)))
      assert.is_true(other:send_text('{"type":"say","text":"' .. bytes
        .. '"}'))
      other:expect_close(1007)
      assert.are.same({ type = "left", room = "utf8", name = "other",
        count = 2 }, (recv(witness)))
    end
  end)

  -- "drop": the server cuts the socket off, no close frame either way.
  local function drop(ws)
    send(ws, { type = "drop" })
    local frame, err = ws:read_frame()
    assert.is_nil(frame, frame and ("opcode " .. frame.opcode))
    assert.is_truthy(err == "closed" or err:find("reset"), err)
  end

  -- The offset of a position "epoch:offset", and its epoch.
  local function offset_of(position)
    local epoch, offset = position:match("^(%x+):(%d+)$")
    return tonumber(offset), epoch
  end

  it("a dropped page joins with its last position and gets exactly what"
    .. " it missed, then live messages", function()
    local alice = connect()
    send(alice, { type = "join", name = "alice", room = "recover" })
    local _, _, alice_at, fresh = recv(alice)
    assert.is_false(fresh)                    -- no "since": nothing to
    local start, epoch = offset_of(alice_at)  -- recover
    local bob = connect()
    send(bob, { type = "join", name = "bob", room = "recover" })
    local _, _, bob_at = recv(bob)
    -- the welcome's position is that of the joiner's own "joined"
    local event, _, at = recv(alice)
    assert.are.same({ type = "joined", room = "recover", name = "bob",
      count = 2 }, event)
    assert.are.same({ bob_at, start + 1 }, { at, (offset_of(at)) })
    send(bob, { type = "say", text = "seen" })
    local _, _, last = recv(alice)
    recv(bob)
    drop(alice)
    assert.are.same({ type = "left", room = "recover", name = "alice",
      count = 1 }, (recv(bob)))
    for i = 1, 3 do send(bob, { type = "say", text = "missed " .. i }) end
    for _ = 1, 3 do recv(bob) end
    -- back with the last position it saw: the left notice (its own) and
    -- the three messages, each at the next offset, then the welcome
    local back = connect()
    send(back, { type = "join", name = "alice", room = "recover",
      since = last })
    local missed = {
      { type = "left", room = "recover", name = "alice", count = 1 },
      { type = "message", room = "recover", name = "bob", text = "missed 1" },
      { type = "message", room = "recover", name = "bob", text = "missed 2" },
      { type = "message", room = "recover", name = "bob", text = "missed 3" },
    }
    for i, want in ipairs(missed) do
      local got, _, position = recv(back)
      assert.are.same(want, got)
      assert.are.equal(epoch .. ":" .. (start + 2 + i), position)
    end
    local welcome, _, position, recovered = recv(back)
    assert.are.same({ type = "welcome", room = "recover", name = "alice",
      count = 2, members = { "alice", "bob" } }, welcome)
    assert.is_true(recovered)
    assert.are.equal(epoch .. ":" .. (start + 7), position)
    local joined, _, joined_at = recv(bob)
    assert.are.same({ type = "joined", room = "recover", name = "alice",
      count = 2 }, joined)
    assert.are.equal(position, joined_at)
    send(bob, { type = "say", text = "live" })
    local live, _, live_at = recv(back)
    assert.are.equal("live", live.text)
    assert.are.equal(epoch .. ":" .. (start + 8), live_at)
    assert_quiet(back)
  end)

  it("recovers exactly while messages are published during the join",
    function()
    local reader = connect()
    send(reader, { type = "join", name = "reader", room = "busy" })
    recv(reader)
    local talker = join("talker", "busy")
    local _, _, last = recv(reader)                    -- talker joined
    drop(reader)
    recv(talker)                                       -- reader left
    -- 90 messages sent without waiting, the join with "since" among
    -- them on another connection: the server reads the two in any
    -- order, and the missed ones (at most 91) are all in the history
    for i = 1, 30 do send(talker, { type = "say", text = "m" .. i }) end
    local back = connect()
    for i = 31, 60 do send(talker, { type = "say", text = "m" .. i }) end
    send(back, { type = "join", name = "reader", room = "busy",
      since = last })
    for i = 61, 90 do send(talker, { type = "say", text = "m" .. i }) end
    -- every message once, in order, at consecutive offsets; the welcome
    -- somewhere among them, at the offset of the reader's "joined"
    local offset, epoch = offset_of(last)
    local texts, welcomed = {}, false
    while #texts < 90 do
      local event, _, position, recovered = recv(back)
      offset = offset + 1
      assert.are.equal(epoch .. ":" .. offset, position)
      if event.type == "welcome" then
        assert.is_false(welcomed)
        assert.is_true(recovered)
        welcomed = true
      elseif event.type == "message" then
        texts[#texts + 1] = event.text
      else
        assert.are.same({ type = "left", room = "busy", name = "reader",
          count = 1 }, event)
        assert.are.equal(0, #texts)                    -- the first missed
      end
    end
    assert.is_true(welcomed)
    for i = 1, 90 do assert.are.equal("m" .. i, texts[i]) end
    assert_quiet(back)
  end)

  it("a position the room no longer has recovers nothing, and says so",
    function()
    local alice = connect()
    send(alice, { type = "join", name = "alice", room = "stale" })
    local _, _, first = recv(alice)
    local bob = join("bob", "stale")
    recv(alice)
    drop(alice)
    recv(bob)
    -- more than the room keeps (100 messages) go by
    for i = 1, 101 do send(bob, { type = "say", text = "m" .. i }) end
    for _ = 1, 101 do recv(bob) end
    local offset, epoch = offset_of(first)
    local other_epoch = epoch == "0123456789abcdef" and "fedcba9876543210"
      or "0123456789abcdef"
    for _, since in ipairs { first, other_epoch .. ":" .. offset,
                             epoch .. ":" .. (offset + 500) } do
      local back = connect()
      send(back, { type = "join", name = "alice", room = "stale",
        since = since })
      local welcome, _, position, recovered = recv(back)
      assert.are.same({ type = "welcome", room = "stale", name = "alice",
        count = 2, members = { "alice", "bob" } }, welcome)
      assert.is_false(recovered)
      assert.are.equal(epoch, select(2, offset_of(position)))
      recv(bob)                                        -- alice joined
      back:abort()
      recv(bob)                                        -- alice left
    end
  end)

  it("refuses a malformed position, and changes nothing", function()
    local ws = connect()
    local epoch = "0123456789abcdef"
    local cases = { 5, true, "", "abc", epoch, epoch .. ":", ":1",
      epoch .. ":-1", epoch .. ": 1", epoch .. ":+1", epoch .. ":1 ",
      epoch:upper() .. ":1", epoch .. "0:1", epoch:sub(2) .. ":1",
      epoch .. ":" .. rep("9", 16), "x" .. epoch:sub(2) .. ":1" }
    for _, since in ipairs(cases) do
      send(ws, { type = "join", name = "n", room = "r", since = since })
      expect_error(ws, '"since" must be a position "epoch:offset"')
    end
    send(ws, { type = "say", text = "hello?" })
    expect_error(ws, "join a room first")
    send(ws, { type = "join", name = "n", room = "positions",
      since = epoch .. ":" .. rep("9", 15) })
    assert.are.equal("welcome", recv(ws).type)
  end)

  it("lists who is here from presence, which a lost socket leaves at once",
    function()
    local ann = join("ann", "here")
    local ben = join("ben", "here")
    recv(ann)
    local cal = join("cal", "here")
    recv(ann)
    recv(ben)
    drop(ben)
    assert.are.same({ type = "left", room = "here", name = "ben",
      count = 2 }, (recv(ann)))
    recv(cal)
    -- the name is free again at once, and the list without ben
    local _, welcome = join("ben", "here")
    assert.are.same({ "ann", "ben", "cal" }, welcome.members)
    cal:abort()
    recv(ann)                                          -- ben joined
    assert.are.same({ type = "left", room = "here", name = "cal",
      count = 2 }, (recv(ann)))
    local _, last = join("dee", "here")
    assert.are.same({ "ann", "ben", "dee" }, last.members)
  end)

  it("takes sockets from this site's pages only", function()
    local request = helper.upgrade_request { path = "/chat",
      headers = { Origin = "https://evil.test" } }
    local status, _, _, sock = helper.http(server.port, request)
    sock:close()
    assert.are.equal(403, status)
    local host = "127.0.0.1:" .. server.port
    for _, origin in ipairs { "http://" .. host, "HTTP://" .. host } do
      local ws = connect { Host = host, Origin = origin }
      send(ws, { type = "join", name = "local", room = "origin" })
      assert.are.equal("welcome", recv(ws).type)
    end
  end)
end)
