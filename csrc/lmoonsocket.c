/* lmoonsocket.c - the Lua module moonsocket.core: servers, WebSocket
 * objects, and the events delivered to Lua handlers */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "backplane.h"
#include "client.h"
#include "frame.h"
#include "handshake.h"
#include "log.h"
#include "moonsocket.h"
#include "server.h"
#include "utf8.h"
#include "workers.h"

#define MODULE_KEY "moonsocket.core.state"
#define LOOP_KEY   "moonsocket.core.loop"
#define SERVER_MT  "moonsocket.server"
#define WS_MT      "moonsocket.ws"
#define FILE_MT    "moonsocket.file"
#define ROUTE_MT   "moonsocket.route"
#define TLS_MT     "moonsocket.tls"

/* An open file to answer a request with: the connection takes fd. */
struct ms_file {
  int fd;
  size_t size;
};

/* Uservalues of a WebSocket object.  The request is made a table only
 * when asked for: while open runs, from the parsed request; after, from
 * the raw head kept by keep_request (a client keeps the head it sent).
 * An idle socket then holds no table of headers, and by default not
 * even the head.  The subprotocol is c->protocol, in C: a slot would
 * cost every socket, the few that have one pay for it.  A client has
 * one more slot, UV_OFFERED: the protocols it offered, until the 101. */
enum { UV_HANDLER = 1, UV_REQUEST, UV_DATA, NUV = UV_DATA, UV_OFFERED };

/* ------------------------------------------------------------------ */
/* Calling Lua                                                         */
/* ------------------------------------------------------------------ */

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Call the function below nargs arguments; log an error with its
 * traceback.  Returns 0 on success. */
static int pcall_logged(struct ms_server *s, lua_State *L, int nargs,
                        int nresults, const char *what) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  int rc = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  if (rc != LUA_OK) {
    ms_log(s, MS_LOG_ERROR, "error in %s: %s", what, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return rc;
}

static void push_conn(lua_State *L, struct ms_conn *c) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
}

/* Push handler[name] and the WebSocket; 0 when there is no such
 * callback (nothing pushed). */
/* Protected: call_field(ws, name, ...) calls handler[name](ws, ...)
 * when the handler has that field through its metatable, whose
 * metamethods may raise. */
static int call_field(lua_State *L) {
  lua_getiuservalue(L, 1, UV_HANDLER);
  if (lua_getfield(L, -1, lua_tostring(L, 2)) == LUA_TNIL) return 0;
  lua_replace(L, 2);               /* ws, function, args..., handler */
  lua_pop(L, 1);
  lua_pushvalue(L, 1);
  lua_copy(L, 2, 1);
  lua_copy(L, -1, 2);              /* function, ws, args... */
  lua_pop(L, 1);
  lua_call(L, lua_gettop(L) - 1, 0);
  return 0;
}

/* Push what calls the callback name of c's handler table: the function
 * and ws, or call_field, ws and name.  Returns how many arguments are
 * pushed after the function (1 or 2), 0 when there is no callback. */
static int push_callback(lua_State *L, struct ms_conn *c, const char *name) {
  push_conn(L, c);
  if (lua_getiuservalue(L, -1, UV_HANDLER) != LUA_TTABLE) {
    lua_pop(L, 2);
    return 0;
  }
  if (name[0] == 'm')                       /* "message": made once */
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->server->module->ref_message);
  else
    lua_pushstring(L, name);
  if (lua_rawget(L, -2) != LUA_TNIL) {     /* the common case */
    lua_remove(L, -2);
    lua_insert(L, -2);                      /* function, ws */
    return 1;
  }
  lua_pop(L, 1);
  if (!lua_getmetatable(L, -1)) {
    lua_pop(L, 2);
    return 0;
  }
  lua_pop(L, 2);
  lua_pushcfunction(L, call_field);
  lua_insert(L, -2);                        /* call_field, ws */
  lua_pushstring(L, name);
  return 2;
}

static void handler_failed(struct ms_conn *c) {
  if (c->state == CS_OPEN)
    ms_conn_close(c, 1011, "internal error", 14, WHY_ERROR);
}

/* "text" or "binary", from strings made once (no hashing per message) */
static void push_kind(lua_State *L, const struct ms_module *m,
                      unsigned opcode) {
  lua_rawgeti(L, LUA_REGISTRYINDEX,
              opcode == WS_OP_TEXT ? m->ref_text : m->ref_binary);
}

/* Resume the coroutine of c with the nargs values on its stack. */
static void resume(struct ms_conn *c, int nargs) {
  lua_State *L = c->server->module->L, *co = c->co;
  int nres;
  int rc = lua_resume(co, L, nargs, &nres);
  if (rc == LUA_YIELD) {
    lua_pop(co, nres);
  } else {
    if (rc != LUA_OK) {
      const char *msg = lua_tostring(co, -1);
      luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
      ms_log(c->server, MS_LOG_ERROR, "error in handler: %s",
             lua_tostring(L, -1));
      lua_pop(L, 1);
      handler_failed(c);
    } else if (c->state == CS_OPEN) {
      ms_conn_close(c, 1000, "", 0, WHY_LOCAL);  /* handler returned */
    }
    c->co = NULL;
    c->flags &= ~(CF_CO_RECV | CF_CO_SEND);
    if (c->state != CS_CLOSED && (c->flags & CF_PAUSED))
      ms_conn_resume_reading(c);        /* read the peer's close frame */
    return;
  }
  if (!(c->flags & (CF_CO_RECV | CF_CO_SEND))) {
    /* nothing will resume it: a yield outside receive() and send() */
    ms_log(c->server, MS_LOG_ERROR, "error in handler: it yielded outside "
           "receive() and send(); the connection is closed");
    c->co = NULL;
    handler_failed(c);
    return;
  }
  if (!(c->flags & CF_CO_RECV)) ms_conn_pause(c);
}

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

static void push_request(lua_State *L, struct ms_conn *c,
                         const struct http_request *req) {
  const char *q = memchr(req->path, '?', req->path_len);
  /* sized to its fields, no more: each handshake's garbage piles up
   * until the collector runs, and an idle socket's RSS with it */
  lua_createtable(L, 0, q ? 9 : 8);
  lua_pushlstring(L, req->method, req->method_len);
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, req->target, req->target_len);
  lua_setfield(L, -2, "target");
  size_t plen = q ? (size_t)(q - req->path) : req->path_len;
  if (plen) lua_pushlstring(L, req->path, plen);
  else lua_pushliteral(L, "/");    /* "http://host": RFC 9112 3.2.1 */
  lua_setfield(L, -2, "path");
  if (q) {
    lua_pushlstring(L, q + 1, req->path_len - plen - 1);
    lua_setfield(L, -2, "query");
  }
  lua_pushstring(L, req->minor_version ? "1.1" : "1.0");
  lua_setfield(L, -2, "version");
  lua_createtable(L, 0, (int)req->nheaders);
  for (size_t i = 0; i < req->nheaders; i++) {
    const struct http_header *h = &req->headers[i];
    luaL_Buffer b;
    char *name = luaL_buffinitsize(L, &b, h->name_len);
    for (size_t k = 0; k < h->name_len; k++) {
      char ch = h->name[k];
      name[k] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
    }
    luaL_pushresultsize(&b, h->name_len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {  /* repeated: join (7230) */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h->value, h->value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value, h->value_len);
    }
    lua_rawset(L, -3);
  }
  if (req->authority) {        /* it replaces Host (RFC 9112 3.2.2) */
    lua_pushlstring(L, req->authority, req->authority_len);
    lua_setfield(L, -2, "host");
  }
  lua_setfield(L, -2, "headers");
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(c->io.fd, (struct sockaddr *)&ss, &len) == 0) {
    char addr[INET6_ADDRSTRLEN];
    int v6 = ss.ss_family == AF_INET6;
    inet_ntop(ss.ss_family, v6 ? (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                               : (void *)&((struct sockaddr_in *)&ss)->sin_addr,
              addr, sizeof addr);
    lua_pushstring(L, addr);
    lua_setfield(L, -2, "remote_addr");
    lua_pushinteger(L, ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                : ((struct sockaddr_in *)&ss)->sin_port));
    lua_setfield(L, -2, "remote_port");
  }
  lua_pushboolean(L, handshake_wanted(req));
  lua_setfield(L, -2, "upgrade");
}

/* The fields the core writes itself: framing and the connection's fate
 * (RFC 9112 sections 6 and 9.6, RFC 9110 section 7.8).  A handler's
 * would contradict them: Transfer-Encoding beside Content-Length. */
static int core_header(const char *name, size_t len) {
  return http_ieq(name, len, "content-length") ||
         http_ieq(name, len, "transfer-encoding") ||
         http_ieq(name, len, "connection") || http_ieq(name, len, "upgrade");
}

/* Push name[0..len) for a log line: at most 64 bytes, what is not
 * printable ASCII escaped (\r, \xHH).  Returns it. */
static const char *push_shown(lua_State *L, const char *name, size_t len) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < len && i < 64; i++) {
    unsigned char ch = (unsigned char)name[i];
    if (ch == '\r') luaL_addstring(&b, "\\r");
    else if (ch == '\n') luaL_addstring(&b, "\\n");
    else if (ch < 0x20 || ch >= 0x7F || ch == '\\' || ch == '\'') {
      char hex[5];
      snprintf(hex, sizeof hex, "\\x%02X", ch);
      luaL_addstring(&b, hex);
    } else {
      luaL_addchar(&b, (char)ch);
    }
  }
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

/* Serialise the headers table at idx as "Name: value\r\n" lines.
 * Returns NULL with them pushed, or why they would break the response
 * (pushed above them): a name that is no token, a value with a control
 * character, a field the core writes. */
static const char *push_header_lines(lua_State *L, int idx) {
  lua_pushliteral(L, "");
  int acc = lua_gettop(L);
  if (!lua_istable(L, idx)) return NULL;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t nl, vl;
    int vt = lua_type(L, -1);
    if (lua_type(L, -2) != LUA_TSTRING ||
        (vt != LUA_TSTRING && vt != LUA_TNUMBER)) {
      const char *why = lua_pushfstring(L, "a header of a %s to a %s",
                                        luaL_typename(L, -2),
                                        luaL_typename(L, -1));
      lua_replace(L, acc + 1);
      lua_settop(L, acc + 1);
      return why;
    }
    const char *n = lua_tolstring(L, -2, &nl);
    const char *v = lua_tolstring(L, -1, &vl);
    const char *why = !http_is_token(n, nl) ? "header name '%s' is not a "
                      "token"
                      : !http_is_field_value(v, vl) ? "header '%s' has a "
                      "control character in its value"
                      : core_header(n, nl) ? "the core writes header '%s'"
                      : NULL;
    if (why) {
      const char *shown = push_shown(L, n, nl);
      why = lua_pushfstring(L, why, shown);
      lua_replace(L, acc + 1);
      lua_settop(L, acc + 1);
      return why;
    }
    lua_pushvalue(L, acc);
    lua_pushfstring(L, "%s: %s\r\n", n, v);
    lua_concat(L, 2);
    lua_replace(L, acc);
    lua_pop(L, 1);
  }
  return NULL;
}

/* Protected: build the request table and run the pipeline on it.
 * Returns the request and the pipeline's first three results. */
static int call_pipeline(lua_State *L) {
  struct ms_conn *c = lua_touserdata(L, 1);
  const struct http_request *req = lua_touserdata(L, 2);
  lua_settop(L, 0);
  push_request(L, c, req);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->server->on_request);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 4);
  return 5;
}

/* The options a route declared, created by core.route_options. */
struct ms_route {
  struct ms_options opts;
};

/* RFC 7230 token: a subprotocol value the 101 may carry. */
static int valid_token(const char *p) {
  if (!*p) return 0;
  for (; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          (*p >= '0' && *p <= '9') || strchr("!#$%&'*+-.^_`|~", *p)))
      return 0;
  return 1;
}

static double sweep_interval(const struct ms_options *o);

/* Give c the options of its route; the sweep then runs often enough
 * for the route's timeouts too. */
static void use_route(struct ms_conn *c, const struct ms_route *route) {
  struct ms_server *s = c->server;
  c->opts = &route->opts;
  double every = sweep_interval(&route->opts);
  if (every < s->sweep.repeat) {
    s->sweep.repeat = every;
    ev_timer_again(s->module->loop, &s->sweep);
  }
}

static const char *why_name(int why) {
  static const char *const names[] = { "local", "peer", "local", "timeout",
                                       "error", "lost", "shutdown" };
  return names[why];
}

/* Push "ADDR TARGET" of the request table at req_idx, the label of a
 * connection's lines in the log; returns it. */
static const char *push_label(lua_State *L, int req_idx) {
  char target[MS_LOG_FIELD_MAX];
  size_t len = 0;
  req_idx = lua_absindex(L, req_idx);
  lua_getfield(L, req_idx, "remote_addr");
  lua_getfield(L, req_idx, "target");
  const char *raw = lua_tolstring(L, -1, &len);
  const char *label = lua_pushfstring(L, "%s %s", lua_tostring(L, -2),
    raw ? ms_log_escape(target, sizeof target, raw, len, MS_ESCAPE_FIELD)
        : NULL);
  lua_replace(L, -3);
  lua_pop(L, 1);
  return label;
}

static void log_open(struct ms_conn *c, lua_State *L, int req_idx) {
  if (c->server->opts.log_level < MS_LOG_INFO) return;
  ms_log(c->server, MS_LOG_INFO, "open %s", push_label(L, req_idx));
  lua_pop(L, 1);
}

/* Push ws.request of the object at idx: the cached table, or one made
 * from the request being opened or from the raw head kept (then
 * cached); nil before an upgrade. */
static void push_ws_request(lua_State *L, struct ms_conn *c, int idx) {
  struct ms_server *s = c->server;
  idx = lua_absindex(L, idx);
  int t = lua_getiuservalue(L, idx, UV_REQUEST);
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
  push_request(L, c, req);
  if (c->protocol) {
    lua_pushstring(L, c->protocol);
    lua_setfield(L, -2, "protocol");
  }
  lua_remove(L, -2);                   /* the raw head, or nil */
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, idx, UV_REQUEST);
}

static void log_close(struct ms_conn *c, lua_State *L, int code,
                      const char *reason, size_t len) {
  if (c->server->opts.log_level < MS_LOG_INFO) return;
  int top = lua_gettop(L);
  push_conn(L, c);
  const char *label = NULL;            /* "ADDR TARGET" */
  if (c->flags & CF_REQUEST_DROPPED) {
    lua_getiuservalue(L, -1, UV_REQUEST);
    label = lua_tostring(L, -1);
  } else {
    push_ws_request(L, c, -1);
    if (lua_istable(L, -1)) label = push_label(L, -1);
  }
  if (label) {
    char why[MS_LOG_FIELD_MAX];
    ms_log(c->server, MS_LOG_INFO, "close %s %.3fs %d \"%s\" %s", label,
           ev_now(c->server->module->loop) - c->opened, code,
           ms_log_escape(why, sizeof why, reason, len, MS_ESCAPE_FIELD),
           why_name(c->why));
  }
  lua_settop(L, top);
}

/* After the open event (its callback returned, or its coroutine first
 * waited or ended): the route's keep_request keeps the request, as
 * its raw head unless it was made a table; else it is dropped, and
 * only "ADDR TARGET" stays, for the close line when that is logged. */
static void end_open(struct ms_conn *c, lua_State *L,
                     const struct http_request *req, int req_idx) {
  push_conn(L, c);
  if (c->opts->keep_request) {
    if (lua_getiuservalue(L, -1, UV_REQUEST) != LUA_TTABLE) {
      lua_pushlstring(L, req->method, req->head_len);
      lua_setiuservalue(L, -3, UV_REQUEST);
    }
    lua_pop(L, 2);
    return;
  }
  c->flags |= CF_REQUEST_DROPPED;
  if (c->server->opts.log_level >= MS_LOG_INFO && !(c->flags & CF_NOTIFIED))
    push_label(L, req_idx);
  else
    lua_pushnil(L);
  lua_setiuservalue(L, -2, UV_REQUEST);
  lua_pop(L, 1);
}

void ms_lua_request(struct ms_conn *c, const struct http_request *req) {
  struct ms_server *s = c->server;
  lua_State *L = s->module->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, call_pipeline);
  lua_pushlightuserdata(L, c);
  lua_pushlightuserdata(L, (void *)req);
  /* after a refused upgrade the client's state is unknown: close */
  int keep = !handshake_wanted(req);
  if (pcall_logged(s, L, 2, 5, "request handler") != LUA_OK) {
    ms_conn_respond_error(c, 500, "the application failed", keep);
    lua_settop(L, top);
    return;
  }
  int req_idx = top + 1, r = top + 2;
  if (c->state != CS_HTTP) {
    lua_settop(L, top);
    return;
  }
  switch (lua_type(L, r)) {
  case LUA_TNUMBER: {
    int status = (int)lua_tointeger(L, r);
    size_t blen = 0;
    const char *body = NULL;
    struct ms_file *file = luaL_testudata(L, r + 2, FILE_MT);
    if (file && file->fd >= 0) blen = file->size;
    else if (lua_type(L, r + 2) == LUA_TSTRING)
      body = lua_tolstring(L, r + 2, &blen);
    const char *bad = status < 200 || status > 999 ? "a status out of "
                      "200..999"
                      : !body && !(file && file->fd >= 0) &&
                        !lua_isnil(L, r + 2) ? "a body that is no string "
                      "or file"
                      : push_header_lines(L, r + 1);
    if (bad) {
      ms_log(s, MS_LOG_ERROR, "request handler returned an invalid response: "
             "%s", bad);
      ms_conn_respond_error(c, 500, "the application failed", keep);
      break;
    }
    size_t hlen;
    const char *hdrs = lua_tolstring(L, -1, &hlen);
    int fd = file ? file->fd : -1;
    if (file) file->fd = -1;          /* the connection owns it now */
    if (!keep) c->flags &= ~CF_KEEP_ALIVE;   /* a refused upgrade */
    ms_conn_respond(c, status, hdrs, hlen, body, blen, fd,
                    http_ieq(req->method, req->method_len, "HEAD"));
    break;
  }
  case LUA_TTABLE: case LUA_TFUNCTION: {
    const char *why;
    if (!handshake_wanted(req)) {
      ms_conn_respond_error(c, 426, "this endpoint accepts WebSocket "
                            "connections only", 1);
      break;
    }
    struct ms_route *route = luaL_testudata(L, r + 1, ROUTE_MT);
    const char *protocol = lua_tostring(L, r + 3);
    if (protocol && !valid_token(protocol)) {
      char field[MS_LOG_FIELD_MAX];
      ms_log(s, MS_LOG_ERROR, "invalid subprotocol '%s'",
             ms_log_escape(field, sizeof field, protocol, strlen(protocol),
                           MS_ESCAPE_FIELD));
      ms_conn_respond_error(c, 500, "the application failed", 0);
      break;
    }
    char *chosen = protocol ? strdup(protocol) : NULL;
    if (protocol && !chosen) {
      ms_conn_respond_error(c, 500, "out of memory", 0);
      break;
    }
    if (route) use_route(c, route);
    int status = ms_conn_upgrade(c, req, protocol, &why);
    if (status) {
      free(chosen);
      c->opts = &s->opts;
      ms_conn_respond_error(c, status, why, 0);
      break;
    }
    c->protocol = chosen;
    push_conn(L, c);
    if (lua_istable(L, r + 2)) {
      lua_pushvalue(L, r + 2);
      lua_setiuservalue(L, -2, UV_DATA);
    }
    log_open(c, L, req_idx);
    if (lua_type(L, r) == LUA_TFUNCTION) {
      lua_State *co = lua_newthread(L);
      lua_setiuservalue(L, -2, UV_HANDLER);
      lua_pushvalue(L, r);
      lua_xmove(L, co, 1);
      c->co = co;
      c->flags |= CF_COROUTINE;
    } else {
      lua_pushvalue(L, r);
      lua_setiuservalue(L, -2, UV_HANDLER);
    }
    /* ws.request is made from req if the open handler asks for it */
    struct ms_conn *was = s->opening;
    const struct http_request *was_req = s->opening_req;
    s->opening = c;
    s->opening_req = req;
    ms_lua_open(c);
    s->opening = was;
    s->opening_req = was_req;
    end_open(c, L, req, req_idx);
    break;
  }
  case LUA_TNIL:
    ms_conn_respond_error(c, 404, "no route for this path", keep);
    break;
  default:
    ms_log(s, MS_LOG_ERROR, "request handler returned a %s",
           luaL_typename(L, r));
    ms_conn_respond_error(c, 500, "the application failed", keep);
  }
  lua_settop(L, top);
}

void ms_lua_open(struct ms_conn *c) {
  lua_State *L = c->server->module->L;
  if (c->flags & CF_COROUTINE) {
    push_conn(L, c);
    lua_xmove(L, c->co, 1);            /* handler(ws) */
    resume(c, 1);
    return;
  }
  int n = push_callback(L, c, "open");
  if (n && pcall_logged(c->server, L, n, 0, "open handler") != LUA_OK)
    handler_failed(c);
}

int ms_lua_message(struct ms_conn *c, const uint8_t *data, size_t len,
                   unsigned opcode) {
  lua_State *L = c->server->module->L;
  if (c->flags & CF_COROUTINE) {
    if (!c->co) return 1;              /* the handler has returned */
    lua_State *co = c->co;
    struct ms_server *s = c->server;
    c->flags &= ~CF_CO_RECV;
    /* the main thread holds the string too: while it is anchored there
     * its address cannot be another string's (see s->validated) */
    const char *msg = lua_pushlstring(L, (const char *)data, len);
    lua_pushvalue(L, -1);
    lua_xmove(L, co, 1);
    push_kind(co, c->server->module, opcode);
    if (opcode == WS_OP_TEXT) {
      s->validated = msg;
      s->validated_len = len;
    }
    resume(c, 2);
    s->validated = NULL;
    lua_pop(L, 1);
  } else {
    int n = push_callback(L, c, "message");
    if (n) {
      struct ms_server *s = c->server;
      /* a copy below the call anchors the string while the handler
       * runs, whatever it does with its argument (see s->validated) */
      const char *msg = lua_pushlstring(L, (const char *)data, len);
      lua_insert(L, -(n + 2));
      lua_pushvalue(L, -(n + 2));
      push_kind(L, s->module, opcode);
      if (opcode == WS_OP_TEXT) {
        s->validated = msg;
        s->validated_len = len;
      }
      int rc = pcall_logged(s, L, n + 2, 0, "message handler");
      s->validated = NULL;
      lua_pop(L, 1);
      if (rc != LUA_OK) handler_failed(c);
    }
  }
  return (c->state == CS_OPEN || c->state == CS_CLOSING) &&
         !(c->flags & CF_PAUSED);
}

void ms_lua_pong(struct ms_conn *c, const uint8_t *data, size_t len) {
  lua_State *L = c->server->module->L;
  int n = push_callback(L, c, "pong");
  if (n) {
    lua_pushlstring(L, (const char *)data, len);
    if (pcall_logged(c->server, L, n + 1, 0, "pong handler") != LUA_OK)
      handler_failed(c);
  }
}

void ms_lua_drain(struct ms_conn *c) {
  lua_State *L = c->server->module->L;
  if (c->flags & CF_COROUTINE) {
    if (c->co && (c->flags & CF_CO_SEND)) {
      c->flags &= ~CF_CO_SEND;
      lua_pushliteral(c->co, "sent");
      resume(c, 1);
    }
  } else {
    int n = push_callback(L, c, "drain");
    if (n && pcall_logged(c->server, L, n, 0, "drain handler") != LUA_OK)
      handler_failed(c);
  }
}

void ms_lua_close(struct ms_conn *c, int code, const char *reason,
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
      push_conn(L, c);
      lua_xmove(L, co, 1);
      resume(c, 1);
    } else if (c->flags & CF_CO_RECV) {
      c->flags &= ~CF_CO_RECV;
      lua_pushnil(co);
      lua_pushliteral(co, "closed");
      lua_pushinteger(co, code);
      lua_pushlstring(co, reason, len);
      lua_pushstring(co, why_name(c->why));
      lua_pushinteger(co, c->unsent);
      resume(c, 6);
    } else if (c->flags & CF_CO_SEND) {
      c->flags &= ~CF_CO_SEND;
      lua_pushnil(co);
      lua_pushliteral(co, "connection closed");
      lua_pushliteral(co, "ECLOSED");
      resume(c, 3);
    }
    return;
  }
  int n = push_callback(L, c, "close");
  if (n) {
    lua_pushinteger(L, code);
    lua_pushlstring(L, reason, len);
    lua_pushstring(L, why_name(c->why));
    lua_pushinteger(L, c->unsent);
    pcall_logged(c->server, L, n + 4, 0, "close handler");
  }
}

int ms_lua_client_protocol(struct ms_conn *c, const char *p, size_t len) {
  lua_State *L = c->server->module->L;
  push_conn(L, c);
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
      rc = strlen(name) == len && valid_token(name) &&
           http_has_token(offered, olen, name) ? 0 : -1;
    }
    if (rc == 0 && !(c->protocol = strdup(name))) rc = -2;
  }
  lua_pushnil(L);                      /* the offer is answered */
  lua_setiuservalue(L, -3, UV_OFFERED);
  lua_pop(L, 2);
  return rc;
}

const char *ms_lua_client_request(struct ms_conn *c, size_t *len) {
  lua_State *L = c->server->module->L;
  push_conn(L, c);
  lua_getiuservalue(L, -1, UV_REQUEST);
  /* the ws object keeps the string: the pointer stays valid */
  const char *request = lua_tolstring(L, -1, len);
  lua_pop(L, 2);
  return request;
}

void ms_lua_release(struct ms_conn *c) {
  lua_State *L = c->server->module->L;
  c->flags &= ~CF_IN_PENDING;
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

/* A connection object, anchored; NULL when memory ran out. */
struct ms_conn *ms_lua_new_conn(struct ms_server *s);
struct ms_conn *ms_lua_new_conn(struct ms_server *s) {
  lua_State *L = s->module->L;
  lua_pushcfunction(L, new_conn);
  if (pcall_logged(s, L, 0, 1, "accept") != LUA_OK) return NULL;
  struct ms_conn *c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return c;
}

/* ------------------------------------------------------------------ */
/* The module and its servers                                          */
/* ------------------------------------------------------------------ */

static struct ms_module *get_module(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, MODULE_KEY);
  struct ms_module *m = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!m) luaL_error(L, "moonsocket.core is not loaded in this state");
  return m;
}

static void server_finish(struct ms_server *s) {
  struct ms_module *m = s->module;
  lua_State *L = m->L;
  ev_prepare_stop(m->loop, &s->prepare);
  ev_timer_stop(m->loop, &s->sweep);
  ev_timer_stop(m->loop, &s->shutdown_timer);
  free(s->rbuf);
  s->rbuf = NULL;
  ms_server_free_chunks(s);
  deflate_buf_free(&s->zbuf);
  for (struct ms_server **p = &m->servers; *p; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      break;
    }
  luaL_unref(L, LUA_REGISTRYINDEX, s->on_request);
  luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
  s->on_request = s->ref = LUA_NOREF;
}

static void server_close(struct ms_server *s);

static void server_shutdown_expired(struct ev_loop *loop, ev_timer *w,
                                    int rev) {
  struct ms_server *s = (struct ms_server *)((char *)w -
                         offsetof(struct ms_server, shutdown_timer));
  (void)rev;
  while (s->conns) ms_conn_abort(s->conns, 1006);
  ev_feed_event(loop, &s->prepare, EV_PREPARE);
}

/* Close gracefully: what is left after timeout seconds is cut off. */
void ms_server_shutdown(struct ms_server *s, double timeout) {
  server_close(s);
  if (s->rbuf && !ev_is_active(&s->shutdown_timer)) {
    ev_timer_set(&s->shutdown_timer, timeout, 0);
    ev_timer_start(s->module->loop, &s->shutdown_timer);
  }
}

static void server_close(struct ms_server *s) {
  if (s->closing) return;
  s->closing = 1;
  ms_server_stop_accepting(s);
  struct ms_conn *c = s->conns;
  for (size_t i = 0, n = s->nconns; i < n && c; i++) {
    struct ms_conn *next = c->next;
    if (c->state == CS_OPEN)
      ms_conn_close(c, 1001, "server shutting down", 20, WHY_SHUTDOWN);
    else
      ms_conn_end_http(c);
    c = next;
  }
  ev_feed_event(s->module->loop, &s->prepare, EV_PREPARE);
}

void ms_module_check_done(struct ms_module *m) {
  struct ms_server *s = m->servers, *next;
  for (; s; s = next) {
    next = s->next;
    if (s->closing && s->nconns == 0 && !s->pending && !s->released)
      server_finish(s);
  }
  /* the last server is gone: Redis must not keep the loop going */
  if (!m->servers) ms_backplane_close_module(m);
  if (m->shutting_down && !m->servers) {
    ev_timer_stop(m->loop, &m->shutdown_timer);
    if (m->running) ev_break(m->loop, EVBREAK_ALL);
  }
}

static void shutdown_expired(struct ev_loop *loop, ev_timer *w, int rev) {
  struct ms_module *m = (struct ms_module *)((char *)w -
                         offsetof(struct ms_module, shutdown_timer));
  (void)loop;
  (void)rev;
  for (struct ms_server *s = m->servers; s; s = s->next)
    while (s->conns) ms_conn_abort(s->conns, 1006);
  while (m->client && m->client->conns)
    ms_conn_abort(m->client->conns, 1006);
  for (struct ms_server *s = m->servers; s; s = s->next)
    ev_feed_event(m->loop, &s->prepare, EV_PREPARE);
  if (!m->servers && m->running) ev_break(m->loop, EVBREAK_ALL);
}

static void module_shutdown(struct ms_module *m, double timeout) {
  if (m->shutting_down) return;
  m->shutting_down = 1;
  ms_log_flush(m);
  ms_client_shutdown(m);
  for (struct ms_server *s = m->servers; s; s = s->next)
    ms_server_shutdown(s, timeout);
  /* only the loop moonsocket_run runs is broken: a host's loop goes on
   * with the host's work, and no watcher of ours is left to keep it */
  if (m->servers) {
    ev_timer_init(&m->shutdown_timer, shutdown_expired, timeout, 0);
    ev_timer_start(m->loop, &m->shutdown_timer);
  } else {
    ms_backplane_close_module(m);
    if (m->running) ev_break(m->loop, EVBREAK_ALL);
  }
}

void moonsocket_shutdown(lua_State *L, double timeout) {
  module_shutdown(get_module(L), timeout);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents) {
  struct ms_module *m = w->data;
  (void)revents;
  if (m->shutting_down) {              /* a second signal: stop now */
    shutdown_expired(loop, &m->shutdown_timer, 0);
    return;
  }
  ms_log_flush(m);                     /* the count before the news */
  ms_log(NULL, MS_LOG_INFO, "signal %d: shutting down", w->signum);
  module_shutdown(m, 5.0);
}

static void sighup_cb(struct ev_loop *loop, ev_signal *w, int revents);

int moonsocket_run(lua_State *L) {
  struct ms_module *m = get_module(L);
  /* OpenSSL writes to sockets without MSG_NOSIGNAL, and sendfile has no
   * such flag: a peer that left must not kill the process */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
  /* after a shutdown nothing is served any more: a reader or any other
   * watcher the app still holds must not keep the loop (and the runner,
   * which runs it once the script has returned) going */
  if (m->shutting_down && !m->servers) return 0;
  if (m->nworkers > 1 && !m->worker && !m->running &&
      ms_workers_run(m) == 0)
    return 0;                          /* the master, done */
  ev_signal_init(&m->sigint, signal_cb, SIGINT);
  ev_signal_init(&m->sigterm, signal_cb, SIGTERM);
  ev_signal_init(&m->sighup, sighup_cb, SIGHUP);
  m->sigint.data = m->sigterm.data = m->sighup.data = m;
  ev_signal_start(m->loop, &m->sigint);
  ev_signal_start(m->loop, &m->sigterm);
  ev_signal_start(m->loop, &m->sighup);
  for (int i = 0; i < 3; i++) ev_unref(m->loop);  /* signals keep nothing */
  int was_running = m->running;
  m->running = 1;
  ev_run(m->loop, 0);
  m->running = was_running;
  for (int i = 0; i < 3; i++) ev_ref(m->loop);
  ev_signal_stop(m->loop, &m->sigint);
  ev_signal_stop(m->loop, &m->sigterm);
  ev_signal_stop(m->loop, &m->sighup);
  return 0;
}

static int l_run(lua_State *L) {
  moonsocket_run(L);
  return 0;
}

static int l_shutdown(lua_State *L) {
  double timeout = luaL_optnumber(L, 1, 5.0);
  luaL_argcheck(L, timeout >= 0, 1, "timeout must not be negative");
  moonsocket_shutdown(L, timeout);
  return 0;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, ev_now(get_module(L)->loop));
  return 1;
}

static double sweep_interval(const struct ms_options *o) {
  double t = 1.0;
  if (o->idle_timeout > 0 && o->idle_timeout / 4 < t) t = o->idle_timeout / 4;
  if (o->keep_alive_timeout > 0 && o->keep_alive_timeout / 4 < t)
    t = o->keep_alive_timeout / 4;
  if (o->close_timeout / 4 < t) t = o->close_timeout / 4;
  if (o->message_timeout > 0 && o->message_timeout / 4 < t)
    t = o->message_timeout / 4;
  if (o->handshake_timeout / 4 < t) t = o->handshake_timeout / 4;
  if (o->keep_alive_interval > 0 && o->keep_alive_interval / 4 < t)
    t = o->keep_alive_interval / 4;
  return t < 0.005 ? 0.005 : t;
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

static void sighup_cb(struct ev_loop *loop, ev_signal *w, int revents) {
  struct ms_module *m = w->data;
  (void)loop;
  (void)revents;
  for (struct ms_server *s = m->servers; s; s = s->next) {
    if (!s->tls) continue;
    char why[512];
    if (ms_tls_load(s->tls, why, sizeof why) == 0)
      ms_log(s, MS_LOG_INFO, "SIGHUP: certificates of %s:%d reloaded",
             s->host, s->port);
    else
      ms_log(s, MS_LOG_ERROR, "SIGHUP: certificates of %s:%d kept: %s",
             s->host, s->port, why);
  }
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
  struct ms_module *m = get_module(L);
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
  struct ms_tls *tls = NULL;
  if (lua_getfield(L, 1, "tls") != LUA_TNIL) {       /* at index 6 */
    luaL_argcheck(L, lua_istable(L, -1), 1, "'tls' must be a table");
    tls = read_tls(L, 6);                           /* at index 7 */
    char why[512];
    if (ms_tls_load(tls, why, sizeof why) != 0) {
      luaL_pushfail(L);
      lua_pushstring(L, why);
      lua_pushliteral(L, "ETLS");
      return 3;
    }
  }

  struct ms_server *s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  if (tls) {
    lua_pushvalue(L, 7);
    lua_setiuservalue(L, -2, 1);      /* the server keeps its contexts */
    s->tls = tls;
  }
  s->listener.fd = -1;
  s->on_request = s->ref = LUA_NOREF;
  s->closing = 1;                      /* closed until it listens */
  luaL_setmetatable(L, SERVER_MT);
  s->module = m;
  s->opts = opts;
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
    luaL_pushfail(L);
    lua_pushfstring(L, "cannot listen on %s:%d: %s", host, (int)port, err);
    lua_pushliteral(L, "ELISTEN");
    return 3;
  }
  s->closing = 0;
  lua_pushvalue(L, 5);                 /* the handler */
  s->on_request = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  ev_prepare_init(&s->prepare, ms_server_prepare_cb);
  ev_prepare_start(m->loop, &s->prepare);
  double every = sweep_interval(&opts);
  ev_timer_init(&s->sweep, ms_server_sweep_cb, every, every);
  ev_timer_start(m->loop, &s->sweep);
  ev_init(&s->shutdown_timer, server_shutdown_expired);
  s->next = m->servers;
  m->servers = s;
  return 1;
}

/* core.route_options(app_options, route_options): the options of a
 * route, over the defaults; server options may not be set per route. */
static int l_route_options(lua_State *L) {
  lua_settop(L, 2);
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
  if (s->module) server_close(s);
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

/* ------------------------------------------------------------------ */
/* WebSocket objects                                                   */
/* ------------------------------------------------------------------ */

/* The WebSocket at index 1.  Its functions carry the metatable as
 * upvalue 1: the check is a pointer compare, not a registry lookup by
 * name (this runs on every send). */
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

/* "text" (the default) or "binary"; 1 for binary. */
static int check_kind(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  size_t n;
  const char *k = luaL_checklstring(L, idx, &n);
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

static int push_send_status(lua_State *L, enum ms_send_status st) {
  switch (st) {
  case MS_SENT: lua_pushliteral(L, "sent"); return 1;
  case MS_QUEUED: lua_pushliteral(L, "queued"); return 1;
  case MS_DROPPED_CLOSED:
    luaL_pushfail(L);
    lua_pushliteral(L, "dropped: the connection is closed");
    lua_pushliteral(L, "ECLOSED");
    return 3;
  default:
    luaL_pushfail(L);
    lua_pushliteral(L, "dropped: max_backpressure exceeded");
    lua_pushliteral(L, "EBACKPRESSURE");
    return 3;
  }
}

/* A client's send before its WebSocket is open: nothing is queued. */
static int push_connecting(lua_State *L) {
  luaL_pushfail(L);
  lua_pushliteral(L, "dropped: the connection is not open yet");
  lua_pushliteral(L, "ECONNECTING");
  return 3;
}

static int ws_send(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int kind = check_kind(L, 3);
  int compress = 1;                /* { compress = false } sends plain */
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    if (lua_getfield(L, 4, "compress") != LUA_TNIL)
      compress = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  /* text must be UTF-8: checked unless it is the message the handler
   * was just given, which was checked on its way in (an echo) */
  struct ms_server *s = c->server;
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
  if (c->state != CS_OPEN) {
    luaL_pushfail(L);
    lua_pushliteral(L, "the connection is already closing or closed");
    lua_pushliteral(L, "ECLOSED");
    return 3;
  }
  ms_conn_close(c, (int)code, reason, len, WHY_LOCAL);
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

static int ws_receive(lua_State *L) {
  struct ms_conn *c = check_ws(L);
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
    lua_pushstring(L, why_name(c->why));
    lua_pushinteger(L, c->unsent);
    return 6;
  }
  c->flags |= CF_CO_RECV;
  ms_conn_resume_reading(c);
  return lua_yield(L, 0);
}

/* ws.topics: a new array of the names, in subscription order */
static void push_topic_name(void *arg, const char *name, size_t len) {
  lua_State *L = arg;
  lua_pushlstring(L, name, len);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

static int ws_index(lua_State *L) {
  lua_pushvalue(L, 2);                 /* methods first: the common case */
  if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) return 1;
  struct ms_conn *c = check_ws(L);
  const char *key = lua_tostring(L, 2);
  if (!key) return 1;
  if (strcmp(key, "request") == 0) {
    if (c->flags & CF_REQUEST_DROPPED)
      return luaL_error(L, "ws.request is kept only until open returns; "
                        "set keep_request = true on the route or copy "
                        "what you need into ws.data");
    push_ws_request(L, c, 1);
  } else if (strcmp(key, "data") == 0) {
    if (lua_getiuservalue(L, 1, UV_DATA) == LUA_TNIL) {
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_setiuservalue(L, 1, UV_DATA);
    }
  } else if (strcmp(key, "protocol") == 0) {
    if (c->protocol) lua_pushstring(L, c->protocol);
    else lua_pushnil(L);
  } else if (strcmp(key, "compressed") == 0) {
    lua_pushboolean(L, c->deflate != NULL);
  } else if (strcmp(key, "state") == 0) {
    lua_pushstring(L, state_name(c));
  } else if (strcmp(key, "topics") == 0) {
    lua_newtable(L);
    ms_topic_each_of_conn(c, push_topic_name, L);
  } else if (strcmp(key, "buffered_amount") == 0) {
    lua_pushinteger(L, (lua_Integer)c->out_bytes);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

static int ws_gc(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  free(c->protocol);
  c->protocol = NULL;
  if (c->state != CS_CLOSED && c->server) {   /* only at lua_close */
    ev_io_stop(c->server->module->loop, &c->io);
    if (c->ssl) SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->io.fd);
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
/* Publish and subscribe                                               */
/* ------------------------------------------------------------------ */

static const char *check_topic(lua_State *L, int idx, size_t *len) {
  const char *name = luaL_checklstring(L, idx, len);
  luaL_argcheck(L, *len > 0, idx, "empty topic name");
  return name;
}

static int push_closed(lua_State *L) {
  luaL_pushfail(L);
  lua_pushliteral(L, "the connection is closing or closed");
  lua_pushliteral(L, "ECLOSED");
  return 3;
}

static int push_no_memory(lua_State *L) {
  luaL_pushfail(L);
  lua_pushliteral(L, "out of memory");
  lua_pushliteral(L, "ENOMEM");
  return 3;
}

/* ws:subscribe(topic) -> true (subscribed now) | false (already was) */
static int ws_subscribe(lua_State *L) {
  struct ms_conn *c = check_ws(L);
  size_t len;
  const char *name = check_topic(L, 2, &len);
  /* published frames are built once, unmasked: for servers' sockets */
  luaL_argcheck(L, !(c->flags & CF_CLIENT), 1,
                "a client connection cannot subscribe");
  if (c->state != CS_OPEN) return push_closed(L);
  int r = ms_topic_subscribe(&c->server->module->topics, c, name, len);
  if (r < 0) return push_no_memory(L);
  lua_pushboolean(L, r);
  return 1;
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
  int binary = check_kind(L, idx + 2);
  struct ms_server *s = skip ? skip->server : NULL;
  luaL_argcheck(L, binary || (s && data == s->validated &&
                              len == s->validated_len) ||
                utf8_validate(UTF8_ACCEPT, (const uint8_t *)data, len) ==
                UTF8_ACCEPT, idx + 1,
                "text is not UTF-8 (publish it as \"binary\")");
  unsigned op = binary ? WS_OP_BINARY : WS_OP_TEXT;
  long n = ms_topic_publish(&m->topics, name, nlen, op, data, len, skip);
  if (n < 0) return push_no_memory(L);
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
  return publish(L, get_module(L), 1, NULL);
}

/* worker() -> this worker's number (1..n), or nil without workers */
static int l_worker(lua_State *L) {
  struct ms_module *m = get_module(L);
  if (m->worker) lua_pushinteger(L, m->worker);
  else luaL_pushfail(L);
  return 1;
}

/* backplane(options): publish through Redis to every node */
static int l_backplane(lua_State *L) {
  return ms_lua_backplane(L, get_module(L));
}

static int l_subscribers(lua_State *L) {
  size_t len;
  const char *name = check_topic(L, 1, &len);
  lua_pushinteger(L, (lua_Integer)ms_topic_subscribers(
                         &get_module(L)->topics, name, len));
  return 1;
}

/* ------------------------------------------------------------------ */
/* Files, for static content: opened here, sent by sendfile            */
/* ------------------------------------------------------------------ */

static int push_errno(lua_State *L, const char *what, const char *path) {
  int e = errno;
  static const struct { int e; const char *code; } codes[] = {
    { ENOENT, "ENOENT" }, { ENOTDIR, "ENOTDIR" }, { EACCES, "EACCES" },
    { EISDIR, "EISDIR" }, { ELOOP, "ELOOP" }, { ENAMETOOLONG, "ENAMETOOLONG" },
    { EMFILE, "EMFILE" },
  };
  const char *code = "EIO";
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
    if (codes[i].e == e) code = codes[i].code;
  luaL_pushfail(L);
  lua_pushfstring(L, "%s %s: %s", what, path, strerror(e));
  lua_pushstring(L, code);
  return 3;
}

/* core.open_file(path) -> file | nil, message, code.  Regular files
 * only; file.size, file.mtime (s), file.mtime_ns, file.ino. */
static int l_open_file(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, strlen(path) == len, 1, "path contains a NUL byte");
  struct ms_file *f = lua_newuserdatauv(L, sizeof *f, 1);
  f->fd = -1;                          /* closed until it is open */
  f->size = 0;
  luaL_setmetatable(L, FILE_MT);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return push_errno(L, "cannot open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return push_errno(L, "cannot stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    errno = S_ISDIR(st.st_mode) ? EISDIR : EACCES;
    return push_errno(L, "cannot serve", path);
  }
  f->fd = fd;
  f->size = (size_t)st.st_size;
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec);
  lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_nsec);
  lua_setfield(L, -2, "mtime_ns");
  lua_pushinteger(L, (lua_Integer)st.st_ino);
  lua_setfield(L, -2, "ino");
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static int file_close(lua_State *L) {
  struct ms_file *f = luaL_checkudata(L, 1, FILE_MT);
  if (f->fd >= 0) {
    close(f->fd);
    f->fd = -1;
  }
  return 0;
}

static int file_index(lua_State *L) {
  luaL_checkudata(L, 1, FILE_MT);
  if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
  }
  if (lua_isnil(L, -1) && lua_type(L, 2) == LUA_TSTRING &&
      strcmp(lua_tostring(L, 2), "close") == 0)
    lua_pushcfunction(L, file_close);
  return 1;
}

/* core.realpath(path) -> absolute path without links | nil, msg, code */
static int l_realpath(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, strlen(path) == len, 1, "path contains a NUL byte");
  char buf[PATH_MAX];
  if (!realpath(path, buf)) return push_errno(L, "cannot resolve", path);
  lua_pushstring(L, buf);
  return 1;
}

/* core.http_date(seconds) -> "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 7231
 * section 7.1.1.1), and core.parse_http_date(s) -> seconds | nil */
static int l_http_date(lua_State *L) {
  time_t t = (time_t)luaL_checkinteger(L, 1);
  struct tm tm;
  char buf[64];
  if (!gmtime_r(&t, &tm)) return luaL_argerror(L, 1, "time out of range");
  strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  lua_pushstring(L, buf);
  return 1;
}

static int l_parse_http_date(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!end || *end) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)timegm(&tm));
  return 1;
}

/* ------------------------------------------------------------------ */
/* Pure helpers, exposed for tests and tools                           */
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

/* ------------------------------------------------------------------ */
/* Clients                                                             */
/* ------------------------------------------------------------------ */

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
    if (lua_type(L, -1) != LUA_TSTRING || !valid_token(name))
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
  struct ms_module *m = get_module(L);
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
  if (lua_getfield(L, 1, "handshake_timeout") != LUA_TNIL) {
    lua_Number t = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || !(t >= 0.001 && t <= 86400))
      luaL_error(L, "option 'handshake_timeout' must be a number of "
                 "seconds from 0.001 to 86400");
    opts.handshake_timeout = t;
  }
  lua_pop(L, 1);
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
  const char *bad = push_header_lines(L, 4);              /* at 5 */
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
  lua_setiuservalue(L, 6, UV_REQUEST);
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
  double every = sweep_interval(&opts);
  if (!ev_is_active(&ctx->sweep) || every < ctx->sweep.repeat) {
    ctx->sweep.repeat = every;
    ev_timer_again(m->loop, &ctx->sweep);
  }
  lua_settop(L, 6);
  return 1;
}

/* core.reader(fd, fn): fn(data) for the bytes that arrive on fd, as
 * they arrive, then fn(nil) at its end; a reader object whose close()
 * stops it.  For a terminal or a pipe (stdin) beside the sockets. */
#define READER_MT "moonsocket.reader"

struct ms_reader {
  ev_io io;
  struct ms_module *module;
  int ref;                      /* anchors the reader while it reads */
  int fn;
};

static void reader_stop(struct ms_reader *r, lua_State *L) {
  if (r->ref == LUA_NOREF) return;
  ev_io_stop(r->module->loop, &r->io);
  luaL_unref(L, LUA_REGISTRYINDEX, r->fn);
  luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
  r->ref = r->fn = LUA_NOREF;
}

static void reader_cb(struct ev_loop *loop, ev_io *w, int revents) {
  struct ms_reader *r = (struct ms_reader *)w;
  lua_State *L = r->module->L;
  char buf[16384];
  (void)loop;
  (void)revents;
  ssize_t n = read(w->fd, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn);
  if (n > 0) {
    lua_pushlstring(L, buf, (size_t)n);
  } else {
    lua_pushnil(L);                      /* the end, or an error */
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
    reader_stop(r, L);
    lua_insert(L, -3);                   /* anchored for the call */
  }
  pcall_logged(NULL, L, 1, 0, "reader");
  if (n <= 0) lua_pop(L, 1);
}

static int l_reader(lua_State *L) {
  struct ms_module *m = get_module(L);
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "not a descriptor");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  struct ms_reader *r = lua_newuserdatauv(L, sizeof *r, 0);
  r->module = m;
  r->ref = r->fn = LUA_NOREF;
  luaL_setmetatable(L, READER_MT);
  lua_pushvalue(L, 2);
  r->fn = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  ev_io_init(&r->io, reader_cb, (int)fd, EV_READ);
  ev_io_start(m->loop, &r->io);
  return 1;
}

static int reader_close(lua_State *L) {
  reader_stop(luaL_checkudata(L, 1, READER_MT), L);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Opening                                                             */
/* ------------------------------------------------------------------ */

void moonsocket_use_loop(lua_State *L, struct ev_loop *loop) {
  lua_pushlightuserdata(L, loop);
  lua_setfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
}

static int module_gc(lua_State *L) {
  struct ms_module *m = lua_touserdata(L, 1);
  ms_log_flush(m);
  if (ev_is_active(&m->shutdown_timer))
    ev_timer_stop(m->loop, &m->shutdown_timer);
  ms_topics_free(&m->topics);
  ms_workers_free(m);
  ms_client_context_free(m);
  return 0;
}

int luaopen_moonsocket_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "listen", l_listen }, { "run", l_run }, { "shutdown", l_shutdown },
    { "now", l_now }, { "accept_key", l_accept_key },
    { "utf8_valid", l_utf8_valid }, { "parse_request", l_parse_request },
    { "open_file", l_open_file }, { "realpath", l_realpath },
    { "http_date", l_http_date }, { "parse_http_date", l_parse_http_date },
    { "route_options", l_route_options },
    { "publish", l_publish }, { "subscribers", l_subscribers },
    { "backplane", l_backplane },
    { "worker", l_worker }, { "connect", l_connect },
    { "reader", l_reader },
    { NULL, NULL }
  };
  static const luaL_Reg server_methods[] = {
    { "address", server_address }, { "connections", server_connections },
    { "close", server_close_l }, { "shutdown", server_shutdown_l },
    { NULL, NULL }
  };
  static const luaL_Reg ws_methods[] = {
    { "send", ws_send }, { "ping", ws_ping }, { "close", ws_close },
    { "receive", ws_receive }, { "subscribe", ws_subscribe },
    { "unsubscribe", ws_unsubscribe }, { "subscribed", ws_is_subscribed },
    { "publish", ws_publish }, { NULL, NULL }
  };

  if (lua_getfield(L, LUA_REGISTRYINDEX, MODULE_KEY) == LUA_TNIL) {
    lua_pop(L, 1);
    struct ms_module *m = lua_newuserdatauv(L, sizeof *m, 0);
    memset(m, 0, sizeof *m);
    lua_getfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
    m->loop = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!m->loop) m->loop = EV_DEFAULT;
    if (!m->loop) return luaL_error(L, "cannot initialise the event loop");
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    m->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    ev_init(&m->shutdown_timer, shutdown_expired);
    ms_log_init(m);
    lua_pushliteral(L, "text");
    m->ref_text = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "binary");
    m->ref_binary = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "message");
    m->ref_message = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, module_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, MODULE_KEY);

    luaL_newmetatable(L, SERVER_MT);
    luaL_newlib(L, server_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, server_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, server_close_l);   /* local s <close> = ... */
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, server_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newmetatable(L, ROUTE_MT);
    lua_pop(L, 1);

    luaL_newmetatable(L, READER_MT);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, reader_close);
    lua_setfield(L, -2, "close");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, reader_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, reader_close);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    luaL_newmetatable(L, TLS_MT);
    lua_pushcfunction(L, tls_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    luaL_newmetatable(L, FILE_MT);
    lua_pushcfunction(L, file_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, file_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, file_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);

    /* every ws function gets the metatable as upvalue 1 (check_ws) */
    luaL_newmetatable(L, WS_MT);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, ws_methods, 1);
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_pushcclosure(L, ws_index, 2);  /* metatable, methods */
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, ws_gc, 1);
    lua_setfield(L, -2, "__gc");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, ws_close_scope, 1);
    lua_setfield(L, -2, "__close");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, ws_tostring, 1);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
  }
  luaL_newlib(L, funcs);
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
