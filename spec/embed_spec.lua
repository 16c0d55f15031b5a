-- Embedding: examples/embed/host.c serves a moonsocket app on its own
-- libev loop beside its own work, and `make install` gives a host the
-- header, the libraries and moonsocket.pc to build with.
local helper = require "helper"

local quote = helper.shell_quote
local unpack = table.unpack

-- The host built beside the runner under test: build/examples/embed-host,
-- or build/asan/examples/embed-host beside build/asan/moonsocket.
local HOST = (os.getenv("MOONSOCKET_BIN") or "build/moonsocket")
  :gsub("moonsocket$", "examples/embed-host")
local VERSION = helper.read_file("csrc/moonsocket.h")
  :match('MOONSOCKET_VERSION "([^"]+)"')

local hosts = {}                 -- stopped after each test, if need be

local function start_host(args, stdin)
  assert(helper.read_file(HOST), "no " .. HOST .. ": run `make examples`")
  local host = helper.spawn({ HOST, unpack(args) },
    { LUA_PATH = helper.LUA_PATH, PORT = 0 }, { stdin = stdin })
  hosts[#hosts + 1] = host
  return host
end

local function temp_dir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir " .. quote(path)))
  return path
end

local function fifo()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkfifo " .. quote(path)))
  return path
end

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Runs a shell command to completion and returns its output (stdout and
-- stderr); fails the test with that output unless it exits 0.  The build
-- tools are not under test: a sanitizer preloaded for busted is not
-- passed on.
local function run(command)
  local pipe = assert(io.popen("env -u LD_PRELOAD sh -c "
    .. quote(command) .. " 2>&1", "r"))
  local output = pipe:read("a")
  local ok = pipe:close()
  assert(ok, command .. "\n" .. output)
  return output
end

-- Reads messages until a text message matches pattern, skipping the
-- others (ticks); returns the message.
local function next_matching(ws, pattern)
  for _ = 1, 100 do
    local opcode, payload = ws:recv_message()
    assert(opcode, "no message: " .. tostring(payload))
    if opcode == helper.TEXT and payload:match(pattern) then
      return payload
    end
  end
  error("no message matching " .. pattern)
end

describe("examples/embed host", function()
  after_each(function()
    for _, host in ipairs(hosts) do host:stop() end
    hosts = {}
  end)

  it("broadcasts its ticks and stdin lines, and SIGTERM closes with 1001",
    function()
    local input = fifo()
    local host = start_host({ "-i", "0.1" }, input)
    local a = assert(helper.ws_connect(host.port, "/ws"))
    local b = assert(helper.ws_connect(host.port, "/ws"))

    -- the timer runs on the host's loop: counters go up by one
    local first = tonumber(next_matching(a, "^tick %d+$"):match("%d+"))
    for i = 1, 3 do
      assert.are.same({ helper.TEXT, "tick " .. first + i },
                      { a:recv_message() })
    end

    -- a line of stdin reaches every socket; a partial one waits for its
    -- newline, and CRLF input works too
    local writer = assert(io.open(input, "w"))
    writer:write("hello from stdin\npart")
    writer:flush()
    for _, ws in ipairs { a, b } do
      assert.are.equal("line hello from stdin",
                       next_matching(ws, "^line "))
    end
    writer:write("ial line\r\n")
    writer:flush()
    for _, ws in ipairs { a, b } do
      assert.are.equal("line partial line", next_matching(ws, "^line "))
    end

    host:kill("TERM")
    for _, ws in ipairs { a, b } do
      ws:expect_close(1001)
      ws:abort()                 -- the server lingers until our FIN
    end
    -- the loop ends by itself once the last socket has closed
    assert.is_truthy(helper.wait_until(function() return host:exited() end,
      1), "the host did not exit after the sockets closed:\n"
      .. host:log())
    writer:close()
    os.remove(input)
    helper.stop_and_check(host)
    assert.matches("embed-host: signal 15: shutting down", host:log(), 1,
                   true)
  end)

  it("stops at once on a second signal", function()
    local host = start_host({ "-i", "0.1" })
    local ws = assert(helper.ws_connect(host.port, "/ws"))
    host:kill("TERM")
    local opcode, payload
    repeat opcode, payload = ws:recv_message() until opcode ~= helper.TEXT
    assert.are.same({ helper.CLOSE, 1001 },
                    { opcode, (string.unpack(">I2", payload)) })
    -- unanswered, the closing handshake keeps the host waiting...
    helper.sleep(0.3)
    assert.is_nil(host:exited())
    -- ...until a second signal, and lua_close cuts the socket off
    host:kill("INT")
    assert.is_truthy(helper.wait_until(function() return host:exited() end,
      1), "the host did not exit on the second signal")
    assert.is_true(ws:is_closed(1))
    ws:abort()
    helper.stop_and_check(host)
    assert.matches("embed-host: signal 2 again: stopping now", host:log(),
                   1, true)
  end)

  it("goes on with its own work after moonsocket shuts down, and reports "
     .. "errors in hooks with a traceback", function()
    local app = os.tmpname()
    write_file(app, [[
      local moonsocket = require "moonsocket"
      local app = moonsocket.app {}
      app:ws("/ws", {})
      assert(app:listen { port = 0 })
      return {
        on_tick = function(n) io.stderr:write("ticked ", n, "\n") end,
        on_line = function(line)
          if line == "shutdown" then moonsocket.shutdown(1) end
          error("cannot do '" .. line .. "'")
        end,
      }
    ]])
    local input = fifo()
    local host = start_host({ "-i", "0.05", app }, input)
    local ws = assert(helper.ws_connect(host.port, "/ws"))
    local writer = assert(io.open(input, "w"))
    writer:write("shutdown\n")
    writer:flush()
    ws:expect_close(1001)
    ws:abort()
    -- moonsocket is done, and the host's loop still runs its timer
    local function last_tick()
      local n
      for tick in host:log():gmatch("ticked (%d+)") do n = tonumber(tick) end
      return n or 0
    end
    local seen = last_tick()
    assert.is_truthy(helper.wait_until(function()
      return last_tick() >= seen + 3
    end, 2), "no ticks after the shutdown:\n" .. host:log())
    assert.is_nil(host:exited())
    local log = host:log()
    assert.matches("embed%-host: error in on_line: [^\n]*cannot do "
      .. "'shutdown'\nstack traceback:\n", log)
    -- a second shutdown (the host's own, on SIGTERM) changes nothing
    writer:close()
    os.remove(input)
    helper.stop_and_check(host)
    os.remove(app)
  end)

  it("refuses an app that returns no hooks", function()
    assert(helper.read_file(HOST), "no " .. HOST .. ": run `make examples`")
    local app = os.tmpname()
    write_file(app, "return 42\n")
    local pipe = assert(io.popen(("LUA_PATH=%s %s %s 2>&1 </dev/null")
      :format(quote(helper.LUA_PATH), quote(HOST), quote(app))))
    local output = pipe:read("a")
    local _, _, status = pipe:close()
    os.remove(app)
    assert.are.equal(1, status)
    assert.matches("embed%-host: error in app: [^\n]*must return a table "
      .. "of hooks %(on_tick, on_line%), not a number\nstack traceback:",
      output)
  end)
end)

describe("the library", function()
  it("installs with `make install DESTDIR=... PREFIX=/usr`", function()
    local dest = temp_dir()
    run("make --no-print-directory install DESTDIR=" .. quote(dest)
        .. " PREFIX=/usr")
    for _, file in ipairs { "include/moonsocket.h", "lib/libmoonsocket.a",
        "lib/libmoonsocket.so", "lib/pkgconfig/moonsocket.pc" } do
      assert.is_truthy(helper.read_file(dest .. "/usr/" .. file),
                       file .. " is not installed")
    end
    -- moonsocket.pc names the final places, not the staging tree
    local pkg_config = "PKG_CONFIG_PATH=" .. quote(dest
      .. "/usr/lib/pkgconfig") .. " pkg-config "
    assert.are.equal(VERSION .. "\n",
                     run(pkg_config .. "--modversion moonsocket"))
    assert.are.equal("/usr/lib\n",
                     run(pkg_config .. "--variable=libdir moonsocket"))
    assert.are.equal("/usr/include\n",
                     run(pkg_config .. "--variable=includedir moonsocket"))
    -- both libraries export the API of moonsocket.h and nothing else
    local api = "luaopen_moonsocket_core\nmoonsocket_preload\n"
      .. "moonsocket_run\nmoonsocket_shutdown\nmoonsocket_use_loop\n"
    assert.are.equal(api, run("nm -D --defined-only " .. quote(dest
      .. "/usr/lib/libmoonsocket.so") .. " | awk '{ print $3 }' | sort"))
    assert.are.equal(api, run("nm -g --defined-only " .. quote(dest
      .. "/usr/lib/libmoonsocket.a") .. " | awk 'NF == 3 { print $3 }' "
      .. "| sort"))
    run("rm -rf " .. quote(dest))
  end)

  it("builds a host with pkg-config, statically and shared", function()
    local prefix = temp_dir()
    run("make --no-print-directory install PREFIX=" .. quote(prefix))
    -- a host on its own loop: the loop ends once the server is done
    write_file(prefix .. "/host.c", [[
#include <stdio.h>

#include <lauxlib.h>
#include <lualib.h>
#include <moonsocket.h>

int main(void) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  moonsocket_use_loop(L, loop);
  moonsocket_preload(L);
  if (luaL_dostring(L, "local core = require 'moonsocket.core'\n"
                    "assert(core.listen { handler = function() end })\n"
                    "core.shutdown(1)\n"
                    "return core._VERSION") != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  printf("%s\n", lua_tostring(L, -1));
  ev_run(loop, 0);
  lua_close(L);
  ev_loop_destroy(loop);
  return 0;
}
]])
    local pkg_config = "PKG_CONFIG_PATH=" .. quote(prefix
      .. "/lib/pkgconfig") .. " pkg-config "
    local cc = "cc -std=c11 -Wall -Wextra -Werror -o %s " .. quote(prefix
      .. "/host.c") .. " $(" .. pkg_config .. "%s moonsocket)"
    -- statically: the archive and every dependency moonsocket.pc names
    local static = prefix .. "/host-static"
    run(cc:format(quote(static) .. " -static", "--cflags --libs --static"))
    assert.are.equal(VERSION .. "\n", run(quote(static)))
    -- against the shared library, with Lua from the host
    local shared = prefix .. "/host-shared"
    run(cc:format(quote(shared), "--cflags --libs"))
    assert.are.equal(VERSION .. "\n", run("LD_LIBRARY_PATH="
      .. quote(prefix .. "/lib") .. " " .. quote(shared)))
    run("rm -rf " .. quote(prefix))
  end)
end)
