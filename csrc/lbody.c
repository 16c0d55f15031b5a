/* lbody.c - a request's body for Lua: core.body_read and core.body_wait,
 * behind req:body() and req:read(n), and the news of ms_event_body */
#include <lauxlib.h>

#include "binding.h"
#include "body.h"

/* The keys, in a request table that has a body, of its connection and
 * of its body's serial: unique addresses, out of the app's way. */
static const char conn_key, serial_key;

void ms_request_mark_body(lua_State *L, int req_idx, struct ms_conn *c) {
  req_idx = lua_absindex(L, req_idx);
  ms_push_conn(L, c);
  lua_rawsetp(L, req_idx, &conn_key);
  lua_pushinteger(L, c->body->serial);
  lua_rawsetp(L, req_idx, &serial_key);
}

/* The connection of the request table at 1 while its body is the one
 * being read; else NULL, with *has_body whether it had one. */
static struct ms_conn *body_conn(lua_State *L, int *has_body) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_rawgetp(L, 1, &conn_key);
  struct ms_conn *c = luaL_testudata(L, -1, WS_MT);
  lua_rawgetp(L, 1, &serial_key);
  lua_Integer serial = lua_tointeger(L, -1);
  lua_pop(L, 2);
  *has_body = c != NULL;
  struct ms_body *b = c ? ms_conn_body(c) : NULL;
  return b && b->serial == (uint32_t)serial ? c : NULL;
}

/* core.body_read(req [, n]): the whole body (no n), once every byte of
 * it is read; or up to n bytes of it, once there are some.  Returns the
 * bytes; nil at the end of the body (with n); core.WAITING when the
 * app must wait for ms_event_body; or nil, message, code. */
static int core_body_read(lua_State *L) {
  int has_body;
  struct ms_conn *c = body_conn(L, &has_body);
  lua_Integer n = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, lua_isnoneornil(L, 2) || n > 0, 2, "above 0 expected");
  if (!has_body) {                            /* a request without one */
    if (n) lua_pushnil(L);
    else lua_pushliteral(L, "");
    return 1;
  }
  if (!c) return ms_push_fail(L, ms_body_error_text(BODY_ANSWERED),
                              "ECLOSED");
  struct ms_body *b = c->body;
  if (b->len && (n || b->done)) {
    size_t take = n && (size_t)n < b->len ? (size_t)n : b->len;
    lua_pushlstring(L, (const char *)b->buf + b->start, take);
    ms_conn_body_taken(c, take);
    return 1;
  }
  if (b->done) {
    if (n) lua_pushnil(L);
    else lua_pushliteral(L, "");
    return 1;
  }
  if (b->error && b->error != BODY_ANSWERED)
    return ms_push_fail(L, ms_body_error_text(b->error),
                       ms_body_error_code(b->error));
  if (b->error || c->state != CS_HTTP)
    return ms_push_fail(L, ms_body_error_text(BODY_ANSWERED), "ECLOSED");
  ms_conn_body_want(c, n ? WANT_SOME : WANT_ALL);
  if (c->state != CS_HTTP)
    return ms_push_fail(L, ms_body_error_text(BODY_CLOSED), "ECLOSED");
  ms_push_waiting(L);
  return 1;
}

/* core.body_wait(req, fn): fn() is called once when there is news of
 * the body; fn nil: no longer.  The connection keeps fn in its handler
 * slot, which only an upgraded connection uses. */
static int core_body_wait(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_rawgetp(L, 1, &conn_key);
  struct ms_conn *c = luaL_testudata(L, -1, WS_MT);
  if (!c || (c->flags & CF_UPGRADED)) return 0;
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, UV_HANDLER);
  return 0;
}

/* Call the waiter of c's body once, if there is one. */
static void call_waiter(struct ms_conn *c) {
  lua_State *L = c->server->module->L;
  ms_push_conn(L, c);
  if (lua_getiuservalue(L, -1, UV_HANDLER) != LUA_TFUNCTION) {
    lua_pop(L, 2);
    return;
  }
  lua_pushnil(L);
  lua_setiuservalue(L, -3, UV_HANDLER);
  lua_remove(L, -2);
  ms_pcall(c->server, L, 0, 0, "request body reader");
}

void ms_event_body(struct ms_conn *c) {
  if (!(c->flags & CF_UPGRADED)) call_waiter(c);
}

void ms_body_released(struct ms_conn *c) {
  if (!(c->flags & CF_UPGRADED)) call_waiter(c);
}

void ms_open_body(lua_State *L) {
  lua_pushcfunction(L, core_body_read);
  lua_setfield(L, -2, "body_read");
  lua_pushcfunction(L, core_body_wait);
  lua_setfield(L, -2, "body_wait");
}
