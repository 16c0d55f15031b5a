-- The rockspec installs the module, the Lua modules and the runner.
describe("luarocks make", function()
  it("installs moonsocket offline into a tree", function()
    local tree = os.tmpname()
    os.remove(tree)
    local log, config = tree .. ".log", tree .. ".config.lua"
    -- lua-cjson comes from Debian (make deps), which luarocks cannot see:
    -- this configuration says the system provides the version installed,
    -- so luarocks checks the dependency against it and downloads nothing
    -- (without it, it looks for lua-cjson on luarocks.org)
    local cjson_version = require("cjson")._VERSION
    local file = assert(io.open(config, "w"))
    file:write(('rocks_provided = { ["lua-cjson"] = "%s-1" }\n')
      :format(cjson_version))
    file:close()
    local ok = os.execute(("LUAROCKS_CONFIG=%q luarocks --lua-version=5.4 "
      .. "--tree %q make rockspec/moonsocket-dev-1.rockspec > %q 2>&1")
      :format(config, tree, log))
    local out = io.open(log):read("a")
    assert.is_true(ok, out)
    assert.truthy(out:find(("depends on lua-cjson (%s-1 provided by VM)")
      :format(cjson_version), 1, true), out)
    local probe = io.popen(("LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/"
      .. "5.4/?/init.lua' LUA_CPATH='%s/lib/lua/5.4/?.so' lua5.4 -e "
      .. "'local m = require \"moonsocket\"; "
      .. "io.write(m._VERSION, \" \", type(m.app))' 2>&1")
      :format(tree, tree, tree))
    local out = probe:read("a")
    probe:close()
    assert.are.equal("0.1.0 function", out)
    local f = io.open(tree .. "/bin/moonsocket")
    assert.is_truthy(f)
    f:close()
    os.execute(("rm -rf %q %q %q"):format(tree, log, config))
  end)
end)
