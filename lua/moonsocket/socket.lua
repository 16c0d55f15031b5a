-- moonsocket.socket: TCP, TLS and Unix stream sockets for the code
-- moonsocket runs, with LuaSocket's client API (the cosockets of
-- OpenResty).  A call that would block waits in its coroutine through
-- moonsocket.runtime, and the loop serves everyone meanwhile; the
-- sockets themselves are the core's (moonsocket.socket objects).
local core = require "moonsocket.core"
local runtime = require "moonsocket.runtime"

local format = string.format
local require = require
local type = type

local new_socket = core.socket

local _M = { _VERSION = core._VERSION }

-- What connect calls for a host that is no address: moonsocket.resolve
-- (a name's addresses, waiting in the coroutine) when there is one;
-- nil and "cannot resolve 'NAME': why" else, as it says itself.  The
-- socket's timeout, when it has one, bounds the wait.
local function resolve(name, timeout)
  local resolver = require("moonsocket").resolve
  if type(resolver) ~= "function" then
    return nil, format("cannot resolve '%s': no resolver", name)
  end
  return resolver(name, timeout)
end

core.socket_hooks(runtime.waiter, runtime.wait, runtime.wake, resolve)

local function check_options(fname, options)
  if options ~= nil and type(options) ~= "table" then
    error(format("bad argument #1 to '%s' (table of options expected, "
                 .. "got %s)", fname, type(options)), 3)
  end
end

-- tcp{ max_line = 65536 }: a TCP socket, closed until connect.
function _M.tcp(options)
  check_options("tcp", options)
  return new_socket("tcp", options)
end

-- unix{ max_line = 65536 }: a Unix domain stream socket.
function _M.unix(options)
  check_options("unix", options)
  return new_socket("unix", options)
end

return _M
