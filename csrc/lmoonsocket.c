/* lmoonsocket.c - the Lua module moonsocket.core: its state in the
 * registry, its opening, and the public C API (moonsocket.h) */
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "backplane.h"
#include "binding.h"
#include "client.h"
#include "handshake.h"
#include "history.h"
#include "life.h"
#include "log.h"
#include "moonsocket.h"
#include "presence.h"
#include "resolver.h"
#include "socket.h"
#include "utf8.h"
#include "workers.h"

#define MODULE_KEY "moonsocket.core.state"
#define LOOP_KEY   "moonsocket.core.loop"
#define SERVING_HOOK  "moonsocket.core.serving"
#define SHUTDOWN_HOOK "moonsocket.core.shutdown"

struct ms_module *ms_module_get(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, MODULE_KEY);
  struct ms_module *m = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!m) luaL_error(L, "moonsocket.core is not loaded in this state");
  return m;
}

int ms_push_fail(lua_State *L, const char *message, const char *code) {
  luaL_pushfail(L);
  lua_pushstring(L, message);
  lua_pushstring(L, code);
  return 3;
}

void moonsocket_shutdown(lua_State *L, double timeout) {
  ms_module_shutdown(ms_module_get(L), timeout);
}

int moonsocket_run(lua_State *L) {
  return ms_module_run(ms_module_get(L));
}

/* ------------------------------------------------------------------ */
/* Pure helpers, exposed for tests and tools                          */
/* ------------------------------------------------------------------ */

static int l_accept_key(lua_State *L) {
  size_t len;
  const char *key = luaL_checklstring(L, 1, &len);
  char accept[WS_ACCEPT_LEN + 1];
  if (handshake_accept_key(key, len, accept) != 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "key is not base64 of 16 bytes");
    return 2;
  }
  lua_pushlstring(L, accept, WS_ACCEPT_LEN);
  return 1;
}

static int l_utf8_valid(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, utf8_validate(UTF8_ACCEPT, (const uint8_t *)s, len) ==
                  UTF8_ACCEPT);
  return 1;
}

static int l_parse_request(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  struct http_header headers[64];
  struct http_limits limits = { 8192, 4096, 64 };
  struct http_request req;
  req.headers = headers;
  long r = http_parse_request(s, len, 0, &limits, &req);
  if (r <= 0) {
    luaL_pushfail(L);
    if (r == 0) lua_pushliteral(L, "incomplete");
    else lua_pushinteger(L, -r);
    return 2;
  }
  lua_pushinteger(L, r);
  lua_createtable(L, 0, 4);
  lua_pushlstring(L, req.method, req.method_len);
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, req.target, req.target_len);
  lua_setfield(L, -2, "target");
  lua_pushinteger(L, req.minor_version);
  lua_setfield(L, -2, "minor_version");
  lua_createtable(L, (int)req.nheaders, 0);
  for (size_t i = 0; i < req.nheaders; i++) {
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, headers[i].name, headers[i].name_len);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, headers[i].value, headers[i].value_len);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "headers");
  return 2;
}

/* log(level, message): a line of the log, as the core writes its own
 * ("error", "warn", "info" or "debug"). */
static int l_log(lua_State *L) {
  static const char *const levels[] = { "error", "warn", "info", "debug",
                                        NULL };
  int level = luaL_checkoption(L, 1, NULL, levels) + MS_LOG_ERROR;
  ms_log_module(ms_module_get(L), level, "%s", luaL_checkstring(L, 2));
  return 0;
}

/* hooks(serving, shutdown): the functions the runtime's lifecycle
 * events call (moonsocket.runtime sets them once). */
static int l_hooks(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_setfield(L, LUA_REGISTRYINDEX, SHUTDOWN_HOOK);
  lua_setfield(L, LUA_REGISTRYINDEX, SERVING_HOOK);
  return 0;
}

static void call_hook(struct ms_module *m, const char *key,
                      const char *what) {
  lua_State *L = m->L;
  if (lua_getfield(L, LUA_REGISTRYINDEX, key) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return;
  }
  if (m->worker) lua_pushinteger(L, m->worker);
  else lua_pushnil(L);
  ms_pcall(NULL, L, 1, 0, what);
}

void ms_event_serving(struct ms_module *m) {
  if (m->worker) {                          /* the master's, not ours */
    ms_timers_cancel_all(m);
    ms_lua_lookups_cancel_all(m);
    ms_client_forget(m);
    ms_sockets_stop_waits(m);
    ms_pool_close_all(m, 0);
    ms_resolver_forget(m);
  }
  call_hook(m, SERVING_HOOK, "start hook");
}

void ms_event_shutdown(struct ms_module *m) {
  ms_timers_cancel_all(m);
  ms_sockets_stop_waits(m);
  ms_pool_close_all(m, 1);
  ms_lua_lookups_cancel_all(m);
  call_hook(m, SHUTDOWN_HOOK, "stop hook");
}

/* ------------------------------------------------------------------ */
/* Opening                                                            */
/* ------------------------------------------------------------------ */

void moonsocket_use_loop(lua_State *L, struct ev_loop *loop) {
  lua_pushlightuserdata(L, loop);
  lua_setfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
}

static int module_gc(lua_State *L) {
  struct ms_module *m = lua_touserdata(L, 1);
  ms_module_stop_watchers(m);
  ms_topics_free(&m->topics);
  ms_history_free(m->history);
  m->history = NULL;
  ms_presence_free(m->presence);
  m->presence = NULL;
  ms_workers_free(m);
  ms_metrics_free(m);
  ms_resolver_free(m);
  ms_client_context_free(m);
  ms_sockets_free(m);
  return 0;
}

int luaopen_moonsocket_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "accept_key", l_accept_key }, { "utf8_valid", l_utf8_valid },
    { "parse_request", l_parse_request }, { "log", l_log }, { "hooks", l_hooks },
    { NULL, NULL }
  };
  if (lua_getfield(L, LUA_REGISTRYINDEX, MODULE_KEY) == LUA_TNIL) {
    lua_pop(L, 1);
    struct ms_module *m = lua_newuserdatauv(L, sizeof *m, 0);
    memset(m, 0, sizeof *m);
    m->metrics = m->topics.metrics = &m->own;
    lua_getfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
    m->loop = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!m->loop) m->loop = EV_DEFAULT;
    if (!m->loop) return luaL_error(L, "cannot initialise the event loop");
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    m->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    ms_module_init_watchers(m);
    m->text = lua_pushliteral(L, "text");
    m->ref_text = luaL_ref(L, LUA_REGISTRYINDEX);
    m->binary = lua_pushliteral(L, "binary");
    m->ref_binary = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "message");
    m->ref_message = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, module_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, MODULE_KEY);
  } else {
    lua_pop(L, 1);
  }
  /* each file of the binding adds its functions, and makes the
   * metatables of its types once per state */
  luaL_newlib(L, funcs);
  ms_open_server(L);
  ms_open_ws(L);
  ms_open_history(L);
  ms_open_presence(L);
  ms_open_client(L);
  ms_open_file(L);
  ms_open_timer(L);
  ms_open_request(L);
  ms_open_body(L);
  ms_open_backplane(L);
  ms_open_socket(L);
  ms_open_resolver(L);
  ms_open_metrics(L);
  lua_pushliteral(L, MOONSOCKET_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}

void moonsocket_preload(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_moonsocket_core);
  lua_setfield(L, -2, "moonsocket.core");
  lua_pop(L, 1);
}
