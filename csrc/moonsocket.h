/* moonsocket.h - the public C API: embed moonsocket in a host program
 *
 * Threading and ownership: a lua_State and the ev_loop it serves belong
 * to one thread.  Call these functions from that thread only, and never
 * from inside a libev callback of another loop.  The module keeps its
 * state in the lua_State's registry: several lua_States may each run
 * moonsocket, on one loop or on several.  Close the lua_State (which
 * closes every socket) before destroying the loop you handed in. */
#ifndef MOONSOCKET_H
#define MOONSOCKET_H

#include <ev.h>
#include <lua.h>

#define MOONSOCKET_VERSION "0.1.0"

/* Use loop for the servers of L.  Call before require "moonsocket.core";
 * without it the module runs on libev's default loop. */
void moonsocket_use_loop(lua_State *L, struct ev_loop *loop);

/* The Lua module: require "moonsocket.core" reaches it once
 * moonsocket_preload registered it in package.preload. */
int luaopen_moonsocket_core(lua_State *L);
void moonsocket_preload(lua_State *L);

/* Run the loop until every server has closed, with SIGINT and SIGTERM
 * starting a graceful shutdown and SIGHUP reloading TLS certificates.
 * SIGPIPE is ignored unless the host set a handler: OpenSSL writes to
 * sockets without MSG_NOSIGNAL.  A host that runs the loop itself and
 * serves TLS must ignore SIGPIPE too.  Returns 0. */
int moonsocket_run(lua_State *L);

/* Stop accepting, close every WebSocket with 1001, wait up to timeout
 * seconds for the close handshakes, then close what remains. */
void moonsocket_shutdown(lua_State *L, double timeout);

#endif
