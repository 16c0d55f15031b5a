-- The rockspec installs the module, the Lua modules and the runner.
describe("luarocks make", function()
  it("installs moonsocket offline into a tree", function()
    local tree = os.tmpname()
    os.remove(tree)
    local log = tree .. ".log"
    local ok = os.execute(("luarocks --lua-version=5.4 --tree %q make "
      .. "rockspec/moonsocket-dev-1.rockspec > %q 2>&1"):format(tree, log))
    assert.is_true(ok, io.open(log):read("a"))
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
    os.execute(("rm -rf %q %q"):format(tree, log))
  end)
end)
