/* lclient.c - the client: core.connect makes a ws object, connecting
 * (moonsocket.connect in init.lua parses the URL) */
#include <string.h>

#include <lauxlib.h>

#include "binding.h"
#include "client.h"
#include "life.h"

/* A string field of the table at idx: its value, or NULL when absent;
 * raises naming the option when it is not a string without CR or LF. */
static const char *opt_string(lua_State *L, int idx, const char *key,
                              const char *option) {
  int t = lua_getfield(L, idx, key);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  size_t len = 0;
  const char *v = t == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
  if (!v || strlen(v) != len || strcspn(v, "\r\n") != len)
    luaL_error(L, "option '%s' must be a string without CR or LF", option);
  lua_pop(L, 1);                /* the table keeps the string alive */
  return v;
}

/* The headers a client writes itself (section 4.1), which opts.headers
 * may not repeat. */
static int reserved_header(const char *name) {
  static const char *const names[] = { "host", "upgrade", "connection",
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol",
    "sec-websocket-extensions", "origin", "content-length", NULL };
  for (const char *const *n = names; *n; n++)
    if (http_ieq(name, strlen(name), *n)) return 1;
  return 0;
}

/* opts.protocols: a list of tokens, pushed joined with ", " (or nil) */
static void push_protocols(lua_State *L, int idx) {
  if (lua_getfield(L, idx, "protocols") == LUA_TNIL) return;
  int list = lua_gettop(L);
  if (!lua_istable(L, list))
    luaL_error(L, "option 'protocols' must be a list of names");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_Integer n = (lua_Integer)lua_rawlen(L, list);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    const char *name = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING || !http_is_token(name, strlen(name)))
      luaL_error(L, "option 'protocols' holds an invalid name");
    lua_pop(L, 1);
    if (i > 1) luaL_addstring(&b, ", ");
    luaL_addstring(&b, name);
  }
  if (n == 0) lua_pushnil(L);
  else luaL_pushresult(&b);
  lua_replace(L, list);
}

/* core.connect{ host, port, target, secure, handler, options, protocols,
 * headers, origin, handshake_timeout, tls = { verify, cafile } }: a ws
 * object, connecting.  moonsocket.connect (init.lua) parses the URL. */
static int l_connect(lua_State *L) {
  struct ms_module *m = ms_module_get(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  const char *host = opt_string(L, 1, "host", "host");
  luaL_argcheck(L, host && *host && strlen(host) < 256, 1,
                "'host' must be a name or an address");
  lua_getfield(L, 1, "port");
  lua_Integer port = luaL_optinteger(L, -1, 0);
  luaL_argcheck(L, port >= 1 && port <= 65535, 1,
                "'port' must be an integer from 1 to 65535");
  lua_pop(L, 1);
  const char *target = opt_string(L, 1, "target", "target");
  luaL_argcheck(L, target && target[0] == '/' && !strpbrk(target, " \t"), 1,
                "'target' must be a path (and query)");
  lua_getfield(L, 1, "secure");
  struct ms_client_tls tls = { lua_toboolean(L, -1), 1, NULL };
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "tls") != LUA_TNIL) {
    luaL_argcheck(L, lua_istable(L, -1), 1, "option 'tls' must be a table");
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
      const char *k = lua_tostring(L, -2);
      if (lua_type(L, -2) != LUA_TSTRING ||
          (strcmp(k, "verify") != 0 && strcmp(k, "cafile") != 0))
        luaL_error(L, "unknown option 'tls.%s'", k ? k : "?");
      lua_pop(L, 1);
    }
    if (lua_getfield(L, t, "verify") != LUA_TNIL) {
      if (!lua_isboolean(L, -1))
        luaL_error(L, "option 'tls.verify' must be a boolean");
      tls.verify = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    tls.cafile = opt_string(L, t, "cafile", "tls.cafile");
  }
  lua_pop(L, 1);
  lua_getfield(L, 1, "handler");                          /* at 2 */
  luaL_argcheck(L, lua_istable(L, 2) || lua_isfunction(L, 2), 1,
                "option 'handler' must be a table or a function");
  struct ms_options opts;
  ms_options_defaults(&opts);
  if (lua_getfield(L, 1, "options") != LUA_TNIL) {
    luaL_argcheck(L, lua_istable(L, -1), 1, "'options' must be a table");
    ms_options_read(L, -1, &opts, 1);
    /* a client keeps the request it sent: nothing to choose */
    if (lua_getfield(L, -1, "keep_request") != LUA_TNIL)
      luaL_error(L, "option 'keep_request' belongs to server routes");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  ms_options_read_one(L, 1, "handshake_timeout", &opts);
  const char *origin = opt_string(L, 1, "origin", "origin");
  push_protocols(L, 1);                                   /* at 3 */
  lua_getfield(L, 1, "headers");                          /* at 4 */
  if (!lua_isnil(L, 4)) {
    luaL_argcheck(L, lua_istable(L, 4), 1, "option 'headers' must be a "
                  "table");
    lua_pushnil(L);
    while (lua_next(L, 4)) {
      if (lua_type(L, -2) == LUA_TSTRING &&
          reserved_header(lua_tostring(L, -2)))
        luaL_error(L, "option 'headers': '%s' is set by the client",
                   lua_tostring(L, -2));
      lua_pop(L, 1);
    }
  }
  const char *bad = ms_push_header_lines(L, 4);              /* at 5 */
  if (bad) luaL_error(L, "option 'headers': %s", bad);
  struct ms_server *ctx = ms_client_context(m);
  if (!ctx) return luaL_error(L, "out of memory");

  struct ms_client *cl = lua_newuserdatauv(L, sizeof *cl,
                                           UV_OFFERED);         /* 6 */
  memset(cl, 0, sizeof *cl);
  struct ms_conn *c = &cl->conn;
  c->io.fd = -1;
  c->state = CS_CLOSED;
  c->ref = LUA_NOREF;
  c->server = ctx;
  cl->opts = opts;
  c->opts = &cl->opts;
  luaL_setmetatable(L, WS_MT);
  char key[25];
  if (ms_client_new_key(cl, key) < 0)
    return luaL_error(L, "no random bytes for a Sec-WebSocket-Key");
  /* section 4.1: the request; a v6 address is bracketed in Host */
  int v6 = strchr(host, ':') != NULL;
  int default_port = port == (tls.enabled ? 443 : 80);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "GET %s HTTP/1.1\r\nHost: %s%s%s", target,
                  v6 ? "[" : "", host, v6 ? "]" : "");
  luaL_addvalue(&b);
  if (!default_port) {
    lua_pushfstring(L, ":%d", (int)port);
    luaL_addvalue(&b);
  }
  lua_pushfstring(L, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
                  key);
  luaL_addvalue(&b);
  if (origin) {
    lua_pushfstring(L, "Origin: %s\r\n", origin);
    luaL_addvalue(&b);
  }
  if (!lua_isnil(L, 3)) {
    lua_pushfstring(L, "Sec-WebSocket-Protocol: %s\r\n",
                    lua_tostring(L, 3));
    luaL_addvalue(&b);
  }
  if (opts.deflate.enabled)
    luaL_addstring(&b, "Sec-WebSocket-Extensions: " DEFLATE_CLIENT_OFFER
                   "\r\n");
  lua_pushvalue(L, 5);
  luaL_addvalue(&b);
  luaL_addstring(&b, "\r\n");
  luaL_pushresult(&b);
  ms_aux_set(L, c, 6, AUX_REQUEST);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 6, UV_OFFERED);
  if (lua_isfunction(L, 2)) {
    lua_State *co = lua_newthread(L);
    lua_setiuservalue(L, 6, UV_HANDLER);
    lua_pushvalue(L, 2);
    lua_xmove(L, co, 1);
    c->co = co;
    c->flags |= CF_COROUTINE;
  } else {
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, 6, UV_HANDLER);
  }
  lua_pushvalue(L, 6);
  c->ref = luaL_ref(L, LUA_REGISTRYINDEX);  /* anchored until released */
  ms_client_connect(cl, ctx, host, (int)port, &tls);
  /* the sweep runs often enough for this connection's timeouts */
  ms_server_sweep_for(ctx, &opts);
  lua_settop(L, 6);
  return 1;
}

void ms_open_client(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "connect", l_connect }, { NULL, NULL }
  };
  luaL_setfuncs(L, funcs, 0);
}
