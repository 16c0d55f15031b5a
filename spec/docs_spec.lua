-- The reference in docs/ against the code: every runnable example runs,
-- every option and every Lua function of the C binding is documented, and
-- the nginx configuration of docs/deploying-behind-nginx.md proxies.
--
-- Runnable blocks in docs/*.md, by their fence's info string:
--   ```lua example   run in this process (require "moonsocket" works)
--   ```lua server    a whole app: written to a file and started with
--                    helper.start_server (it listens on $PORT)
--   ```lua check     the next block after a server: run in this process
--                    with `port`, `server` and `helper` in scope
--   ```nginx example, ```nginx tls-example: the configurations the
--                    nginx tests below start
-- Other blocks (```lua, ```c, ```nginx) are illustrations, not run.
local helper = require "helper"
local socket = require "socket"

local DOCS = { "README.md", "lua-api.md", "events.md", "options.md",
               "c-api.md", "pubsub.md", "deploying-behind-nginx.md" }

local read_file = helper.read_file

local function doc(name)
  return assert(read_file("docs/" .. name), "docs/" .. name .. " missing")
end

-- The fenced blocks of a Markdown text: { info, code, line }.
local function blocks(text)
  local list, open, n = {}, nil, 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if open then
      if line:match("^```%s*$") then
        open.code = table.concat(open.lines, "\n") .. "\n"
        list[#list + 1] = open
        open = nil
      else
        open.lines[#open.lines + 1] = line
      end
    else
      local info = line:match("^```(.*)$")
      if info then
        open = { info = info:match("^%s*(.-)%s*$"), line = n, lines = {} }
      end
    end
  end
  assert(not open, "unterminated code block at line "
         .. tostring(open and open.line))
  return list
end

-- Runs code in this process; names is a table of extra globals.
local function run_chunk(code, where, names)
  local env = setmetatable(names or {}, { __index = _G })
  local fn = assert(load(code, "=" .. where, "t", env))
  return fn()
end

local function temp_app(code)
  local base = os.tmpname()
  os.remove(base)
  local path = base .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  return path
end

-- Whether s holds word as a whole token (not inside a longer number).
local function has_token(s, word)
  local escaped = word:gsub("%p", "%%%0")
  return s:find("%f[%w.]" .. escaped .. "%f[^%w.]") ~= nil
    or s:find("%f[%w.]" .. escaped .. "$") ~= nil
end

------------------------------------------------------------------------
-- Runnable examples
------------------------------------------------------------------------

describe("docs examples", function()
  for _, name in ipairs(DOCS) do
    local list = blocks(doc(name))
    for i, block in ipairs(list) do
      local where = "docs/" .. name .. ":" .. block.line
      if block.info == "lua example" then
        it(where .. " runs", function()
          run_chunk(block.code, where)
        end)
      elseif block.info == "lua server" then
        local check = list[i + 1]
        if check and check.info ~= "lua check" then check = nil end
        it(where .. " serves as its check says", function()
          local path = temp_app(block.code)
          local server = helper.start_server(path, {})
          finally(function()
            helper.stop_and_check(server)
            os.remove(path)
          end)
          if check then
            run_chunk(check.code, "docs/" .. name .. ":" .. check.line,
                      { port = server.port, server = server,
                        helper = helper })
          end
        end)
      elseif block.info == "lua check" then
        it(where .. " follows a server block", function()
          assert.is_truthy(list[i - 1] and list[i - 1].info == "lua server",
                           "a check block must follow a lua server block")
        end)
      end
    end
  end
end)

------------------------------------------------------------------------
-- Coverage of the C binding and the options
------------------------------------------------------------------------

-- The text of the C initialiser `name[] = { ... };` in src.
local function c_table(src, name)
  local body = src:match(name .. "%[%]%s*=%s*(%b{})")
  assert(body, "cannot find " .. name .. "[] in the C source")
  return body
end

local function c_value(expr)
  expr = expr:gsub("(%d)ull", "%1"):gsub("(%d)u", "%1")
  return assert(load("return " .. expr))()
end

local function number_text(v)
  if math.type(v) == "integer" or v == math.floor(v) then
    return string.format("%d", v)
  end
  return string.format("%g", v)
end

-- The option table of csrc/options.c: { name, type, per_route, def, min,
-- max } in its order.
local function c_options()
  local body = c_table(read_file("csrc/options.c"), "option_specs")
  local list = {}
  for kind, name, route, def, lo, hi in body:gmatch(
      "(%u%u%u%u)%((%w[%w_]*),%s*(%d),%s*([^,]+),%s*([^,]+),%s*([^)]+)%)") do
    list[#list + 1] = { name = name, type = kind, per_route = route == "1",
      def = c_value(def), min = c_value(lo), max = c_value(hi) }
  end
  for name, kind, route in body:gmatch('{%s*"([%w_]+)",%s*OPT_(%u+),%s*(%d)')
  do
    list[#list + 1] = { name = name, type = kind, per_route = route == "1" }
  end
  return list
end

-- The cells of the table row of docs/options.md for option name.
local function option_row(text, name)
  for line in text:gmatch("[^\n]+") do
    if line:find("| `" .. name .. "` |", 1, true) == 1 then
      local cells = {}
      for cell in line:gmatch("|([^|]*)") do
        cells[#cells + 1] = cell:match("^%s*(.-)%s*$")
      end
      return cells
    end
  end
end

describe("docs/options.md", function()
  local text = doc("options.md")
  local options = c_options()

  it("finds the option table of csrc/options.c", function()
    assert.is_true(#options >= 14, "parsed " .. #options .. " options")
  end)

  for _, o in ipairs(options) do
    it("documents " .. o.name .. " with its default, range and scope",
       function()
      local cells = assert(option_row(text, o.name),
        "no row `| `" .. o.name .. "` |` in docs/options.md")
      -- | name | default | range | scope | ... |
      assert.are.equal(o.per_route and "route" or "server", cells[4],
                       o.name .. ": scope")
      if o.type == "SIZE" or o.type == "SECS" then
        assert.is_true(has_token(cells[2], number_text(o.def)),
          o.name .. ": default " .. number_text(o.def) .. " not in '"
          .. cells[2] .. "'")
        for _, bound in ipairs { o.min, o.max } do
          assert.is_true(has_token(cells[3], number_text(bound)),
            o.name .. ": bound " .. number_text(bound) .. " not in '"
            .. cells[3] .. "'")
        end
      elseif o.type == "LEVEL" then
        assert.truthy(cells[2]:find('"info"', 1, true))
      elseif o.type == "DEFLATE" then
        assert.truthy(cells[2]:find("false", 1, true))
      end
    end)
  end
end)

describe("docs/lua-api.md", function()
  local text = doc("lua-api.md")
  -- the binding, one file per Lua type: every csrc/l*.c
  local binding = {}
  local list = assert(io.popen("ls csrc/l*.c"))
  for path in list:lines() do binding[#binding + 1] = read_file(path) end
  list:close()
  binding = table.concat(binding, "\n")
  local backplane = read_file("csrc/lbackplane.c")

  local function names_in(body)
    local list = {}
    for name in body:gmatch('{%s*"([%w_]+)",') do list[#list + 1] = name end
    return list
  end

  local function expect(kind, list, form)
    assert.is_true(#list > 0, "found no " .. kind)
    local missing = {}
    for _, name in ipairs(list) do
      local wanted = form:format(name)
      if not text:find(wanted, 1, true) then
        missing[#missing + 1] = wanted
      end
    end
    assert.are.same({}, missing, kind .. " without documentation")
  end

  -- the field names an __index function in C source compares key with
  local function index_fields(source, fn)
    local body = source:match("static int " .. fn .. "(.-)\n}\n")
    local fields = {}
    for name in body:gmatch('strcmp%(key, "([%w_]+)"%)') do
      fields[#fields + 1] = name
    end
    return fields
  end

  it("documents every function of moonsocket.core", function()
    local names = {}
    for body in binding:gmatch("funcs%[%]%s*=%s*(%b{})") do
      table.move(names_in(body), 1, #names_in(body), #names + 1, names)
    end
    expect("core functions", names, "core.%s(")
  end)

  it("documents every method and field of the ws object", function()
    expect("ws methods", names_in(c_table(binding, "ws_methods")),
           "ws:%s(")
    expect("ws fields", names_in(c_table(binding, "ws_fields")), "ws.%s")
  end)

  it("documents every method of the server object", function()
    expect("server methods", names_in(c_table(binding, "server_methods")),
           "server:%s(")
  end)

  it("documents the backplane object", function()
    expect("backplane methods", names_in(c_table(backplane, "methods")),
           "bp:%s(")
    expect("backplane fields", index_fields(backplane, "bp_index"),
           "bp.%s")
  end)

  it("documents every function of moonsocket and of the app", function()
    local init = read_file("lua/moonsocket/init.lua")
    local app, module = {}, {}
    for name in init:gmatch("\nfunction app_mt:([%w_]+)") do
      app[#app + 1] = name
    end
    for name in init:gmatch("\nfunction _M%.([%w_]+)") do
      module[#module + 1] = name
    end
    for name in init:gmatch("\n_M%.([%w_]+) = core%.") do
      module[#module + 1] = name
    end
    expect("app methods", app, "app:%s(")
    expect("moonsocket functions", module, "moonsocket.%s(")
  end)
end)

describe("docs/architecture.md", function()
  it("names every file of csrc/, and no file that is not there", function()
    local text = doc("architecture.md")
    local present, missing, gone = {}, {}, {}
    local list = assert(io.popen("ls csrc"))
    for name in list:lines() do
      present[name] = true
      if not text:find("`" .. name .. "`", 1, true) then
        missing[#missing + 1] = name
      end
    end
    list:close()
    for name in text:gmatch("`([%w_]+%.[ch])`") do
      if not present[name] then gone[#gone + 1] = name end
    end
    for name in text:gmatch("`([%w_]+%.map)`") do
      if not present[name] then gone[#gone + 1] = name end
    end
    assert.are.same({}, missing)
    assert.are.same({}, gone)
  end)
end)

describe("docs/c-api.md", function()
  it("documents every function and macro of csrc/moonsocket.h", function()
    local header = read_file("csrc/moonsocket.h")
    local text = doc("c-api.md")
    local missing = {}
    for name in header:gmatch("\n[%w_ ]-[%s%*]([%w_]+)%(") do
      if not text:find(name .. "(", 1, true) then
        missing[#missing + 1] = name
      end
    end
    for name in header:gmatch("#define (MOONSOCKET_[%w_]+) ") do
      if not text:find(name, 1, true) then missing[#missing + 1] = name end
    end
    assert.are.same({}, missing)
  end)
end)

describe("docs/README.md", function()
  it("links every page, and README.md links docs/", function()
    local index = doc("README.md")
    for _, name in ipairs(DOCS) do
      if name ~= "README.md" then
        assert.truthy(index:find("(" .. name .. ")", 1, true),
                      "docs/README.md does not link " .. name)
      end
    end
    assert.truthy(read_file("README.md"):find("docs/", 1, true),
                  "README.md does not point to docs/")
  end)
end)

------------------------------------------------------------------------
-- nginx in front (docs/deploying-behind-nginx.md)
------------------------------------------------------------------------

-- Replaces pattern in s exactly once, or fails naming the documented
-- text the test depends on.
local function replace_once(s, pattern, replacement)
  local out, n = s:gsub(pattern, replacement)
  assert(n >= 1, "docs/deploying-behind-nginx.md no longer holds '"
         .. pattern .. "'")
  return out
end

local nginx_missing = helper.nginx_missing
local start_nginx = helper.start_nginx
local stop_nginx = helper.stop_nginx

local function wait_listening(port)
  assert(helper.wait_until(function()
    local sock = socket.connect("127.0.0.1", port)
    if sock then sock:close() end
    return sock ~= nil
  end), "nginx does not listen on " .. port)
end

-- An HTTP request from 127.0.0.2, so that nginx's client address differs
-- from its own (127.0.0.1, what moonsocket sees).
local function request_from(port, request)
  local sock = socket.tcp()
  sock:settimeout(helper.DEFAULT_TIMEOUT)
  assert(sock:bind("127.0.0.2", 0))
  assert(sock:connect("127.0.0.1", port))
  assert(sock:send(request))
  local status, headers, body = helper.read_response(sock)
  return status, headers, body, sock
end

describe("docs/deploying-behind-nginx.md", function()
  local missing = nginx_missing()
  if missing then
    it("needs nginx", function() pending(missing) end)
    return
  end

  local list = blocks(doc("deploying-behind-nginx.md"))
  local app_code, plain, tls
  for _, block in ipairs(list) do
    if block.info == "lua server" then app_code = app_code or block.code end
    if block.info == "nginx example" then plain = block.code end
    if block.info == "nginx tls-example" then tls = block.code end
  end

  -- The documented app, with keep_alive_interval set to `interval`.
  local function start_app(interval)
    local code = replace_once(app_code, "keep_alive_interval = 30",
                              "keep_alive_interval = " .. interval)
    local path = temp_app(code)
    local server = helper.start_server(path, {})
    server.path = path
    return server
  end

  local function stop_app(server)
    helper.stop_and_check(server)
    os.remove(server.path)
  end

  -- The documented plain server block, on free ports.
  local function plain_config(app_port, port, read_timeout)
    local conf = replace_once(plain, "listen 80;",
                              "listen 127.0.0.1:" .. port .. ";")
    conf = replace_once(conf, "127%.0%.0%.1:5000", "127.0.0.1:" .. app_port)
    return replace_once(conf, "proxy_read_timeout 75s;",
                        "proxy_read_timeout " .. read_timeout .. ";")
  end

  it("has the app and both configurations", function()
    assert.truthy(app_code, "no ```lua server block")
    assert.truthy(plain, "no ```nginx example block")
    assert.truthy(tls, "no ```nginx tls-example block")
  end)

  it("proxies the page, the echo and the client's address", function()
    local app = start_app(30)
    local port = helper.free_port()
    local nginx = start_nginx(plain_config(app.port, port, "75s"))
    finally(function()
      stop_nginx(nginx)
      stop_app(app)
    end)
    wait_listening(port)

    local _
    local status, headers, body, sock = request_from(port,
      "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    sock:close()
    assert.are.equal(200, status)
    assert.are.equal("text/html; charset=utf-8", headers["content-type"])
    assert.truthy(body:find("<html", 1, true))

    -- a client's own X-Forwarded-For is kept, nginx appends the address
    -- it saw; X-Real-IP is that address alone
    status, _, body, sock = request_from(port,
      "GET /whoami HTTP/1.1\r\nHost: example.com\r\n"
      .. "X-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n")
    sock:close()
    assert.are.equal(200, status)
    assert.are.equal("client 127.0.0.2 via 127.0.0.1\n"
      .. "x-forwarded-for: 203.0.113.7, 127.0.0.2\n"
      .. "x-real-ip: 127.0.0.2\n", body)

    -- the upgrade goes through: echo, then the address the hook kept
    local request = helper.upgrade_request{ path = "/ws",
      headers = { Host = "example.com", Origin = "https://example.com" } }
    status, headers, _, sock = request_from(port, request)
    assert.are.equal(101, status)
    local ws = helper.wrap(sock, headers)
    ws:send_text("hello through nginx")
    assert.are.same({ helper.TEXT, "hello through nginx" },
                    { ws:recv_message() })
    ws:send_text("whoami")
    assert.are.same({ helper.TEXT, "127.0.0.2" }, { ws:recv_message() })
    ws:close(1000)
    ws:expect_close(1000)
    ws:abort()

    -- allowed_origins sees the browser's Origin, which nginx passes on
    request = helper.upgrade_request{ path = "/ws",
      headers = { Host = "example.com", Origin = "https://evil.test" } }
    status, _, _, sock = request_from(port, request)
    sock:close()
    assert.are.equal(403, status)
  end)

  it("keeps a quiet WebSocket open with pings shorter than "
     .. "proxy_read_timeout", function()
    local app = start_app(0.3)
    local port = helper.free_port()
    local nginx = start_nginx(plain_config(app.port, port, "1s"))
    finally(function()
      stop_nginx(nginx)
      stop_app(app)
    end)
    wait_listening(port)
    local ws = assert(helper.ws_connect(port, "/ws"))
    helper.sleep(helper.scaled(2.5))      -- silent: only pings flow
    ws:send_text("still here")
    local pings = 0
    while true do
      local opcode, payload = ws:recv_message()
      assert.is_truthy(opcode, payload)
      if opcode == helper.PING then
        pings = pings + 1
      else
        assert.are.same({ helper.TEXT, "still here" }, { opcode, payload })
        break
      end
    end
    assert.is_true(pings >= 2, "pings seen: " .. pings)
    ws:abort()
  end)

  it("is cut by nginx after proxy_read_timeout without pings", function()
    local app = start_app(0)
    local port = helper.free_port()
    local nginx = start_nginx(plain_config(app.port, port, "1s"))
    finally(function()
      stop_nginx(nginx)
      stop_app(app)
    end)
    wait_listening(port)
    local ws = assert(helper.ws_connect(port, "/ws"))
    assert.is_false(ws:is_closed(0.5))
    assert.is_true(ws:is_closed(helper.scaled(3)))
    ws:abort()
  end)

  it("terminates TLS in nginx and proxies wss to ws", function()
    local app = start_app(30)
    local port, redirect = helper.free_port(), helper.free_port()
    local certs = assert(io.popen("pwd")):read("l") .. "/"
                  .. helper.example_certs()
    local conf = replace_once(tls, "listen 443 ssl;",
                              "listen 127.0.0.1:" .. port .. " ssl;")
    conf = replace_once(conf, "listen 80;",
                        "listen 127.0.0.1:" .. redirect .. ";")
    conf = replace_once(conf, "/etc/ssl/example%.com/fullchain%.pem",
                        certs .. "cert.pem")
    conf = replace_once(conf, "/etc/ssl/example%.com/privkey%.pem",
                        certs .. "key.pem")
    -- the documented map and upstream are in the plain block only
    conf = plain:match("^(.-)\nserver {") .. "\n" .. conf
    conf = replace_once(conf, "127%.0%.0%.1:5000", "127.0.0.1:" .. app.port)
    local nginx = start_nginx(conf)
    finally(function()
      stop_nginx(nginx)
      stop_app(app)
    end)
    wait_listening(port)
    local out, status = helper.run_peer("tls_client.py",
      { port, "hold", "0.2" })
    assert.are.equal(0, status, out)
    assert.are.equal("ok\nok\n", out)
    -- plain http on port 80 is sent to https
    local code, headers, _, sock = helper.http(redirect,
      "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    sock:close()
    assert.are.equal(301, code)
    assert.are.equal("https://example.com/ws", headers.location)
  end)
end)
