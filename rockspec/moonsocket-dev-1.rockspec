rockspec_format = "3.0"
package = "moonsocket"
version = "dev-1"
source = {
  url = "git+file:///dev/null",   -- `luarocks make` builds the work tree
}
description = {
  summary = "WebSocket server: a C core on libev, scripted in Lua 5.4",
  detailed = [[
RFC 6455 WebSockets with the sockets, handshake and framing in C on
libev, and the app (middleware pipeline, routes, handlers) in Lua.
Installs the module moonsocket.core, the Lua modules and the
`moonsocket` runner.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "lua-cjson",            -- the JSON apps speak (require "cjson")
}
external_dependencies = {
  EV = { header = "ev.h", library = "ev" },
  CRYPTO = { header = "openssl/sha.h", library = "crypto" },
  HIREDIS = { header = "hiredis/async.h", library = "hiredis" },
  CARES = { header = "ares.h", library = "cares" },
  NGHTTP2 = { header = "nghttp2/nghttp2.h", library = "nghttp2" },
}
build = {
  type = "make",
  build_target = "build",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_INC = "-I$(LUA_INCDIR)",
  },
  install_target = "install-lua",   -- not the C library for hosts
  install_variables = {
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    BINDIR = "$(BINDIR)",
  },
}
test = {
  type = "command",
  command = "make test",
}
