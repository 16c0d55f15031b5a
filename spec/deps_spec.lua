-- The install lists against what the suites call: a fresh machine gets
-- every program from `make deps test-deps` (the Makefile's DEB_PACKAGES,
-- TEST_PACKAGES and NODE_PACKAGES) and CI from .ci/run, which installs
-- the same lists.
local helper = require "helper"

-- Each program (or Python module of /usr/bin/python3) that a suite
-- calls, the Debian package it comes from, and who calls it.  Programs
-- of packages every Debian system has (coreutils, mawk) are left out.
local CALLED = {
  { "lua5.4", "lua5.4", "spec/run.sh" },
  { "busted", "lua-busted", "spec/run.sh" },
  { "socket (Lua)", "lua-socket", "spec/helper.lua" },
  { "cjson (Lua)", "lua-cjson", "examples/chat, spec/chat_spec.lua" },
  { "cc", "gcc", "Makefile, spec/c, bench" },
  { "make", "make", "Makefile" },
  { "pkg-config", "pkg-config", "spec/embed_spec.lua" },
  { "websockets (Python)", "python3-websockets", "spec/peers" },
  { "cryptography (Python)", "python3-cryptography",
    "spec/peers/make_cert.py, tls_client.py" },
  { "openssl", "openssl", "spec/helper.lua, spec/tls_spec.lua" },
  { "luarocks", "luarocks", "spec/rockspec_spec.lua" },
  { "redis-server", "redis-server",
    "spec/backplane_spec.lua, spec/socket_spec.lua, "
    .. "spec/socket_soak_spec.lua" },
  { "redis (Lua 5.3 path)", "lua-redis", "spec/socket_spec.lua" },
  { "lfs (Lua)", "lua-filesystem",
    "bench/socket_soak.lua, spec/socket_soak_spec.lua" },
  { "nginx", "nginx", "spec/docs_spec.lua" },
  { "promtool", "prometheus", "spec/metrics_spec.lua" },
  { "valgrind", "valgrind", "bench guard, make valgrind" },
  { "gdb", "gdb", "bench/soak.py" },
  { "clang", "clang", "fuzz/Makefile" },
  { "libclang_rt.fuzzer", "libclang-rt-dev", "fuzz/Makefile" },
  { "chromium", "chromium", "spec/browser" },
  { "h2 (Python)", "python3-h2", "spec/peers/h2_client.py" },
  { "nghttp", "nghttp2-client", "spec/http2_spec.lua" },
}

local function words(text)
  local set = {}
  for word in text:gmatch("%S+") do set[word] = true end
  return set
end

local function make_packages()
  local pipe = assert(io.popen("env -u LD_PRELOAD make -s packages 2>&1"))
  local out = pipe:read("a")
  assert(pipe:close(), "make packages: " .. out)
  return out
end

-- The packages of .ci/run's apt-get install lines (with continuations),
-- with `$(make -s packages)` expanded; options, variables and
-- redirections left out.
local function ci_packages()
  local text = assert(helper.read_file(".ci/run"))
  local set, open = {}, false
  for line in text:gmatch("[^\n]*") do
    open = open or line:find("apt%-get%s.*install") ~= nil
    if open then
      open = line:find("\\$") ~= nil
      line = line:gsub("%$%(make %-s packages%)", make_packages)
      for word in line:gmatch("%S+") do
        if not word:find("^[-$>\\]") and word ~= "apt-get"
           and word ~= "install" then
          set[word] = true
        end
      end
    end
  end
  return set
end

describe("install lists", function()
  it("name the package of every program the suites call", function()
    local listed = words(make_packages())
    for _, entry in ipairs(CALLED) do
      assert.is_true(listed[entry[2]] == true, ("%s (called by %s) needs "
        .. "%s in the Makefile's package lists"):format(entry[1], entry[3],
        entry[2]))
    end
  end)

  it("include Node.js and npm where the machine has no node", function()
    -- a PATH with echo (for make's recipe) and nothing else
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute(("mkdir %s && ln -s /bin/echo %s/echo")
      :format(helper.shell_quote(dir), helper.shell_quote(dir))))
    local pipe = assert(io.popen("env -u LD_PRELOAD PATH="
      .. helper.shell_quote(dir) .. " /usr/bin/make -s packages 2>&1"))
    local out = pipe:read("a")
    pipe:close()
    os.execute("rm -rf " .. helper.shell_quote(dir))
    local listed = words(out)
    assert.is_true(listed.nodejs and listed.npm,
                   "no nodejs npm in: " .. out)
  end)

  it("are what .ci/run installs", function()
    local ci = ci_packages()
    local listed = words(make_packages())
    for word in pairs(listed) do
      assert.is_true(ci[word] == true, ".ci/run does not install " .. word)
    end
    for word in pairs(ci) do
      assert.is_true(listed[word] == true, ".ci/run installs " .. word
        .. ", which no Makefile list names")
    end
  end)
end)
