-- moonsocket.resolver: host names to addresses without blocking the
-- loop.  resolve(name) waits, as sleep() does, in a coroutine moonsocket
-- runs while c-ares asks the DNS servers on the loop; configure{...}
-- (moonsocket.resolver) picks the servers, the timeout and the cache.
local core = require "moonsocket.core"
local runtime = require "moonsocket.runtime"

local error = error
local format = string.format
local type = type

local core_resolve, core_timer = core.resolve, core.timer
local waiter, wait, wake = runtime.waiter, runtime.wait, runtime.wake

local _M = { _VERSION = "0.1.0" }

-- resolve(name): the addresses of name, IPv4 and IPv6 as text, in the
-- order to try them; an address is its own answer, /etc/hosts and the
-- cache answer without a query.  nil, "cannot resolve 'name': why",
-- "ERESOLVE" when there is none.  timeout, when given, bounds the wait
-- below the resolver's own.  Raises outside a coroutine that may wait.
function _M.resolve(name, timeout)
  if type(name) ~= "string" then
    error(format("bad argument #1 to 'resolve' (string expected, got %s)",
                 type(name)), 2)
  end
  if name == "" or #name > 255 or name:find("\0", 1, true) then
    error("bad argument #1 to 'resolve' (a host name or an address "
          .. "expected)", 2)
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("bad argument #2 to 'resolve' (seconds >= 0 expected)", 2)
  end
  local co = waiter("resolve()")
  -- a thread cancelled meanwhile cancels the lookup (lookup:cancel())
  local lookup = core_resolve(name, wake, co)
  if not timeout then return wait(co, lookup) end
  local timer = core_timer(timeout, 0, wake, co, nil,
                           format("cannot resolve '%s': timed out", name),
                           "ERESOLVE")
  local function stop()
    lookup:cancel()
    timer:cancel()
  end
  local addresses, err, code = wait(co, stop)
  stop()
  return addresses, err, code
end

-- configure{ servers = { "192.0.2.53", "[2001:db8::53]:5353" },
-- timeout = 5, cache = 256 or false }: true, or nil, message, "EBUSY"
-- while lookups are under way.  A bad option raises, naming it.
_M.configure = core.resolver

return _M
