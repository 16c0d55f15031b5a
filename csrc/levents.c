/* levents.c - the events of a connection, delivered to its handler:
 * a table's callbacks, or a coroutine's receive() and send() */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "binding.h"
#include "frame.h"
#include "log.h"

/* The log line of a close: "close ADDR TARGET SECONDS CODE \"REASON\"
 * WHY", or its JSON object, at info. */
static void log_close(struct ms_conn *c, lua_State *L, int code,
                      const char *reason, size_t len) {
  struct ms_server *s = c->server;
  if (s->opts.log_level < MS_LOG_INFO) return;
  int top = lua_gettop(L);
  ms_push_conn(L, c);
  const char *label = NULL;            /* "ADDR TARGET", or its fields */
  if (c->flags & CF_REQUEST_DROPPED) {
    label = ms_conn_label(c);
  } else {
    ms_push_ws_request(L, c, -1);
    if (lua_istable(L, -1)) label = ms_push_label(L, s, -1);
  }
  if (label) {
    char why[MS_LOG_FIELD_MAX];
    double took = ev_now(s->module->loop) - c->opened;
    if (s->opts.log_format == MS_LOG_JSON)
      ms_log_json(s, MS_LOG_INFO, "close", ",%s,\"duration\":%.3f,"
                  "\"code\":%d,\"reason\":\"%s\",\"why\":\"%s\"", label,
                  took, code, ms_log_escape(why, sizeof why, reason, len,
                                            MS_ESCAPE_JSON),
                  ms_why_name(c->why));
    else
      ms_log(s, MS_LOG_INFO, "close %s %.3fs %d \"%s\" %s", label, took,
             code, ms_log_escape(why, sizeof why, reason, len,
                                 MS_ESCAPE_FIELD), ms_why_name(c->why));
  }
  lua_settop(L, top);
}

void ms_event_open(struct ms_conn *c) {
  lua_State *L = c->server->module->L;
  if (c->flags & CF_COROUTINE) {
    ms_push_conn(L, c);
    lua_xmove(L, c->co, 1);            /* handler(ws) */
    ms_resume(c, 1);
    return;
  }
  int n = ms_push_callback(L, c, "open");
  if (n && ms_pcall(c->server, L, n, 0, "open handler") != LUA_OK)
    ms_handler_failed(c);
}

int ms_event_message(struct ms_conn *c, const uint8_t *data, size_t len,
                     unsigned opcode) {
  lua_State *L = c->server->module->L;
  if (c->flags & CF_COROUTINE) {
    if (!c->co) return 1;              /* the handler has returned */
    /* closing: a coroutine takes a message only while it waits in
     * receive(); waiting in send(), it would never see it */
    if (c->state == CS_CLOSING && !(c->flags & CF_CO_RECV)) return 1;
    lua_State *co = c->co;
    struct ms_server *s = c->server;
    c->flags &= ~CF_CO_RECV;
    if (opcode == WS_OP_TEXT) {
      /* the main thread holds the string too: while it is anchored
       * there its address cannot be another string's (s->validated) */
      const char *msg = ms_push_message(L, c, data, len);
      lua_pushvalue(L, -1);
      lua_xmove(L, co, 1);
      s->validated = msg;
      s->validated_len = len;
    } else {                      /* binary: not checked on its way out */
      ms_push_message(co, c, data, len);
    }
    ms_push_kind(co, c->server->module, opcode);
    ms_resume(c, 2);
    if (opcode == WS_OP_TEXT) {
      s->validated = NULL;
      lua_pop(L, 1);
    }
  } else if (ms_call_message(c, data, len, opcode) != LUA_OK) {
    ms_handler_failed(c);
  }
  return (c->state == CS_OPEN || c->state == CS_CLOSING) &&
         !(c->flags & CF_PAUSED);
}

uint8_t *ms_event_message_room(struct ms_conn *c, size_t len) {
  return ms_room_new(c->server->module->L, len);
}

void ms_event_message_room_free(struct ms_conn *c, uint8_t *room) {
  ms_room_free(c->server->module->L, room);
}

void ms_event_pong(struct ms_conn *c, const uint8_t *data, size_t len) {
  lua_State *L = c->server->module->L;
  int n = ms_push_callback(L, c, "pong");
  if (n) {
    lua_pushlstring(L, (const char *)data, len);
    if (ms_pcall(c->server, L, n + 1, 0, "pong handler") != LUA_OK)
      ms_handler_failed(c);
  }
}

void ms_event_drain(struct ms_conn *c) {
  lua_State *L = c->server->module->L;
  if (c->flags & CF_COROUTINE) {
    if (c->co && (c->flags & CF_CO_SEND)) {
      c->flags &= ~CF_CO_SEND;
      lua_pushliteral(c->co, "sent");
      ms_resume(c, 1);
    }
  } else {
    int n = ms_push_callback(L, c, "drain");
    if (n && ms_pcall(c->server, L, n, 0, "drain handler") != LUA_OK)
      ms_handler_failed(c);
  }
}

void ms_event_close(struct ms_conn *c, int code, const char *reason,
                    size_t len) {
  lua_State *L = c->server->module->L;
  c->close_code = (uint16_t)code;
  log_close(c, L, code, reason, len);
  if (c->flags & CF_COROUTINE) {
    if (!c->co) return;
    lua_State *co = c->co;
    if ((c->flags & CF_CLIENT) && c->opened == 0) {
      /* a client that never opened: its handler runs now, and its
       * first receive() tells it how the connect failed */
      ms_push_conn(L, c);
      lua_xmove(L, co, 1);
      ms_resume(c, 1);
    } else if (c->flags & CF_CO_RECV) {
      c->flags &= ~CF_CO_RECV;
      lua_pushnil(co);
      lua_pushliteral(co, "closed");
      lua_pushinteger(co, code);
      lua_pushlstring(co, reason, len);
      lua_pushstring(co, ms_why_name(c->why));
      lua_pushinteger(co, c->unsent);
      ms_resume(c, 6);
    } else if (c->flags & CF_CO_SEND) {
      c->flags &= ~CF_CO_SEND;
      ms_resume(c, ms_push_fail(co, MS_ECLOSED_REFUSED, "ECLOSED"));
    }
    return;
  }
  int n = ms_push_callback(L, c, "close");
  if (n) {
    lua_pushinteger(L, code);
    lua_pushlstring(L, reason, len);
    lua_pushstring(L, ms_why_name(c->why));
    lua_pushinteger(L, c->unsent);
    ms_pcall(c->server, L, n + 4, 0, "close handler");
  }
}

int ms_event_client_protocol(struct ms_conn *c, const char *p, size_t len) {
  lua_State *L = c->server->module->L;
  ms_push_conn(L, c);
  lua_getiuservalue(L, -1, UV_OFFERED);
  size_t olen;
  const char *offered = lua_tolstring(L, -1, &olen);
  int rc = 0;
  if (p) {
    char name[256];
    rc = len < sizeof name && offered ? 0 : -1;
    if (rc == 0) {
      memcpy(name, p, len);
      name[len] = '\0';
      rc = strlen(name) == len && http_is_token(name, len) &&
           http_has_token(offered, olen, name) ? 0 : -1;
    }
    if (rc == 0 && !(c->protocol = strdup(name))) rc = -2;
  }
  lua_pushnil(L);                      /* the offer is answered */
  lua_setiuservalue(L, -3, UV_OFFERED);
  lua_pop(L, 2);
  return rc;
}

const char *ms_event_client_request(struct ms_conn *c, size_t *len) {
  lua_State *L = c->server->module->L;
  ms_push_conn(L, c);
  ms_aux_get(L, c, -1, AUX_REQUEST);
  /* the ws object keeps the string: the pointer stays valid */
  const char *request = lua_tolstring(L, -1, len);
  lua_pop(L, 2);
  return request;
}

void ms_event_release(struct ms_conn *c) {
  lua_State *L = c->server->module->L;
  c->flags &= ~CF_IN_PENDING;
  ms_body_released(c);
  luaL_unref(L, LUA_REGISTRYINDEX, c->ref);
  c->ref = LUA_NOREF;
}

static int new_conn(lua_State *L) {
  struct ms_conn *c = lua_newuserdatauv(L, sizeof *c, NUV);
  memset(c, 0, sizeof *c);
  c->io.fd = -1;
  c->state = CS_CLOSED;
  c->ref = LUA_NOREF;
  luaL_setmetatable(L, WS_MT);
  lua_pushvalue(L, -1);
  c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

struct ms_conn *ms_event_accept(struct ms_server *s) {
  lua_State *L = s->module->L;
  lua_pushcfunction(L, new_conn);
  if (ms_pcall(s, L, 0, 1, "accept") != LUA_OK) return NULL;
  struct ms_conn *c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return c;
}
