/* moonsocket.h - the public C API: embed moonsocket in a host program
 *
 * examples/embed/host.c is a host with its own loop; csrc/main.c, the
 * runner, lets moonsocket_run run the loop.  Link libmoonsocket (the
 * core without the runner; `pkg-config --cflags --libs moonsocket`).
 *
 * Ownership.  The host owns the ev_loop and the lua_State: it creates
 * them, runs the loop and destroys both.  moonsocket keeps its state in
 * the lua_State's registry and has no C globals; it adds watchers to the
 * loop and removes them, and never ends a loop the host runs.  Several
 * lua_States may each load moonsocket, on one loop or on several.
 *
 * Threads.  One loop, one thread: a loop and the lua_States on it belong
 * to the thread that runs the loop.  Call these functions on that thread
 * only, and never from a signal handler (use an ev_signal watcher),
 * another thread (use ev_async) or a callback of another loop.
 * moonsocket_shutdown may be called before the loop runs, after it, or
 * from inside any callback of that loop: a watcher of the host's, or a
 * Lua handler of moonsocket (moonsocket.shutdown() is the same call).
 * moonsocket_run is called outside the loop.  Signals: libev lets one
 * loop at a time watch a given signal, so a host that watches SIGINT,
 * SIGTERM or SIGHUP itself must not call moonsocket_run, and
 * moonsocket_run may run on one loop at a time per process.
 *
 * SIGPIPE.  A peer that left must not kill the process: OpenSSL writes
 * without MSG_NOSIGNAL and sendfile (static files) has no such flag.
 * moonsocket_run ignores SIGPIPE unless the host set a handler; a host
 * that runs the loop itself must ignore it.
 *
 * Errors.  moonsocket_run and moonsocket_shutdown raise a Lua error when
 * moonsocket.core was not loaded in L (or on running out of memory), and
 * may run Lua handlers: call them in protected mode, from a C function
 * run by lua_pcall, as the examples do.
 *
 * Teardown, in order:
 *   1. stop the host's watchers that call into L;
 *   2. moonsocket_shutdown, and run the loop until it returns: once the
 *      last socket has closed moonsocket has no watcher left, so a loop
 *      with nothing else to do ends (skip this to cut sockets off);
 *   3. stop the host's remaining watchers (signals);
 *   4. lua_close(L): closes every socket and listener still open and
 *      stops every watcher moonsocket has on the loop;
 *   5. ev_loop_destroy(loop), never before lua_close.  The loop may also
 *      run on after lua_close, for the host's other work. */
#ifndef MOONSOCKET_H
#define MOONSOCKET_H

#include <ev.h>
#include <lua.h>

#define MOONSOCKET_VERSION "0.1.0"

/* The API is what the library exports; the core's other names are
 * hidden in it. */
#if defined(__GNUC__)
#define MOONSOCKET_API __attribute__((visibility("default")))
#else
#define MOONSOCKET_API
#endif

/* Use loop for the servers of L.  Call it before the first require
 * "moonsocket.core" (require "moonsocket" makes one) in L: later calls
 * have no effect.  Without it the module runs on libev's default loop.
 * The loop must outlive L. */
MOONSOCKET_API void moonsocket_use_loop(lua_State *L, struct ev_loop *loop);

/* The Lua module: require "moonsocket.core" reaches it once
 * moonsocket_preload registered it in package.preload (luaL_openlibs
 * first). */
MOONSOCKET_API int luaopen_moonsocket_core(lua_State *L);
MOONSOCKET_API void moonsocket_preload(lua_State *L);

/* Run the loop (ev_run) until every server has closed, with SIGINT and
 * SIGTERM starting a graceful shutdown (a second one cuts off what is
 * left) and SIGHUP reloading TLS certificates; ignores SIGPIPE unless
 * the host set a handler.  For hosts that let moonsocket run the loop:
 * a host that runs the loop itself does not call it.  Returns 0. */
MOONSOCKET_API int moonsocket_run(lua_State *L);

/* Shut down gracefully: stop accepting, answer or close the HTTP
 * connections, send every WebSocket what was queued and then a close
 * frame 1001, and give the closing handshakes up to timeout seconds
 * before cutting off what remains.  Returns at once; the sockets close
 * as the loop runs (close handlers may run before it returns).  Later
 * calls do nothing.  It ends the loop only when moonsocket_run runs it:
 * a host's loop goes on with the host's watchers. */
MOONSOCKET_API void moonsocket_shutdown(lua_State *L, double timeout);

#endif
