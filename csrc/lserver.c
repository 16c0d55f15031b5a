/* lserver.c - the server object (moonsocket.server): listen and its
 * options (TLS, workers, routes), and the functions that run the loop */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "binding.h"
#include "life.h"
#include "workers.h"

static int l_run(lua_State *L) {
  ms_module_run(ms_module_get(L));
  return 0;
}

static int l_shutdown(lua_State *L) {
  double timeout = luaL_optnumber(L, 1, 5.0);
  luaL_argcheck(L, timeout >= 0, 1, "timeout must not be negative");
  ms_module_shutdown(ms_module_get(L), timeout);
  return 0;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, ev_now(ms_module_get(L)->loop));
  return 1;
}

/* worker() -> this worker's number (1..n), or nil without workers */
static int l_worker(lua_State *L) {
  struct ms_module *m = ms_module_get(L);
  if (m->worker) lua_pushinteger(L, m->worker);
  else luaL_pushfail(L);
  return 1;
}

/* A string field of the table at idx, or NULL; strdup'ed. */
static char *dup_field(lua_State *L, int idx, const char *key,
                       const char *option, int required) {
  int t = lua_getfield(L, idx, key);
  if (t == LUA_TNIL && !required) {
    lua_pop(L, 1);
    return NULL;
  }
  if (t != LUA_TSTRING)
    luaL_error(L, "option '%s' must be a string", option);
  char *copy = strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  if (!copy) luaL_error(L, "out of memory");
  return copy;
}

static int tls_gc(lua_State *L) {
  ms_tls_free(luaL_checkudata(L, 1, TLS_MT));
  return 0;
}

/* The tls table of listen: cert, key, password, min_version ("1.2",
 * "1.3"), ciphers, ciphersuites, sni = { [name] = { cert, key,
 * password } }.  Returns a moonsocket.tls userdata, left on the stack. */
static struct ms_tls *read_tls(lua_State *L, int idx) {
  static const char *const keys[] = { "cert", "key", "password",
    "min_version", "ciphers", "ciphersuites", "sni", NULL };
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int known = 0;
    for (const char *const *k = keys; *k; k++)
      known |= lua_type(L, -2) == LUA_TSTRING &&
               strcmp(lua_tostring(L, -2), *k) == 0;
    if (!known)
      luaL_error(L, "unknown option 'tls.%s'", lua_tostring(L, -2));
    lua_pop(L, 1);
  }
  struct ms_tls *t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, TLS_MT);
  t->min_version = TLS1_2_VERSION;
  t->ncerts = 1;
  t->certs[0].cert = dup_field(L, idx, "cert", "tls.cert", 1);
  t->certs[0].key = dup_field(L, idx, "key", "tls.key", 1);
  t->certs[0].password = dup_field(L, idx, "password", "tls.password", 0);
  t->ciphers = dup_field(L, idx, "ciphers", "tls.ciphers", 0);
  t->ciphersuites = dup_field(L, idx, "ciphersuites", "tls.ciphersuites",
                              0);
  if (lua_getfield(L, idx, "min_version") != LUA_TNIL) {
    const char *v = lua_tostring(L, -1);
    if (v && strcmp(v, "1.2") == 0) t->min_version = TLS1_2_VERSION;
    else if (v && strcmp(v, "1.3") == 0) t->min_version = TLS1_3_VERSION;
    else luaL_error(L, "option 'tls.min_version' must be \"1.2\" or "
                    "\"1.3\"");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "sni") != LUA_TNIL) {
    int sni = lua_gettop(L);
    if (!lua_istable(L, sni))
      luaL_error(L, "option 'tls.sni' must be a table of names");
    lua_pushnil(L);
    while (lua_next(L, sni)) {
      if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
        luaL_error(L, "option 'tls.sni' maps server names to tables");
      if (t->ncerts > MS_TLS_MAX_SNI)
        luaL_error(L, "option 'tls.sni' holds more than %d names",
                   MS_TLS_MAX_SNI);
      struct ms_tls_cert *c = &t->certs[t->ncerts++];
      int entry = lua_gettop(L);
      c->name = strdup(lua_tostring(L, -2));
      c->cert = dup_field(L, entry, "cert", "tls.sni.cert", 1);
      c->key = dup_field(L, entry, "key", "tls.sni.key", 1);
      c->password = dup_field(L, entry, "password", "tls.sni.password", 0);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return t;
}

/* Option 'workers' of the listen table at 1: 1 (the default), a count,
 * or "auto", the number of online CPUs.  Every listen of a process
 * asks for the same number: the workers serve every server. */
static int check_workers(lua_State *L, struct ms_module *m) {
  lua_Integer n = 1;
  int t = lua_getfield(L, 1, "workers");
  if (t == LUA_TSTRING && strcmp(lua_tostring(L, -1), "auto") == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    n = cpus < 1 ? 1 : cpus > MS_WORKERS_MAX ? MS_WORKERS_MAX : cpus;
  } else if (t != LUA_TNIL) {
    luaL_argcheck(L, lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1 &&
                  lua_tointeger(L, -1) <= MS_WORKERS_MAX, 1,
                  "option 'workers' must be \"auto\" or an integer from 1 "
                  "to 256");
    n = lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  if (m->worker) return 1;        /* a worker listens on its own */
  if (n > 1 && !ev_is_default_loop(m->loop))
    luaL_argerror(L, 1, "workers need libev's default loop");
  if (m->nworkers && m->nworkers != n)
    luaL_argerror(L, 1, "every listen must ask for the same 'workers'");
  m->nworkers = (int)n;
  return (int)n;
}

static int l_listen(lua_State *L) {
  struct ms_module *m = ms_module_get(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "host");
  const char *host = luaL_optstring(L, -1, "127.0.0.1");
  lua_getfield(L, 1, "port");
  lua_Integer port = luaL_optinteger(L, -1, 0);
  luaL_argcheck(L, port >= 0 && port <= 65535, 1,
                "option 'port' must be an integer from 0 to 65535");
  lua_getfield(L, 1, "backlog");
  lua_Integer backlog = luaL_optinteger(L, -1, 511);
  luaL_argcheck(L, backlog >= 1 && backlog <= 65535, 1,
                "option 'backlog' must be an integer from 1 to 65535");
  lua_getfield(L, 1, "handler");
  luaL_argcheck(L, lua_isfunction(L, -1), 1,
                "option 'handler' must be a function");
  int workers = check_workers(L, m);
  struct ms_options opts;
  ms_options_defaults(&opts);
  if (lua_getfield(L, 1, "options") != LUA_TNIL) {
    luaL_argcheck(L, lua_istable(L, -1), 1, "'options' must be a table");
    ms_options_read(L, -1, &opts, 0);
  }
  lua_pop(L, 1);
  /* HTTP/2: on by default where ALPN can negotiate it */
  int http2 = lua_getfield(L, 1, "http2");
  luaL_argcheck(L, http2 == LUA_TNIL || http2 == LUA_TBOOLEAN, 1,
                "option 'http2' must be a boolean");
  http2 = http2 == LUA_TNIL ? -1 : lua_toboolean(L, -1);
  lua_pop(L, 1);
  struct ms_tls *tls = NULL;
  if (lua_getfield(L, 1, "tls") != LUA_TNIL) {       /* at index 6 */
    luaL_argcheck(L, lua_istable(L, -1), 1, "'tls' must be a table");
    tls = read_tls(L, 6);                           /* at index 7 */
    tls->http2 = http2 != 0;
    char why[512];
    if (ms_tls_load(tls, why, sizeof why) != 0)
      return ms_push_fail(L, why, "ETLS");
  }

  struct ms_server *s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  if (tls) {
    lua_pushvalue(L, 7);
    lua_setiuservalue(L, -2, 1);      /* the server keeps its contexts */
    s->tls = tls;
  }
  s->listener.fd = -1;
  s->on_request = s->ref = s->ws_routes = LUA_NOREF;
  s->closing = 1;                      /* closed until it listens */
  luaL_setmetatable(L, SERVER_MT);
  s->module = m;
  s->metrics = m->metrics;
  s->opts = opts;
  s->http2 = tls ? http2 != 0 : http2 == 1;
  s->limits.max_head = opts.max_header_size;
  s->limits.max_line = opts.max_request_line;
  s->limits.max_headers = opts.max_headers;
  if (!(s->rbuf = malloc(opts.receive_buffer_size)))
    return luaL_error(L, "out of memory");
  const char *err;
  enum ms_listen_mode mode = workers > 1 ? MS_LISTEN_RESERVE
                            : MS_LISTEN_ALONE;
  if (ms_server_listen(s, host, (int)port, (int)backlog, mode, &err) != 0) {
    free(s->rbuf);
    s->rbuf = NULL;
    return ms_push_fail(L, lua_pushfstring(L, "cannot listen on %s:%d: %s",
                                           host, (int)port, err),
                        "ELISTEN");
  }
  s->closing = 0;
  lua_pushvalue(L, 5);                 /* the handler */
  s->on_request = luaL_ref(L, LUA_REGISTRYINDEX);
  if (lua_getfield(L, 1, "ws_routes") == LUA_TTABLE)
    s->ws_routes = luaL_ref(L, LUA_REGISTRYINDEX);
  else
    lua_pop(L, 1);
  lua_pushvalue(L, -1);
  s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  ms_server_start(s);
  return 1;
}

/* core.route_options(app_options, route_options[, path]): the options of
 * a route, over the defaults; server options may not be set per route.
 * With path, the route's WebSockets are counted apart (metrics.h). */
static int l_route_options(lua_State *L) {
  size_t plen = 0;
  const char *path = luaL_optlstring(L, 3, NULL, &plen);
  lua_settop(L, 3);
  struct ms_route *r = lua_newuserdatauv(L, sizeof *r, 0);
  ms_options_defaults(&r->opts);
  luaL_setmetatable(L, ROUTE_MT);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    struct ms_options server;
    ms_options_defaults(&server);
    ms_options_read(L, 1, &server, 0);     /* checks every app option */
    ms_options_copy_route(&r->opts, &server);
  }
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    ms_options_read(L, 2, &r->opts, 1);
  }
  if (path) r->opts.route = ms_metrics_route(ms_module_get(L)->metrics,
                                             path, plen);
  return 1;
}

static struct ms_server *check_server(lua_State *L) {
  return luaL_checkudata(L, 1, SERVER_MT);
}

static int server_address(lua_State *L) {
  struct ms_server *s = check_server(L);
  lua_pushstring(L, s->host);
  lua_pushinteger(L, s->port);
  return 2;
}

static int server_connections(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_server(L)->nconns);
  return 1;
}

static int server_close_l(lua_State *L) {
  struct ms_server *s = check_server(L);
  if (s->module) ms_server_close(s);
  return 0;
}

/* server:shutdown(timeout): stop accepting, close every WebSocket with
 * 1001 and wait up to timeout seconds (5) for the closing handshakes. */
static int server_shutdown_l(lua_State *L) {
  struct ms_server *s = check_server(L);
  double timeout = luaL_optnumber(L, 2, 5.0);
  luaL_argcheck(L, timeout >= 0, 2, "timeout must not be negative");
  if (s->module) ms_server_shutdown(s, timeout);
  return 0;
}

static int server_gc(lua_State *L) {
  /* only reached at lua_close while serving, or once finished */
  struct ms_server *s = check_server(L);
  if (s->rbuf && s->module) {
    ms_server_stop_accepting(s);
    ev_prepare_stop(s->module->loop, &s->prepare);
    ev_timer_stop(s->module->loop, &s->sweep);
    /* a host's loop may run on after lua_close */
    ev_timer_stop(s->module->loop, &s->shutdown_timer);
    ev_timer_stop(s->module->loop, &s->delivered);
    free(s->rbuf);
    s->rbuf = NULL;
  }
  return 0;
}

static int server_tostring(lua_State *L) {
  struct ms_server *s = check_server(L);
  lua_pushfstring(L, "moonsocket.server (%s:%d, %d connections)", s->host,
                  s->port, (int)s->nconns);
  return 1;
}

void ms_open_server(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "listen", l_listen }, { "route_options", l_route_options },
    { "run", l_run }, { "shutdown", l_shutdown }, { "now", l_now },
    { "worker", l_worker }, { NULL, NULL }
  };
  static const luaL_Reg server_methods[] = {
    { "address", server_address }, { "connections", server_connections },
    { "close", server_close_l }, { "shutdown", server_shutdown_l },
    { NULL, NULL }
  };
  static const luaL_Reg server_meta[] = {
    { "__gc", server_gc },
    { "__close", server_close_l },        /* local s <close> = ... */
    { "__tostring", server_tostring }, { NULL, NULL }
  };
  static const luaL_Reg tls_meta[] = { { "__gc", tls_gc }, { NULL, NULL } };
  if (luaL_newmetatable(L, SERVER_MT)) {
    luaL_setfuncs(L, server_meta, 0);
    luaL_newlib(L, server_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newmetatable(L, ROUTE_MT);
  lua_pop(L, 1);
  if (luaL_newmetatable(L, TLS_MT)) luaL_setfuncs(L, tls_meta, 0);
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
