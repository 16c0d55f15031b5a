/* lws.c - the WebSocket object (moonsocket.ws): its methods, its
 * fields, and publish/subscribe */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "backplane.h"
#include "binding.h"
#include "body.h"
#include "frame.h"
#include "history.h"
#include "transport.h"
#include "utf8.h"
#include "workers.h"

/* The WebSocket at index 1.  Its functions carry the metatable as
 * upvalue 1: the check is a pointer compare, not a registry lookup by
 * name (this runs on every send).  Upvalues 2 and 3 are the strings
 * "sent" and "queued", returned by send without hashing them. */
#define UP_SENT lua_upvalueindex(2)
#define UP_QUEUED lua_upvalueindex(3)

static struct ms_conn *check_ws(lua_State *L) {
  void *p = lua_touserdata(L, 1);
  if (p && lua_getmetatable(L, 1)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) return p;
  }
  luaL_typeerror(L, 1, WS_MT);
  return NULL;
}

/* check_ws for a function that has read its argument count: the
 * metatable it compares stays on the stack, above the arguments (one
 * call less on every send). */
static struct ms_conn *check_ws_keep(lua_State *L) {
  void *p = lua_touserdata(L, 1);
  if (p && lua_getmetatable(L, 1) &&
      lua_rawequal(L, -1, lua_upvalueindex(1)))    /* one call, not two */
    return p;
  luaL_typeerror(L, 1, WS_MT);
  return NULL;
}

/* "text" (the default) or "binary"; 1 for binary.  Short strings are
 * interned: a kind equal to the module's strings is them, and is known
 * by its address before any compare of bytes. */
static int check_kind(lua_State *L, int idx, const struct ms_module *m) {
  if (lua_isnoneornil(L, idx)) return 0;
  size_t n;
  const char *k = luaL_checklstring(L, idx, &n);
  if (k == m->binary) return 1;
  if (k == m->text) return 0;
  if (n == 4 && memcmp(k, "text", 4) == 0) return 0;
  if (n == 6 && memcmp(k, "binary", 6) == 0) return 1;
  return luaL_argerror(L, idx, lua_pushfstring(L, "invalid option '%s'", k));
}

static const char *state_name(const struct ms_conn *c) {
  switch (c->state) {
  case CS_HTTP: return "connecting";
  case CS_OPEN: return "open";
  case CS_CLOSING: case CS_DRAINING: return "closing";
  default: return "closed";
  }
}

const char *ms_why_name(int why) {
  static const char *const names[] = { "local", "peer", "local", "timeout",
                                       "error", "lost", "shutdown" };
  return names[why];
}

/* From a ws method (the upvalues of check_ws). */
static int push_send_status(lua_State *L, enum ms_send_status st) {
  switch (st) {
  case MS_SENT: lua_pushvalue(L, UP_SENT); return 1;
  case MS_QUEUED: lua_pushvalue(L, UP_QUEUED); return 1;
  case MS_DROPPED_CLOSED:
    return ms_push_fail(L, MS_ECLOSED_DROPPED, "ECLOSED");
  default:
    return ms_push_fail(L, "dropped: max_backpressure exceeded",
                        "EBACKPRESSURE");
  }
}

/* A client's send before its WebSocket is open: nothing is queued. */
static int push_connecting(lua_State *L) {
  return ms_push_fail(L, "dropped: the connection is not open yet",
                      "ECONNECTING");
}

/* ws:send(data [, kind [, options]]).  It runs on every message an
 * echo answers: the arguments are read by their count, and a string
 * (data, and a kind that is the module's "text" or "binary") with one
 * call each; anything else takes the checks with their errors. */
static int ws_send(lua_State *L) {
  int nargs = lua_gettop(L);
  struct ms_conn *c = check_ws_keep(L);
  size_t len;
  const char *data = nargs >= 2 ? lua_tolstring(L, 2, &len) : NULL;
  if (!data) {                     /* the error names what was given */
    lua_settop(L, nargs);
    data = luaL_checklstring(L, 2, &len);
  }
  struct ms_server *s = c->server;
  int kind = 0;
  if (nargs >= 3) {
    size_t klen;
    const char *k = lua_tolstring(L, 3, &klen);
    if (k == s->module->binary) kind = 1;
    else if (k != s->module->text) kind = check_kind(L, 3, s->module);
  }
  int compress = 1;                /* { compress = false } sends plain */
  if (nargs >= 4 && !lua_isnil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    if (lua_getfield(L, 4, "compress") != LUA_TNIL)
      compress = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  /* text must be UTF-8: checked unless it is the message the handler
   * was just given, which was checked on its way in (an echo) */
  luaL_argcheck(L, kind || (data == s->validated && len == s->validated_len)
                || utf8_validate(UTF8_ACCEPT, (const uint8_t *)data, len) ==
                   UTF8_ACCEPT, 2,
                "text is not UTF-8 (send it as \"binary\")");
  enum ms_send_status st = ms_conn_send(c, kind ? WS_OP_BINARY : WS_OP_TEXT,
                                        data, len, L, 2, compress);
  if (st == MS_QUEUED && c->co == L) {
    c->flags |= CF_CO_SEND;            /* back-pressure: wait for drain */
    return lua_yield(L, 0);
  }
  if (st == MS_DROPPED_CLOSED && c->state == CS_HTTP)
    return push_connecting(L);
  return push_send_status(L, st);
}

static int ws_ping(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  size_t len;
  const char *data = luaL_optlstring(L, 2, "", &len);
  luaL_argcheck(L, len <= WS_CONTROL_MAX, 2, "ping payload over 125 bytes");
  enum ms_send_status st = ms_conn_send(c, WS_OP_PING, data, len, NULL,
                                        0, 0);
  if (st == MS_DROPPED_CLOSED && c->state == CS_HTTP)
    return push_connecting(L);
  return push_send_status(L, st);
}

static int ws_close(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  lua_Integer code = luaL_optinteger(L, 2, 1000);
  size_t len;
  const char *reason = luaL_optlstring(L, 3, "", &len);
  luaL_argcheck(L, code == 1000 || (code >= 1001 && code <= 1003) ||
                (code >= 1007 && code <= 1014) ||
                (code >= 3000 && code <= 4999), 2, "invalid close code");
  luaL_argcheck(L, len <= WS_CONTROL_MAX - 2, 3, "reason over 123 bytes");
  luaL_argcheck(L, utf8_validate(UTF8_ACCEPT, (const uint8_t *)reason,
                                 len) == UTF8_ACCEPT, 3,
                "reason is not UTF-8");
  if (c->state == CS_HTTP && (c->flags & CF_CLIENT)) {
    /* no WebSocket yet: give up the attempt (close event 1006) */
    ms_conn_abort_with(c, 1006, "closed while connecting", WHY_LOCAL);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (c->state != CS_OPEN)
    return ms_push_fail(L, MS_ECLOSED_REFUSED, "ECLOSED");
  ms_conn_close(c, (int)code, reason, len, WHY_LOCAL);
  lua_pushboolean(L, 1);
  return 1;
}

/* Cut the connection at once, without a close frame: what is queued
 * is dropped and the close handler gets 1006, as for a lost
 * connection (section 7.1.5).  For a server that must let a socket go
 * now, or that shows its clients what a dropped network does. */
static int ws_abort(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  if (c->state == CS_CLOSED)
    return ms_push_fail(L, MS_ECLOSED_REFUSED, "ECLOSED");
  ms_conn_abort_with(c, 1006, "", WHY_LOCAL);
  lua_pushboolean(L, 1);
  return 1;
}

/* local ws <close> = ...: leaving the scope closes the WebSocket, with
 * 1000, or 1011 when the scope is left by an error; nothing when it is
 * already closing or closed. */
static int ws_close_scope(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  int failed = !lua_isnoneornil(L, 2);
  if (c->state == CS_HTTP && (c->flags & CF_CLIENT))
    ms_conn_abort_with(c, 1006, "closed while connecting", WHY_LOCAL);
  else if (c->state == CS_OPEN)
    ms_conn_close(c, failed ? 1011 : 1000, "", 0, WHY_LOCAL);
  return 0;
}

/* A receive's timeout ran out: it returns nil, "timeout". */
static void receive_expired(struct ms_timer *t) {
  struct ms_conn *c = ms_timer_arg(t);
  if (!c->co || !(c->flags & CF_CO_RECV)) return;
  c->flags &= ~CF_CO_RECV;
  lua_pushnil(c->co);
  lua_pushliteral(c->co, "timeout");
  ms_resume(c, 2);
}

/* After a receive with a timeout, whatever resumed it: the timer goes
 * (it is at 3, above ws and the seconds). */
static int receive_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  ms_timer_cancel(lua_touserdata(L, 3), L);
  return lua_gettop(L) - 3;
}

/* ws:receive(timeout): the next message, waiting up to timeout seconds
 * (for ever without): data, kind; nil, "timeout" (the socket stays
 * open); or nil, "closed", code, reason, why, unsent. */
static int ws_receive(lua_State *L) {
  int nargs = lua_gettop(L);
  struct ms_conn *c = check_ws_keep(L);
  double timeout = -1;
  if (nargs >= 2 && !lua_isnil(L, 2)) {
    timeout = luaL_checknumber(L, 2);
    luaL_argcheck(L, timeout >= 0 && timeout <= 1e9, 2,
                  "seconds from 0 expected");
  }
  if (c->co != L)
    return luaL_error(L, "receive() works only in the coroutine of a "
                      "function handler");
  /* closing: messages the peer sent before it saw our close frame are
   * still read, until its close frame */
  if (c->state != CS_OPEN &&
      (c->state != CS_CLOSING || (c->flags & CF_NOTIFIED))) {
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    lua_pushinteger(L, c->close_code);
    lua_pushliteral(L, "");
    lua_pushstring(L, ms_why_name(c->why));
    lua_pushinteger(L, c->unsent);
    return 6;
  }
  c->flags |= CF_CO_RECV;
  ms_conn_resume_reading(c);
  if (timeout < 0) return lua_yield(L, 0);
  lua_settop(L, 2);
  ms_timer_start(L, timeout, receive_expired, c);
  return lua_yieldk(L, 0, 0, receive_done);
}

/* ws.topics: a new array of the names, in subscription order */
static void push_topic_name(void *arg, const char *name, size_t len) {
  lua_State *L = arg;
  lua_pushlstring(L, name, len);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

int ms_aux_get(lua_State *L, struct ms_conn *c, int idx, enum ms_aux w) {
  if (c->flags & CF_AUX_PAIR) {
    lua_getiuservalue(L, idx, UV_AUX);
    int t = lua_rawgeti(L, -1, w);
    lua_remove(L, -2);
    return t;
  }
  if ((w == AUX_DATA) == ((c->flags & CF_AUX_DATA) != 0))
    return lua_getiuservalue(L, idx, UV_AUX);
  lua_pushnil(L);
  return LUA_TNIL;
}

void ms_aux_set(lua_State *L, struct ms_conn *c, int idx, enum ms_aux w) {
  idx = lua_absindex(L, idx);
  if (c->flags & CF_AUX_PAIR) {
    lua_getiuservalue(L, idx, UV_AUX);
    lua_insert(L, -2);
    lua_rawseti(L, -2, w);
    lua_pop(L, 1);
    return;
  }
  int mine = (w == AUX_DATA) == ((c->flags & CF_AUX_DATA) != 0);
  if (!mine) {                       /* the slot holds the other one */
    if (lua_getiuservalue(L, idx, UV_AUX) != LUA_TNIL) {
      if (lua_isnil(L, -2)) {        /* nothing to keep beside it */
        lua_pop(L, 2);
        return;
      }
      lua_createtable(L, 2, 0);      /* both: a table of the two */
      lua_insert(L, -2);
      lua_rawseti(L, -2, w == AUX_DATA ? AUX_REQUEST : AUX_DATA);
      lua_insert(L, -2);
      lua_rawseti(L, -2, w);
      lua_setiuservalue(L, idx, UV_AUX);
      c->flags = (c->flags & ~(uint32_t)CF_AUX_DATA) | CF_AUX_PAIR;
      return;
    }
    lua_pop(L, 1);
    if (w == AUX_DATA) c->flags |= CF_AUX_DATA;
    else c->flags &= ~(uint32_t)CF_AUX_DATA;
  }
  lua_setiuservalue(L, idx, UV_AUX);
}

const char *ms_conn_label(const struct ms_conn *c) {
  return c->flags & CF_LABEL ? c->protocol + strlen(c->protocol) + 1
                             : NULL;
}

int ms_conn_set_label(struct ms_conn *c, const char *label, size_t len) {
  const char *protocol = ms_conn_protocol(c);
  size_t plen = protocol ? strlen(protocol) : 0;
  char *both = malloc(plen + 1 + len + 1);
  if (!both) return -1;
  memcpy(both, protocol ? protocol : "", plen + 1);
  memcpy(both + plen + 1, label, len);
  both[plen + 1 + len] = '\0';
  free(c->protocol);
  c->protocol = both;
  c->flags |= CF_LABEL;
  return 0;
}

/* Push ws.request of the object at idx: the cached table, or one made
 * from the request being opened or from the raw head kept (then
 * cached); nil before an upgrade. */
void ms_push_ws_request(lua_State *L, struct ms_conn *c, int idx) {
  struct ms_server *s = c->server;
  idx = lua_absindex(L, idx);
  int t = ms_aux_get(L, c, idx, AUX_REQUEST);
  if (t == LUA_TTABLE) return;
  struct http_header headers[s->limits.max_headers];
  struct http_request parsed;
  const struct http_request *req = s->opening == c ? s->opening_req : NULL;
  if (!req && t == LUA_TSTRING) {
    size_t len;
    const char *raw = lua_tolstring(L, -1, &len);
    struct http_limits limits = { len, len, s->limits.max_headers };
    parsed.headers = headers;
    if (http_parse_request(raw, len, 0, &limits, &parsed) > 0)
      req = &parsed;
  }
  if (!req) return;
  ms_push_request(L, c, req);
  if (ms_conn_protocol(c)) {
    lua_pushstring(L, ms_conn_protocol(c));
    lua_setfield(L, -2, "protocol");
  }
  lua_remove(L, -2);                   /* the raw head, or nil */
  lua_pushvalue(L, -1);
  ms_aux_set(L, c, idx, AUX_REQUEST);
}

/* The fields of a ws object, beside its methods: their numbers are
 * the values of their names in the methods table. */
enum ws_field {
  WF_REQUEST = 1, WF_DATA, WF_PROTOCOL, WF_HTTP_VERSION, WF_COMPRESSED,
  WF_STATE, WF_TOPICS, WF_BUFFERED_AMOUNT
};

static const struct { const char *name; enum ws_field field; }
ws_fields[] = {
  { "request", WF_REQUEST }, { "data", WF_DATA },
  { "protocol", WF_PROTOCOL }, { "http_version", WF_HTTP_VERSION },
  { "compressed", WF_COMPRESSED }, { "state", WF_STATE },
  { "topics", WF_TOPICS }, { "buffered_amount", WF_BUFFERED_AMOUNT },
};

/* ws[key]: one lookup of the key (already at the top) in the methods
 * table answers a method, a field's number, or nil. */
static int ws_index(lua_State *L) {
  if (lua_gettop(L) != 2) lua_settop(L, 2);
  if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNUMBER) return 1;
  enum ws_field field = (enum ws_field)lua_tointeger(L, 2);
  struct ms_conn *c = check_ws(L);
  switch (field) {
  case WF_REQUEST:
    if (c->flags & CF_REQUEST_DROPPED)
      return luaL_error(L, "ws.request is kept only until open returns; "
                        "set keep_request = true on the route or copy "
                        "what you need into ws.data");
    ms_push_ws_request(L, c, 1);
    break;
  case WF_DATA:
    if (ms_aux_get(L, c, 1, AUX_DATA) == LUA_TNIL) {
      lua_newtable(L);
      lua_pushvalue(L, -1);
      ms_aux_set(L, c, 1, AUX_DATA);
    }
    break;
  case WF_PROTOCOL:
    if (ms_conn_protocol(c)) lua_pushstring(L, ms_conn_protocol(c));
    else lua_pushnil(L);
    break;
  case WF_HTTP_VERSION:                      /* RFC 8441: "2" */
    lua_pushstring(L, c->flags & CF_H2_STREAM ? "2" : "1.1");
    break;
  case WF_COMPRESSED:
    lua_pushboolean(L, c->deflate != NULL);
    break;
  case WF_STATE:
    lua_pushstring(L, state_name(c));
    break;
  case WF_TOPICS:
    lua_newtable(L);
    ms_topic_each_of_conn(c, push_topic_name, L);
    break;
  case WF_BUFFERED_AMOUNT:
    lua_pushinteger(L, (lua_Integer)c->out.bytes);
    break;
  default:
    lua_pushnil(L);
  }
  return 1;
}

static int ws_gc(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  free(c->protocol);
  c->protocol = NULL;
  if (ms_conn_body(c)) {
    ms_body_free(c->body);
    c->body = NULL;
  }
  if (c->state != CS_CLOSED && c->server) {   /* only at lua_close */
    ev_io_stop(c->server->module->loop, &c->io);
    ms_transport_of(c)->close(c);
    c->state = CS_CLOSED;
    ms_conn_free_buffers(c, NULL);
  }
  return 0;
}

static int ws_tostring(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  lua_pushfstring(L, "moonsocket.ws (%s): %p", state_name(c), (void *)c);
  return 1;
}

/* ------------------------------------------------------------------ */
/* Publish and subscribe                                              */
/* ------------------------------------------------------------------ */

static const char *check_topic(lua_State *L, int idx, size_t *len) {
  const char *name = luaL_checklstring(L, idx, len);
  luaL_argcheck(L, *len > 0, idx, "empty topic name");
  return name;
}

/* ws:subscribe(topic [, { since = position, presence = info,
 * ready = fn }]) -> true (subscribed now) | false (already was); on a
 * topic with history and with options, and a table { recovered,
 * position } (lhistory.c).  presence: the socket is present on topic
 * while subscribed now.  ready: the answer goes to fn(ws, ...) instead,
 * at once when it is known, else when Redis or the master gave it. */
enum { SUB_CALLER, SUB_AGAIN, SUB_LATER };   /* who runs subscribe */
static int subscribe(lua_State *L, int how);

/* After a wait for what Redis keeps: the subscribe once more, from the
 * history this process now has. */
static int subscribe_again(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lua_settop(L, 3);
  return subscribe(L, SUB_AGAIN);
}

/* From the runtime, once the answer a caller that could not wait asked
 * for is here: the subscribe (ws, topic and options are the upvalues
 * after check_ws's), its answer to ready. */
static int subscribe_later(lua_State *L) {
  lua_settop(L, 0);
  for (int i = 4; i <= 6; i++) lua_pushvalue(L, lua_upvalueindex(i));
  return subscribe(L, SUB_LATER);
}

static int ws_subscribe(lua_State *L) {
  return subscribe(L, SUB_CALLER);
}

static int ready_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

/* The answer, the n values on top, to ready (at 5) as ready(ws, ...).
 * From the runtime it is a handler's call: an error closes ws (1011). */
static int answer_ready(lua_State *L, struct ms_conn *c, int n, int how) {
  lua_pushvalue(L, 5);
  lua_pushvalue(L, 1);
  lua_rotate(L, -(n + 2), 2);          /* ready, ws, the answer */
  if (how == SUB_LATER) {
    if (ms_pcall(c->server, L, n + 1, 0, "ready handler") != LUA_OK)
      ms_handler_failed(c);
    return 0;
  }
  lua_callk(L, n + 1, 0, 0, ready_k);
  return 0;
}

static int subscribe(lua_State *L, int how) {
  struct ms_conn *c = check_ws(L);
  size_t len;
  const char *name = check_topic(L, 2, &len);
  struct ms_module *m = c->server->module;
  /* published frames are built once, unmasked: for servers' sockets */
  luaL_argcheck(L, !(c->flags & CF_CLIENT), 1,
                "a client connection cannot subscribe");
  int opts = !lua_isnoneornil(L, 3), history = 0, ready = 0;
  if (opts) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    ms_presence_encode_lua(L, 3);      /* at 4: its info, or nil */
    if (lua_getfield(L, 3, "ready") != LUA_TNIL) {     /* at 5 */
      luaL_argcheck(L, lua_isfunction(L, 5), 3,
                    "ready must be a function");
      ready = 5;
    }
    history = lua_getfield(L, 3, "since") != LUA_TNIL ||
              (m->history && ms_history_match(m->history, name, len));
    lua_pop(L, 1);
  }
  int n = 1, now;
  if (c->state != CS_OPEN) {
    n = ms_push_fail(L, MS_ECLOSED_REFUSED, "ECLOSED");
    return ready ? answer_ready(L, c, n, how) : n;
  }
  if (history) {
    int later = 0;
    if (ready && how == SUB_CALLER) {
      /* what the runtime runs if this caller cannot wait */
      for (int i = 1; i <= 3; i++) lua_pushvalue(L, lua_upvalueindex(i));
      for (int i = 1; i <= 3; i++) lua_pushvalue(L, i);
      lua_pushcclosure(L, subscribe_later, 6);
      later = lua_gettop(L);
    }
    n = ms_history_subscribe_lua(L, c, name, len, 3, how == SUB_CALLER
                                 ? subscribe_again : NULL, later);
    if (n == 0) return 0;              /* the answer goes to ready later */
    now = lua_toboolean(L, -n);
  } else {
    int r = ms_topic_subscribe(&m->topics, c, name, len);
    if (r < 0) return luaL_error(L, "out of memory");
    lua_pushboolean(L, r);
    now = r;
  }
  if (now && opts && !lua_isnil(L, 4) && c->state == CS_OPEN)
    ms_presence_join_lua(L, c, name, len, 4);
  return ready ? answer_ready(L, c, n, how) : n;
}

/* ws:unsubscribe(topic) -> true (was subscribed) | false */
static int ws_unsubscribe(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  size_t len;
  const char *name = check_topic(L, 2, &len);
  lua_pushboolean(L, ms_topic_unsubscribe(&c->server->module->topics, c,
                                          name, len));
  return 1;
}

static int ws_is_subscribed(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  size_t len;
  const char *name = check_topic(L, 2, &len);
  lua_pushboolean(L, ms_topic_is_subscribed(c, name, len));
  return 1;
}

/* Publish data (kind at idx+1) to topic at idx, skipping skip.  Text is
 * checked once here, not per subscriber. */
static int publish(lua_State *L, struct ms_module *m, int idx,
                   struct ms_conn *skip) {
  size_t nlen, len;
  const char *name = check_topic(L, idx, &nlen);
  const char *data = luaL_checklstring(L, idx + 1, &len);
  int binary = check_kind(L, idx + 2, m);
  struct ms_server *s = skip ? skip->server : NULL;
  luaL_argcheck(L, binary || (s && data == s->validated &&
                              len == s->validated_len) ||
                utf8_validate(UTF8_ACCEPT, (const uint8_t *)data, len) ==
                UTF8_ACCEPT, idx + 1,
                "text is not UTF-8 (publish it as \"binary\")");
  unsigned op = binary ? WS_OP_BINARY : WS_OP_TEXT;
  m->metrics->publishes++;
  if (m->history) {
    const struct ms_hist_pattern *p = ms_history_match(m->history, name,
                                                       nlen);
    if (p)
      return ms_history_publish_lua(L, m, p, name, nlen, op, data, len,
                                    skip);
  }
  long n = ms_topic_publish(&m->topics, name, nlen, op, data, len, skip);
  if (n < 0) return luaL_error(L, "out of memory");
  /* the other workers of this node through the master; other nodes
   * through Redis (the workers of a node share its id there) */
  if (m->link) ms_workers_publish(m, name, nlen, op, data, len);
  if (m->backplane)
    ms_backplane_publish(m->backplane, name, nlen, op, data, len);
  lua_pushinteger(L, n);
  return 1;
}

/* ws:publish(topic, data [, kind]): every subscriber but ws */
static int ws_publish(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  return publish(L, c->server->module, 2, c);
}

/* publish(topic, data [, kind]) -> the number of sockets reached */
static int l_publish(lua_State *L) {
  return publish(L, ms_module_get(L), 1, NULL);
}

static int l_subscribers(lua_State *L) {
  size_t len;
  const char *name = check_topic(L, 1, &len);
  lua_pushinteger(L, (lua_Integer)ms_topic_subscribers(
                         &ms_module_get(L)->topics, name, len));
  return 1;
}

void ms_open_ws(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "publish", l_publish }, { "subscribers", l_subscribers },
    { NULL, NULL }
  };
  static const luaL_Reg ws_methods[] = {
    { "send", ws_send }, { "ping", ws_ping }, { "close", ws_close },
    { "abort", ws_abort }, { "receive", ws_receive },
    { "subscribe", ws_subscribe },
    { "unsubscribe", ws_unsubscribe }, { "subscribed", ws_is_subscribed },
    { "publish", ws_publish }, { NULL, NULL }
  };
  static const luaL_Reg ws_meta[] = {
    { "__gc", ws_gc }, { "__close", ws_close_scope },
    { "__tostring", ws_tostring }, { NULL, NULL }
  };
  /* every ws function gets the metatable as upvalue 1 (check_ws), and
   * the statuses of a send */
  if (luaL_newmetatable(L, WS_MT)) {
    lua_newtable(L);
    lua_pushvalue(L, -2);
    lua_pushliteral(L, "sent");
    lua_pushliteral(L, "queued");
    luaL_setfuncs(L, ws_methods, 3);
    for (size_t i = 0; i < sizeof ws_fields / sizeof *ws_fields; i++) {
      lua_pushinteger(L, ws_fields[i].field);
      lua_setfield(L, -2, ws_fields[i].name);
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_pushcclosure(L, ws_index, 2);  /* metatable, methods */
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, -1);
    lua_pushliteral(L, "sent");
    lua_pushliteral(L, "queued");
    luaL_setfuncs(L, ws_meta, 3);
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
