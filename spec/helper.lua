-- spec/helper.lua: shared test helpers (server process, raw HTTP, raw
-- WebSocket client).  Specs load it with `local helper = require "helper"`.

local socket = require "socket"
local mime = require "mime"
local luassert = require "luassert"
local busted = require "busted"

local byte, char, concat = string.byte, string.char, table.concat
local pack, unpack, rep = string.pack, string.unpack, string.rep
local random = math.random

local helper = { _VERSION = "0.1" }

-- MOONSOCKET_TIMESCALE stretches the helpers' waits and the timings of
-- specs that ask for it (helper.scaled), for a server under valgrind.
helper.TIMESCALE = tonumber(os.getenv("MOONSOCKET_TIMESCALE") or "") or 1
function helper.scaled(seconds)
  return seconds * helper.TIMESCALE
end
helper.DEFAULT_TIMEOUT = helper.scaled(5)
helper.LUA_PATH = "lua/?.lua;lua/?/init.lua;;"
-- RFC 6455 §1.3: the GUID appended to Sec-WebSocket-Key.
helper.GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

-- Opcodes, RFC 6455 §5.2.
helper.CONTINUATION, helper.TEXT, helper.BINARY = 0x0, 0x1, 0x2
helper.CLOSE, helper.PING, helper.PONG = 0x8, 0x9, 0xA

------------------------------------------------------------------------
-- Small utilities
------------------------------------------------------------------------

local function sleep(seconds)
  socket.sleep(seconds)
end
helper.sleep = sleep

-- Calls fn every `interval` seconds until it returns a truthy value.
-- Returns that value, or nil, "timeout".
function helper.wait_until(fn, timeout, interval)
  local deadline = socket.gettime() + (timeout or helper.DEFAULT_TIMEOUT)
  repeat
    local value = fn()
    if value then return value end
    sleep(interval or 0.01)
  until socket.gettime() > deadline
  return nil, "timeout"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end
helper.read_file = read_file

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helper.shell_quote = shell_quote

function helper.base64(s)
  return (mime.b64(s))
end

-- SHA-1 (FIPS 180-4), enough for Sec-WebSocket-Accept.
function helper.sha1(message)
  local h0, h1, h2, h3, h4 =
    0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
  local bits = #message * 8
  message = message .. "\x80" .. rep("\0", (55 - #message) % 64)
    .. pack(">I8", bits)
  local w = {}
  for chunk = 1, #message, 64 do
    for i = 0, 15 do
      w[i] = unpack(">I4", message, chunk + i * 4)
    end
    for i = 16, 79 do
      local v = w[i - 3] ~ w[i - 8] ~ w[i - 14] ~ w[i - 16]
      w[i] = ((v << 1) | (v >> 31)) & 0xFFFFFFFF
    end
    local a, b, c, d, e = h0, h1, h2, h3, h4
    for i = 0, 79 do
      local f, k
      if i < 20 then
        f, k = (b & c) | (~b & d), 0x5A827999
      elseif i < 40 then
        f, k = b ~ c ~ d, 0x6ED9EBA1
      elseif i < 60 then
        f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
      else
        f, k = b ~ c ~ d, 0xCA62C1D6
      end
      local t = (((a << 5) | (a >> 27)) + f + e + k + w[i]) & 0xFFFFFFFF
      e, d, c, b, a = d, c, ((b << 30) | (b >> 2)) & 0xFFFFFFFF, a, t
    end
    h0 = (h0 + a) & 0xFFFFFFFF
    h1 = (h1 + b) & 0xFFFFFFFF
    h2 = (h2 + c) & 0xFFFFFFFF
    h3 = (h3 + d) & 0xFFFFFFFF
    h4 = (h4 + e) & 0xFFFFFFFF
  end
  return pack(">I4I4I4I4I4", h0, h1, h2, h3, h4)
end

-- RFC 6455 §4.2.2: the accept value the server must send for `key`.
function helper.accept_for(key)
  return helper.base64(helper.sha1(key .. helper.GUID))
end

function helper.random_bytes(n)
  local out = {}
  for i = 1, n do out[i] = char(random(0, 255)) end
  return concat(out)
end

-- A valid UTF-8 string of exactly n bytes, mixing 1- to 4-byte sequences.
function helper.text_of_size(n)
  local pattern = "h\xC3\xA9llo w\xC3\xB6rld \xE2\x82\xAC \xF0\x9D\x84\x9E; "
  return rep(pattern, n // #pattern) .. rep("a", n % #pattern)
end

-- A binary string of exactly n bytes that contains every byte value.
function helper.binary_of_size(n)
  local all = {}
  for i = 0, 255 do all[#all + 1] = char(255 - i, i) end
  local pattern = concat(all) .. "\0\0\xFF\xFF"
  return rep(pattern, n // #pattern) .. pattern:sub(1, n % #pattern)
end

-- Asserts two (possibly huge) payloads are equal without printing them.
function helper.assert_payload(expected, actual, what)
  what = what or "payload"
  luassert(type(actual) == "string",
    what .. ": expected a string, got " .. tostring(actual))
  if expected == actual then return end
  local first = 1
  while byte(expected, first) == byte(actual, first) do first = first + 1 end
  luassert(false, string.format(
    "%s: expected %d bytes, got %d; first difference at byte %d",
    what, #expected, #actual, first))
end

------------------------------------------------------------------------
-- Server process
------------------------------------------------------------------------

local Server = {}
Server.__index = Server

-- Starts argv (a list of words, run through `env`) in the background with
-- the environment `env` (a table).  Waits up to 5 s for the line
-- "listening on HOST:<port>" in its output.  opts.stdin: a file (or a
-- FIFO: it is opened read-write, so without waiting for a writer) to be
-- its stdin instead of /dev/null.  opts.ready: the pattern to wait for
-- instead, its capture the port (for programs other than moonsocket).
-- opts.nofile: its limit on open files (4096).
function helper.spawn(argv, env, opts)
  local base = os.tmpname()
  local self = setmetatable({
    logfile = base, pidfile = base .. ".pid", statusfile = base .. ".rc",
  }, Server)
  local words = { "exec env" }
  local names = {}
  for name in pairs(env or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    words[#words + 1] = shell_quote(name .. "=" .. tostring(env[name]))
  end
  for _, word in ipairs(argv) do words[#words + 1] = shell_quote(word) end
  -- The inner subshell raises the fd limit and becomes the server (exec),
  -- so $! is the server's pid; the outer one waits to record its status.
  local stdin = opts and opts.stdin
  local command = string.format(
    "( ( ulimit -n %d 2>/dev/null; %s ) >%s 2>&1 %s & "
    .. "echo $! >%s; wait $!; echo $? >%s.tmp; mv %s.tmp %s ) "
    .. ">/dev/null 2>&1 </dev/null &", opts and opts.nofile or 4096,
    concat(words, " "), shell_quote(self.logfile),
    stdin and "<>" .. shell_quote(stdin) or "</dev/null",
    shell_quote(self.pidfile), shell_quote(self.statusfile),
    shell_quote(self.statusfile), shell_quote(self.statusfile))
  luassert(os.execute(command), "failed to run: " .. command)
  self.pid = luassert(helper.wait_until(function()
    return tonumber(read_file(self.pidfile) or "")
  end), "server did not start: " .. command)
  -- the whole line: an IPv6 "[::1]:" written before its port must not
  -- pass for port 1
  local ready = opts and opts.ready or "listening on %S*:(%d+)\n"
  local port = helper.wait_until(function()
    local port = (read_file(self.logfile) or ""):match(ready)
    return tonumber(port) or (self:exited() and "exited")
  end)
  if type(port) ~= "number" then
    local log = self:log()
    self:stop()
    error("server did not report its port: " .. command .. "\n" .. log, 2)
  end
  self.port = port
  return self
end

-- Starts the server under test on `app` (e.g. "spec/apps/echo.lua") with
-- the extra environment `env`.  MOONSOCKET_WRAPPER, when set, is a
-- command line (words split at spaces) that runs the server, e.g.
-- "valgrind --log-file=vg.%p.log".  opts go to helper.spawn.
function helper.start_server(app, env, opts)
  local bin = os.getenv("MOONSOCKET_BIN") or "build/moonsocket"
  local full_env = { LUA_PATH = helper.LUA_PATH, PORT = 0 }
  for name, value in pairs(env or {}) do full_env[name] = value end
  local argv = {}
  for word in (os.getenv("MOONSOCKET_WRAPPER") or ""):gmatch("%S+") do
    argv[#argv + 1] = word
  end
  argv[#argv + 1] = bin
  argv[#argv + 1] = app
  return helper.spawn(argv, full_env, opts)
end

-- A TCP port on 127.0.0.1 that was free a moment ago.
function helper.free_port()
  local sock = luassert(socket.bind("127.0.0.1", 0))
  local _, port = sock:getsockname()
  sock:close()
  return tonumber(port)
end

-- The exit status once the process has exited, or nil.
function Server:exited()
  if self.status then return self.status end
  local status = tonumber(read_file(self.statusfile) or "")
  if status then self.status = status end
  return status
end

function Server:log()
  return self.log_text or read_file(self.logfile) or ""
end

-- Sends a signal ("TERM" by default) without waiting for the exit.
function Server:kill(signal)
  signal = signal or "TERM"
  if signal == "TERM" or signal == "INT" then self.shutting_down = true end
  os.execute(string.format("kill -%s %d 2>/dev/null", signal, self.pid))
end

-- SIGTERM, wait up to `timeout` (5 s, scaled) for exit, then SIGKILL.
-- A server already told to shut down is not signalled again: a second
-- signal would stop its graceful shutdown, or, once its loop has ended,
-- kill it with the default action (143).  Returns the exit status (128
-- + signal number when killed by a signal).
function Server:stop(timeout)
  if not self.log_text then
    if not self:exited() then
      -- a socket a test dropped still open would hold a graceful
      -- shutdown for close_timeout (the server drains it): collected, it
      -- is closed
      collectgarbage()
      if not self.shutting_down then self:kill("TERM") end
      if not helper.wait_until(function() return self:exited() end,
          helper.scaled(timeout or 5)) then
        self.killed = true
        self:kill("KILL")
        helper.wait_until(function() return self:exited() end,
          helper.scaled(5))
      end
    end
    self.log_text = read_file(self.logfile) or ""
    os.remove(self.logfile)
    os.remove(self.pidfile)
    os.remove(self.statusfile)
  end
  return self.status
end

local SANITIZER_MARKS = {
  "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
  "WARNING: ThreadSanitizer", "runtime error:",
}

-- Asserts the server's output holds no sanitizer report.
function helper.assert_clean_log(server)
  local log = server:log()
  for _, mark in ipairs(SANITIZER_MARKS) do
    luassert(not log:find(mark, 1, true),
      "server log contains '" .. mark .. "':\n" .. log)
  end
end

-- For teardown: stops the server and asserts it exited 0 with a clean log.
function helper.stop_and_check(server)
  luassert(server and server.pid, "no server to stop (did setup fail?)")
  local status = server:stop()
  luassert.are.equal(0, status, "server exit status; log:\n" .. server:log())
  helper.assert_clean_log(server)
end

-- The server of the enclosing describe block: started on `app` by its
-- setup (helper.start_server(app, env, opts)), stopped and checked by
-- its teardown (helper.stop_and_check).  Returns the server object,
-- empty until setup has run.
function helper.with_server(app, env, opts)
  local server = setmetatable({}, Server)
  busted.setup(function()
    for name, value in pairs(helper.start_server(app, env, opts)) do
      server[name] = value
    end
  end)
  busted.teardown(function()
    helper.stop_and_check(server)
  end)
  return server
end

-- The directory (with its trailing slash) of examples/tls's self-signed
-- certificate for localhost and 127.0.0.1, made as that example makes
-- it when a fresh clone has none yet.
function helper.example_certs()
  local dir = "examples/tls/certs/"
  if not io.open(dir .. "cert.pem") then
    luassert(os.execute(("mkdir -p %s && openssl req -x509 -newkey "
      .. "rsa:2048 -nodes -days 30 -subj /CN=localhost -addext "
      .. "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %skey.pem "
      .. "-out %scert.pem 2>/dev/null"):format(dir, dir, dir)),
      "openssl req failed")
  end
  return dir
end

-- A temporary directory holding a certificate for name and its key
-- (spec/peers/make_cert.py): the directory, the certificate, the key.
function helper.temp_cert(name)
  local dir = os.tmpname()
  os.remove(dir)
  luassert(os.execute(("mkdir -p %q"):format(dir)))
  local cert, key = dir .. "/cert.pem", dir .. "/cert.key"
  local out, status = helper.run_peer("make_cert.py", { name, cert, key })
  luassert(status == 0, out)
  return dir, cert, key
end

-- Runs a peer script (spec/peers/NAME) with /usr/bin/python3 and the
-- given arguments to completion.  Returns its output (stdout and stderr)
-- and exit status.  A sanitizer preloaded for the busted process is not
-- passed on: the peer is not under test.
function helper.run_peer(name, args)
  local words = { "env", "-u", "LD_PRELOAD", "/usr/bin/python3",
    "spec/peers/" .. name }
  for _, arg in ipairs(args or {}) do words[#words + 1] = tostring(arg) end
  for i, word in ipairs(words) do words[i] = shell_quote(word) end
  local pipe = assert(io.popen(concat(words, " ") .. " 2>&1", "r"))
  local output = pipe:read("a")
  local _, how, status = pipe:close()
  if how == "signal" then status = 128 + status end
  return output, status
end

-- Runs an app (e.g. "spec/apps/client.lua") under the moonsocket binary
-- to completion with the given arguments and extra environment.
-- Returns its output (stdout and stderr) and exit status.
function helper.run_app(app, args, env)
  local words = { "env" }
  local full_env = { LUA_PATH = helper.LUA_PATH }
  for name, value in pairs(env or {}) do full_env[name] = value end
  for name, value in pairs(full_env) do
    words[#words + 1] = name .. "=" .. tostring(value)
  end
  for word in (os.getenv("MOONSOCKET_WRAPPER") or ""):gmatch("%S+") do
    words[#words + 1] = word
  end
  words[#words + 1] = os.getenv("MOONSOCKET_BIN") or "build/moonsocket"
  words[#words + 1] = app
  for _, arg in ipairs(args or {}) do words[#words + 1] = tostring(arg) end
  for i, word in ipairs(words) do words[i] = shell_quote(word) end
  local pipe = assert(io.popen("timeout 60 " .. concat(words, " ")
                               .. " 2>&1", "r"))
  local output = pipe:read("a")
  local _, how, status = pipe:close()
  if how == "signal" then status = 128 + status end
  return output, status
end

-- Runs code as a script under the runner (helper.run_app) with the extra
-- environment env; returns its output and exit status.
function helper.run_script(code, env)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local output, status = helper.run_app(path, nil, env)
  os.remove(path)
  os.remove(path:sub(1, -5))
  return output, status
end

-- The lines of output that start with "> ", without it.
function helper.said(output)
  local lines = {}
  for line in output:gmatch("[^\n]+") do
    local text = line:match("^> (.*)")
    if text then lines[#lines + 1] = text end
  end
  return lines
end

-- redis-server on 127.0.0.1:port, with nothing on disk; ... are more
-- options ("--requirepass", "pw").  It inherits the spec's open
-- sockets, whose close would then not reach the servers: start it while
-- no client is connected.
function helper.start_redis(port, ...)
  return helper.spawn({ "redis-server", "--port", tostring(port),
    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", ... }, {},
    { ready = "port=(%d+)%..-Ready to accept connections" })
end

-- Redis's protocol (RESP), enough to publish and subscribe raw bytes and
-- to look at keys: a command's bytes, and one reply read from sock.
function helper.resp_command(...)
  local parts = { "*" .. select("#", ...) .. "\r\n" }
  for i = 1, select("#", ...) do
    local arg = tostring((select(i, ...)))
    parts[#parts + 1] = "$" .. #arg .. "\r\n" .. arg .. "\r\n"
  end
  return table.concat(parts)
end

function helper.resp_reply(sock)
  local line = assert(sock:receive("*l"))
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "$" then
    local n = tonumber(rest)
    if n < 0 then return nil end
    return assert(sock:receive(n + 2)):sub(1, n)
  elseif kind == "*" then
    local list = {}
    for i = 1, tonumber(rest) do list[i] = helper.resp_reply(sock) end
    return list
  elseif kind == ":" then
    return tonumber(rest)
  end
  assert(kind == "+", line)
  return rest
end

-- One command to the Redis at port, on a connection of its own: the
-- reply.
function helper.redis_call(port, ...)
  local sock = assert(helper.connect(port))
  assert(sock:send(helper.resp_command(...)))
  local reply = helper.resp_reply(sock)
  sock:close()
  return reply
end

------------------------------------------------------------------------
-- Raw TCP and HTTP
------------------------------------------------------------------------

function helper.connect(port, timeout)
  local sock = socket.tcp()
  sock:settimeout(timeout or helper.DEFAULT_TIMEOUT)
  local ok, err = sock:connect("127.0.0.1", port)
  if not ok then
    sock:close()
    return nil, "failed to connect to port " .. tostring(port) .. ": " .. err
  end
  sock:setoption("tcp-nodelay", true)
  return sock
end

-- Sends `data` one byte per send(), sleeping `delay` seconds in between.
function helper.send_bytewise(sock, data, delay)
  for i = 1, #data do
    local ok, err = sock:send(data, i, i)
    if not ok then return nil, err end
    sleep(delay or 0.001)
  end
  return true
end

-- Reads one HTTP response.  Returns status (number), headers (lowercased
-- names; repeated fields joined with ", "), body; or nil, err.  A 101 has no
-- body; without Content-Length the body runs to the end of the stream.
function helper.read_response(sock)
  local line, err = sock:receive("*l")
  if not line then return nil, "failed to read status line: " .. err end
  local status = line:match("^HTTP/1%.1 (%d%d%d)")
  if not status then return nil, "bad status line: " .. line end
  local headers = {}
  while true do
    line, err = sock:receive("*l")
    if not line then return nil, "failed to read header: " .. err end
    if line == "" then break end
    local name, value = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
    if not name then return nil, "bad header line: " .. line end
    name = name:lower()
    headers[name] = headers[name] and headers[name] .. ", " .. value
      or value
  end
  status = tonumber(status)
  local body = ""
  local length = tonumber(headers["content-length"] or "")
  if length and length > 0 then      -- receive(0) waits for the timeout
    local data, partial
    data, err, partial = sock:receive(length)
    body = data or partial
  elseif not length and status ~= 101 then
    local data, partial
    data, err, partial = sock:receive("*a")
    body = data or partial
  end
  return status, headers, body
end

-- Reads one HTTP response as the exact bytes received: the head, then
-- Content-Length bytes of body (none for a 101, 204 or 304).  Returns
-- the text, or nil, err and what was read.
function helper.read_raw_response(sock)
  local lines = {}
  local length
  repeat
    local line, err = sock:receive("*l")
    if not line then
      return nil, "failed to read the head: " .. err, concat(lines, "\r\n")
    end
    lines[#lines + 1] = line
    length = tonumber(line:match("^[Cc]ontent%-[Ll]ength: *(%d+)$"))
      or length
  until line == ""
  local text = concat(lines, "\r\n") .. "\r\n"
  local status = lines[1]:match("^HTTP/1%.1 (%d%d%d)")
  if length and length > 0 and status ~= "101" then
    local body, err, partial = sock:receive(length)
    if not body then
      return nil, "failed to read the body: " .. err, text .. partial
    end
    text = text .. body
  end
  return text
end

-- Sends the raw request and reads the response.  Returns status, headers,
-- body and the socket (the caller closes it).  opts.bytewise sends one byte
-- at a time.  Send errors are ignored: a server may answer before it has
-- read the whole request.
function helper.http(port, request, opts)
  opts = opts or {}
  local sock = luassert(helper.connect(port))
  if opts.bytewise then
    helper.send_bytewise(sock, request, opts.delay)
  else
    sock:send(request)
  end
  local status, headers, body = helper.read_response(sock)
  if not status then
    sock:close()
    return nil, headers
  end
  return status, headers, body, sock
end

-- True when the peer has closed the stream within `timeout` seconds (EOF,
-- or a reset when reset_ok), else false and why ("timeout", "data").
function helper.socket_closed(sock, timeout, reset_ok)
  sock:settimeout(timeout or helper.DEFAULT_TIMEOUT)
  local data, err = sock:receive(1)
  sock:settimeout(helper.DEFAULT_TIMEOUT)
  if data then return false, "data" end
  if err == "closed" then return true end
  if reset_ok and err == "connection reset by peer" then return true end
  return false, err
end

local DEFAULT_FIELDS = {
  { "Host", "127.0.0.1" },
  { "Upgrade", "websocket" },
  { "Connection", "Upgrade" },
  { "Sec-WebSocket-Key", false },    -- filled with a fresh key
  { "Sec-WebSocket-Version", "13" },
}

-- Builds an upgrade request.  opts: path ("/ws"), method ("GET"),
-- version ("HTTP/1.1"), key (random), headers (name -> value, or false to
-- drop a default field; names match case-insensitively), extra (list of
-- raw header lines appended as they are).  Returns request, key.
function helper.upgrade_request(opts)
  opts = opts or {}
  local key = opts.key or helper.base64(helper.random_bytes(16))
  local overrides = {}
  for name, value in pairs(opts.headers or {}) do
    overrides[name:lower()] = { name = name, value = value }
  end
  local lines = {
    string.format("%s %s %s", opts.method or "GET", opts.path or "/ws",
      opts.version or "HTTP/1.1"),
  }
  local function add(name, value)
    if value then lines[#lines + 1] = name .. ": " .. value end
  end
  for _, field in ipairs(DEFAULT_FIELDS) do
    local name, value = field[1], field[2] or key
    local override = overrides[name:lower()]
    if override then
      overrides[name:lower()] = nil
      add(override.name, override.value)
    else
      add(name, value)
    end
  end
  local rest = {}
  for _, override in pairs(overrides) do rest[#rest + 1] = override end
  table.sort(rest, function(a, b) return a.name < b.name end)
  for _, override in ipairs(rest) do add(override.name, override.value) end
  for _, line in ipairs(opts.extra or {}) do lines[#lines + 1] = line end
  return concat(lines, "\r\n") .. "\r\n\r\n", key
end

------------------------------------------------------------------------
-- WebSocket frames (RFC 6455 §5.2)
------------------------------------------------------------------------

local MASK_BLOCK = "<" .. rep("i8", 8)     -- 64 bytes per pack/unpack

-- XORs payload with the 4-byte key (RFC 6455 §5.3).  Eight 64-bit words
-- per call keep a 16 MiB payload well under a second.
function helper.mask(payload, key)
  local k4 = unpack("<I4", key)
  local k = k4 | (k4 << 32)
  local n = #payload
  local out, count = {}, 0
  local i = 1
  while i + 63 <= n do
    local a, b, c, d, e, f, g, h = unpack(MASK_BLOCK, payload, i)
    count = count + 1
    out[count] = pack(MASK_BLOCK, a ~ k, b ~ k, c ~ k, d ~ k,
      e ~ k, f ~ k, g ~ k, h ~ k)
    i = i + 64
  end
  local tail = {}
  for j = i, n do
    tail[#tail + 1] = char(byte(payload, j) ~ byte(key, (j - 1) % 4 + 1))
  end
  out[count + 1] = concat(tail)
  return concat(out)
end

-- Builds one frame.  opts: fin (true), rsv (0..7), opcode (1),
-- payload (""), mask (true), key (random 4 bytes), len_override (the
-- length written in the header instead of #payload).
function helper.build_frame(opts)
  local payload = opts.payload or ""
  local len = opts.len_override or #payload
  local b1 = (opts.fin == false and 0 or 0x80) | ((opts.rsv or 0) & 7) << 4
    | ((opts.opcode or helper.TEXT) & 0xF)
  local mask_bit = opts.mask == false and 0 or 0x80
  local header
  if len < 126 then
    header = pack("BB", b1, mask_bit | len)
  elseif len < 65536 then
    header = pack(">BBI2", b1, mask_bit | 126, len)
  else
    header = pack(">BBI8", b1, mask_bit | 127, len)
  end
  if mask_bit == 0 then return header .. payload end
  local key = opts.key or pack("<I4", random(0, 0xFFFFFFFF))
  return header .. key .. helper.mask(payload, key)
end

-- The payload of a close frame.
function helper.close_payload(code, reason)
  if not code then return "" end
  return pack(">I2", code) .. (reason or "")
end

------------------------------------------------------------------------
-- Raw WebSocket client
------------------------------------------------------------------------

local Client = {}
Client.__index = Client
helper.Client = Client

-- Opens a connection and performs the opening handshake, checking the
-- 101 and Sec-WebSocket-Accept.  `headers` is passed to upgrade_request.
-- Returns a client, or nil, err.
function helper.ws_connect(port, path, headers)
  local request, key = helper.upgrade_request{ path = path or "/ws",
    headers = headers }
  local sock, err = helper.connect(port)
  if not sock then return nil, err end
  local ok
  ok, err = sock:send(request)
  if not ok then
    sock:close()
    return nil, "failed to send handshake: " .. err
  end
  local status, response = helper.read_response(sock)
  local problem
  if not status then
    problem = response
  elseif status ~= 101 then
    problem = "expected status 101, got " .. status
  elseif (response.upgrade or ""):lower() ~= "websocket" then
    problem = "bad Upgrade: " .. tostring(response.upgrade)
  elseif (response.connection or ""):lower() ~= "upgrade" then
    problem = "bad Connection: " .. tostring(response.connection)
  elseif response["sec-websocket-accept"] ~= helper.accept_for(key) then
    problem = "bad Sec-WebSocket-Accept: "
      .. tostring(response["sec-websocket-accept"])
  end
  if problem then
    sock:close()
    return nil, "handshake failed: " .. problem
  end
  return helper.wrap(sock, response)
end

-- Wraps a connected socket whose handshake is done into a client.
function helper.wrap(sock, response_headers)
  return setmetatable({ sock = sock, pending = "", skipped = {},
    response_headers = response_headers }, Client)
end

function Client:settimeout(seconds)
  self.sock:settimeout(seconds)
end

-- Reads exactly n bytes.  On failure the bytes read so far stay buffered.
function Client:recv(n)
  local have = self.pending
  if #have >= n then
    self.pending = have:sub(n + 1)
    return have:sub(1, n)
  end
  local data, err, partial = self.sock:receive(n - #have)
  if data then
    self.pending = ""
    return have .. data
  end
  self.pending = have .. (partial or "")
  return nil, err
end

-- Reads one frame.  Returns { fin, rsv, opcode, masked, payload } or
-- nil, err ("closed", "timeout", ...).  A frame cut short by a timeout is
-- kept, so a later call starts again at its first byte.
function Client:read_frame(timeout)
  if timeout then self.sock:settimeout(timeout) end
  local consumed = {}
  local function take(n)
    local data, err = self:recv(n)
    if not data then
      self.pending = concat(consumed) .. self.pending
      return nil, err
    end
    consumed[#consumed + 1] = data
    return data
  end
  local frame, err = (function()
    local head, err = take(2)
    if not head then return nil, err end
    local b1, b2 = byte(head, 1, 2)
    local len = b2 & 0x7F
    if len == 126 then
      local ext, err2 = take(2)
      if not ext then return nil, err2 end
      len = unpack(">I2", ext)
    elseif len == 127 then
      local ext, err2 = take(8)
      if not ext then return nil, err2 end
      len = unpack(">I8", ext)
    end
    local key
    if b2 & 0x80 ~= 0 then
      key, err = take(4)
      if not key then return nil, err end
    end
    local payload = ""
    if len > 0 then
      payload, err = take(len)
      if not payload then return nil, err end
    end
    if key then payload = helper.mask(payload, key) end
    return { fin = b1 & 0x80 ~= 0, rsv = (b1 >> 4) & 7, opcode = b1 & 0xF,
      masked = key ~= nil, payload = payload }
  end)()
  if timeout then self.sock:settimeout(helper.DEFAULT_TIMEOUT) end
  return frame, err
end

function Client:send_raw(bytes)
  local ok, err = self.sock:send(bytes)
  if not ok then return nil, err end
  return true
end

-- Sends one frame built by helper.build_frame(opts).
function Client:send_frame(opts)
  return self:send_raw(helper.build_frame(opts))
end

function Client:send_text(s)
  return self:send_frame{ opcode = helper.TEXT, payload = s }
end

function Client:send_binary(s)
  return self:send_frame{ opcode = helper.BINARY, payload = s }
end

function Client:ping(payload)
  return self:send_frame{ opcode = helper.PING, payload = payload or "" }
end

-- Reads the next message: a whole data message (fragments reassembled) or
-- a single control frame, whichever comes first; control frames are not
-- skipped.  Returns opcode, payload or nil, err.  A control frame that
-- arrives inside a fragmented message is returned and the message resumes
-- on the next call.
function Client:recv_message(timeout)
  while true do
    local frame, err = self:read_frame(timeout)
    if not frame then return nil, err end
    if frame.masked then return nil, "server sent a masked frame" end
    if frame.rsv ~= 0 then return nil, "server set RSV bits" end
    if frame.opcode >= 8 then return frame.opcode, frame.payload end
    if frame.opcode == helper.CONTINUATION then
      if not self.fragments then
        return nil, "continuation frame outside a message"
      end
      self.fragments[#self.fragments + 1] = frame.payload
    else
      if self.fragments then
        return nil, "data frame inside a fragmented message"
      end
      self.fragments, self.message_opcode = { frame.payload }, frame.opcode
    end
    if frame.fin then
      local payload, opcode = concat(self.fragments), self.message_opcode
      self.fragments, self.message_opcode = nil, nil
      return opcode, payload
    end
  end
end

-- Sends a close frame (no payload when code is nil).
function Client:close(code, reason)
  self.close_sent = true
  return self:send_frame{ opcode = helper.CLOSE,
    payload = helper.close_payload(code, reason) }
end

-- Reads until a close frame arrives (other frames are kept in
-- self.skipped), asserts its code when `expected` is given, answers it
-- unless this side sent a close first, then asserts the server closes TCP.
-- Returns code (nil for an empty payload) and reason.
function Client:expect_close(expected)
  local frame, err
  repeat
    frame, err = self:read_frame()
    luassert(frame, "expected a close frame, got: " .. tostring(err))
    if frame.opcode ~= helper.CLOSE then
      self.skipped[#self.skipped + 1] = frame
    end
  until frame.opcode == helper.CLOSE
  luassert(not frame.masked, "server sent a masked close frame")
  local payload, code, reason = frame.payload, nil, nil
  luassert(#payload ~= 1, "close frame with a 1-byte payload")
  if #payload >= 2 then
    code, reason = unpack(">I2", payload), payload:sub(3)
  end
  if expected ~= nil then
    luassert.are.equal(expected, code, "close code")
  end
  if not self.close_sent then
    -- RFC 6455 §5.5.1: answer with the same code.  The server may already
    -- be gone after failing the connection, so errors are ignored.
    self.close_sent = true
    self:send_frame{ opcode = helper.CLOSE,
      payload = helper.close_payload(code) }
  end
  local data
  data, err = self:recv(1)
  luassert(data == nil and err == "closed", string.format(
    "expected the server to close TCP after the close frame, got %s",
    data and string.format("data %q", data) or tostring(err)))
  -- the server waits for this end's FIN (up to close_timeout, also at
  -- shutdown): a socket the test still holds must not keep it waiting
  self.sock:close()
  return code, reason
end

-- True when the server has closed TCP (within `timeout` seconds, default
-- 0); false when it is open or data is waiting.
function Client:is_closed(timeout)
  if #self.pending > 0 then return false end
  self.sock:settimeout(timeout or 0)
  local data, err = self:recv(1)
  self.sock:settimeout(helper.DEFAULT_TIMEOUT)
  if data then
    self.pending = data .. self.pending
    return false
  end
  return err == "closed"
end

-- Closes the socket without any handshake; safe to call twice.
function Client:abort()
  self.sock:close()
end

-- Sends command as a text message and returns the text that answers it
-- (spec/apps/pubsub.lua's protocol).
function helper.ask(ws, command)
  luassert.is_true(ws:send_text(command))
  local kind, reply = ws:recv_message()
  luassert.are.equal(helper.TEXT, kind, reply)
  return reply
end

-- Closes each client with 1000, reads the server's close and drops the
-- socket.
function helper.close_all(list)
  for _, ws in ipairs(list) do
    ws:close(1000)
    ws:expect_close()
    ws:abort()
  end
end

-- A history position "epoch:offset" (spec/apps/history.lua's protocol):
-- epoch, offset as a number.
function helper.split_pos(p)
  local epoch, offset = p:match("^(%x+):(%d+)$")
  return epoch, tonumber(offset)
end

-- Reads a message with a history envelope "epoch:offset data" and
-- asserts it has one.  Returns epoch, offset (a number), data.
function helper.recv_positioned(ws, timeout)
  local kind, msg = ws:recv_message(timeout)
  luassert.are.equal(helper.TEXT, kind, msg)
  local epoch, offset, data = msg:match("^(%x+):(%d+) (.*)$")
  luassert.is_truthy(epoch, "no envelope: " .. tostring(msg))
  return epoch, tonumber(offset), data
end

-- bench/loadgen (`make -C bench loadgen`), run by the specs that load a
-- server with many C connections.
helper.LOADGEN = "bench/loadgen"

-- Runs `loadgen ARGS...` against server (its port and pid), within
-- 120 s (scaled).  Returns its key=value line as a table (numbers as
-- numbers), its stderr and its exit status.  A sanitizer preloaded for
-- busted is not passed on: loadgen is not under test.
function helper.loadgen(server, args)
  luassert(io.open(helper.LOADGEN), helper.LOADGEN
    .. " is not built: make -C bench loadgen"):close()
  local words = { "env", "-u", "LD_PRELOAD", helper.LOADGEN, "-P",
    server.port, "-p", server.pid, "-q", "-t", helper.scaled(120) }
  for _, arg in ipairs(args) do words[#words + 1] = arg end
  for i, word in ipairs(words) do words[i] = shell_quote(word) end
  local errfile = os.tmpname()
  local pipe = luassert(io.popen(table.concat(words, " ") .. " 2>"
    .. shell_quote(errfile), "r"))
  local out = pipe:read("a")
  local _, _, status = pipe:close()
  local err = read_file(errfile) or ""
  os.remove(errfile)
  local kv = {}
  for k, v in (out:match("test=[^\n]*") or ""):gmatch("(%S+)=(%S+)") do
    kv[k] = tonumber(v) or v
  end
  return kv, err, status
end

-- Asserts that a sample's server serves its page, script and style
-- (index.html, app.js, style.css) with their content types.
function helper.assert_sample_files(port)
  for path, kind in pairs { ["/"] = "text/html; charset=utf-8",
      ["/app.js"] = "text/javascript; charset=utf-8",
      ["/style.css"] = "text/css; charset=utf-8" } do
    local status, headers, body, sock = helper.http(port,
      "GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sock:close()
    luassert.are.equal(200, status, path)
    luassert.are.equal(kind, headers["content-type"], path)
    luassert.is_true(#body > 0, path)
  end
end

-- The /events log of a test app (spec/apps/probe.lua, policy.lua).
function helper.events(port)
  local status, _, body, sock = helper.http(port,
    "GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  if sock then sock:close() end
  luassert.are.equal(200, status)
  return body
end

-- Waits up to 5 s (scaled) for an event matching pattern (plain text if
-- plain), after the mark since (helper.events_mark) when it is given.
function helper.wait_event(port, pattern, plain, since)
  local seen
  local ok = helper.wait_until(function()
    seen = helper.events(port)
    return seen:find(pattern, since and since + 1 or 1, plain) ~= nil
  end, helper.scaled(5))
  luassert(ok, ("no event %q in:\n%s"):format(pattern, seen))
end

-- Where the /events log ends now: wait_event(port, pattern, plain,
-- helper.events_mark(port)) sees only events after it, not those an
-- earlier test on the same server left.
function helper.events_mark(port)
  return #helper.events(port)
end

------------------------------------------------------------------------
-- nginx, a peer some specs start
------------------------------------------------------------------------

local NGINX = "/usr/sbin/nginx"
-- Why nginx cannot run here, or nil.
function helper.nginx_missing()
  if not io.open(NGINX, "r") then
    return NGINX .. " is not installed (apt-get install nginx)"
  end
  local probe = io.popen(NGINX .. " -v 2>&1")
  local out = probe:read("a")
  probe:close()
  if not out:find("nginx version", 1, true) then
    return NGINX .. " does not run here: " .. out
  end
end

-- A directory of its own for one nginx: prefix, temp paths, pid.
local function nginx_prefix()
  local dir = os.tmpname()
  os.remove(dir)
  luassert(os.execute("mkdir -p " .. shell_quote(dir .. "/tmp")))
  return dir
end

-- Starts nginx with a block of configuration that goes in http {}.
function helper.start_nginx(block)
  local dir = nginx_prefix()
  local conf = table.concat({
    "error_log stderr notice;",
    "pid nginx.pid;",
    "events { worker_connections 256; }",
    "http {",
    "  access_log off;",
    "  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;",
    "  fastcgi_temp_path tmp/fastcgi; uwsgi_temp_path tmp/uwsgi;",
    "  scgi_temp_path tmp/scgi;",
    block,
    "}", "" }, "\n")
  local f = luassert(io.open(dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  -- nginx logs no port: wait for its start-up notice, then connect.  A
  -- sanitizer preloaded for the tests is not passed on: nginx is no
  -- part of what is tested.
  local nginx = helper.spawn({ "-u", "LD_PRELOAD", NGINX, "-p", dir .. "/",
      "-c", dir .. "/nginx.conf", "-e", "stderr",
      "-g", "daemon off; master_process off;" }, {},
    { ready = "%[notice%] (%d+)#%d+: nginx/" })
  nginx.dir = dir
  return nginx
end

function helper.stop_nginx(nginx)
  local status = nginx:stop()
  os.execute("rm -rf " .. shell_quote(nginx.dir))
  luassert.are.equal(0, status, "nginx exit status\n" .. nginx:log())
end

return helper
