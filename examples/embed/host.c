/* host.c - a host program that embeds moonsocket on its own libev loop:
 * a ticker and a stdin reader do the host's work, and examples/embed/
 * app.lua serves WebSockets on the same loop and hears about both
 *
 *   embed-host [-i seconds] [app.lua]
 *
 * The app script returns a table of hooks, { on_tick = f, on_line = g }:
 * the host calls on_tick(n) every interval (1 s) and on_line(line) for
 * each line read from stdin.  SIGINT or SIGTERM shuts down gracefully
 * (a second one stops at once) and the host exits 0; 1 when the app
 * cannot start. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "moonsocket.h"

#define LINE_MAX_BYTES 4096     /* a longer line goes to on_line in pieces */
#define SHUTDOWN_TIMEOUT 5.0    /* seconds for the closing handshakes */

struct host {
  struct ev_loop *loop;
  lua_State *L;
  int hooks;                    /* registry ref of the app's hook table */
  ev_timer tick;
  ev_io input;
  ev_signal sigint, sigterm;
  lua_Integer ticks;
  int stopping;
  size_t line_len;
  char line[LINE_MAX_BYTES];
};

/* What a hook is called with: on_tick(n) or on_line(text). */
struct hook_call {
  const char *name;
  lua_Integer n;
  const char *text;             /* NULL for on_tick */
  size_t len;
};

/* ------------------------------------------------------------------ */
/* Calling Lua: every call goes through protected()                    */
/* ------------------------------------------------------------------ */

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Run fn(host, arg) as a protected call with a traceback, and report an
 * error on stderr.  Values are made inside fn, so that running out of
 * memory is an error there, not a panic here.  Returns a status. */
static int protected(struct host *h, lua_CFunction fn, const void *arg,
                     const char *what) {
  lua_State *L = h->L;
  int base = lua_gettop(L) + 1;
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, h);
  lua_pushlightuserdata(L, (void *)arg);
  int rc = lua_pcall(L, 2, 0, base);
  if (rc != LUA_OK)
    fprintf(stderr, "embed-host: error in %s: %s\n", what,
            lua_tostring(L, -1));
  lua_settop(L, base - 1);
  return rc;
}

/* Protected: load and run the app script (arg), which sets up its
 * servers on our loop and returns its hooks, kept in the registry: the
 * app needs no globals. */
static int start_app(lua_State *L) {
  struct host *h = lua_touserdata(L, 1);
  const char *script = lua_touserdata(L, 2);
  luaL_openlibs(L);
  moonsocket_use_loop(L, h->loop);     /* before require "moonsocket" */
  moonsocket_preload(L);
  if (luaL_loadfile(L, script) != LUA_OK) return lua_error(L);
  lua_call(L, 0, 1);
  if (!lua_istable(L, -1))
    return luaL_error(L, "%s must return a table of hooks (on_tick, "
                      "on_line), not a %s", script, luaL_typename(L, -1));
  h->hooks = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* Protected: hooks[name](value), when the app has that hook.  The
 * lookup may run the table's metamethods, so it is protected too. */
static int call_hook(lua_State *L) {
  struct host *h = lua_touserdata(L, 1);
  const struct hook_call *call = lua_touserdata(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->hooks);
  if (lua_getfield(L, -1, call->name) == LUA_TNIL) return 0;
  if (call->text) lua_pushlstring(L, call->text, call->len);
  else lua_pushinteger(L, call->n);
  lua_call(L, 1, 0);
  return 0;
}

/* Protected: moonsocket_shutdown raises when moonsocket.core was never
 * loaded, and allocates as it closes. */
static int shutdown_app(lua_State *L) {
  moonsocket_shutdown(L, SHUTDOWN_TIMEOUT);
  return 0;
}

/* ------------------------------------------------------------------ */
/* The host's own work                                                 */
/* ------------------------------------------------------------------ */

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents) {
  struct host *h = w->data;
  struct hook_call call = { "on_tick", ++h->ticks, NULL, 0 };
  (void)loop;
  (void)revents;
  protected(h, call_hook, &call, "on_tick");
}

static void pass_line(struct host *h, const char *text, size_t len) {
  if (len > 0 && text[len - 1] == '\r') len--;      /* CRLF input */
  struct hook_call call = { "on_line", 0, text, len };
  protected(h, call_hook, &call, "on_line");
}

/* One read per event: the loop stays fair to the sockets however fast
 * stdin is.  Complete lines go to the app; a partial one waits. */
static void on_input(struct ev_loop *loop, ev_io *w, int revents) {
  struct host *h = w->data;
  (void)revents;
  ssize_t n = read(w->fd, h->line + h->line_len,
                   sizeof h->line - h->line_len);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {                         /* end of input: ticks go on */
    if (h->line_len > 0) pass_line(h, h->line, h->line_len);
    h->line_len = 0;
    ev_io_stop(loop, w);
    return;
  }
  h->line_len += (size_t)n;
  size_t start = 0;
  char *nl;
  while ((nl = memchr(h->line + start, '\n', h->line_len - start))) {
    size_t end = (size_t)(nl - h->line);
    pass_line(h, h->line + start, end - start);
    start = end + 1;
  }
  h->line_len -= start;
  memmove(h->line, h->line + start, h->line_len);
  if (h->line_len == sizeof h->line) {  /* no newline in a full buffer */
    pass_line(h, h->line, h->line_len);
    h->line_len = 0;
  }
}

/* The first signal stops the host's work and shuts moonsocket down: the
 * loop then ends by itself once the last socket has closed.  A second
 * one ends the loop at once; lua_close cuts off what is left. */
static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
  struct host *h = w->data;
  (void)revents;
  if (h->stopping) {
    fprintf(stderr, "embed-host: signal %d again: stopping now\n",
            w->signum);
    ev_break(loop, EVBREAK_ALL);
    return;
  }
  h->stopping = 1;
  fprintf(stderr, "embed-host: signal %d: shutting down\n", w->signum);
  ev_timer_stop(loop, &h->tick);
  ev_io_stop(loop, &h->input);
  protected(h, shutdown_app, NULL, "shutdown");
}

/* ------------------------------------------------------------------ */
/* Setting up and tearing down                                         */
/* ------------------------------------------------------------------ */

static int usage(const char *argv0, int status) {
  fprintf(stderr, "usage: %s [-i seconds] [app.lua]\n"
          "Serves app.lua (examples/embed/app.lua) on the host's own "
          "loop, calling its\non_tick hook every interval (1 s) and "
          "on_line for each line of stdin.\n", argv0);
  return status;
}

static void serve(struct host *h, double interval) {
  struct ev_loop *loop = h->loop;
  ev_timer_init(&h->tick, on_tick, interval, interval);
  ev_io_init(&h->input, on_input, STDIN_FILENO, EV_READ);
  ev_signal_init(&h->sigint, on_signal, SIGINT);
  ev_signal_init(&h->sigterm, on_signal, SIGTERM);
  h->tick.data = h->input.data = h->sigint.data = h->sigterm.data = h;
  ev_timer_start(loop, &h->tick);
  ev_io_start(loop, &h->input);
  /* the signal watchers alone must not keep the loop running: once the
   * host's work and the sockets are gone, ev_run returns */
  ev_signal_start(loop, &h->sigint);
  ev_signal_start(loop, &h->sigterm);
  ev_unref(loop);
  ev_unref(loop);
  ev_run(loop, 0);
  ev_ref(loop);                         /* before stopping them */
  ev_ref(loop);
  ev_signal_stop(loop, &h->sigint);
  ev_signal_stop(loop, &h->sigterm);
  ev_timer_stop(loop, &h->tick);        /* if anything broke the loop */
  ev_io_stop(loop, &h->input);
}

int main(int argc, char **argv) {
  double interval = 1.0;
  const char *script = "examples/embed/app.lua";
  int i = 1;
  if (i < argc && (strcmp(argv[i], "-h") == 0 ||
                   strcmp(argv[i], "--help") == 0))
    return usage(argv[0], 0);
  if (i + 1 < argc && strcmp(argv[i], "-i") == 0) {
    char *end;
    interval = strtod(argv[i + 1], &end);
    if (*end || !(interval > 0)) return usage(argv[0], 2);
    i += 2;
  }
  if (i < argc) script = argv[i++];
  if (i < argc) return usage(argv[0], 2);

  /* a peer that went away must not kill the host: OpenSSL writes
   * without MSG_NOSIGNAL */
  signal(SIGPIPE, SIG_IGN);

  struct host h = { .hooks = LUA_NOREF };
  h.loop = ev_loop_new(EVFLAG_AUTO);    /* ours, not libev's default */
  if (!h.loop) {
    fprintf(stderr, "embed-host: cannot create an event loop\n");
    return 1;
  }
  h.L = luaL_newstate();
  if (!h.L) {
    fprintf(stderr, "embed-host: cannot create a Lua state\n");
    ev_loop_destroy(h.loop);
    return 1;
  }
  int rc = protected(&h, start_app, script, "app");
  if (rc == LUA_OK) serve(&h, interval);
  /* the lua_State first: closing it stops its watchers on the loop */
  lua_close(h.L);
  ev_loop_destroy(h.loop);
  return rc == LUA_OK ? 0 : 1;
}
