/* lrequest.c - the request pipeline: the request table, the pipeline's
 * answer (a response, an upgrade, nothing) and the open event */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <lauxlib.h>

#include "binding.h"
#include "h2.h"
#include "handshake.h"
#include "life.h"
#include "log.h"

/* What a pipeline run in a coroutine returns for "I answer later" and
 * "I raised" (then its error follows): two addresses, unique. */
static const char waiting_tag, failed_tag;
#define WAITING ((void *)&waiting_tag)
#define FAILED ((void *)&failed_tag)

/* A dotted quad: inet_ntop, at a tenth of its cost per request. */
static void ipv4_text(char *out, const struct in_addr *a) {
  const uint8_t *b = (const uint8_t *)&a->s_addr;
  for (int i = 0; i < 4; i++) {
    unsigned v = b[i];
    if (v >= 100) *out++ = (char)('0' + v / 100);
    if (v >= 10) *out++ = (char)('0' + v / 10 % 10);
    *out++ = (char)('0' + v % 10);
    *out++ = i < 3 ? '.' : '\0';
  }
}

/* The peer of the socket fd, as text, into *peer (left "" when the
 * socket has none). */
static void peer_lookup(int fd, struct ms_h2_peer *peer) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) return;
  _Static_assert(sizeof peer->addr >= INET6_ADDRSTRLEN, "address text");
  int v6 = ss.ss_family == AF_INET6;
  if (v6)
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
              peer->addr, sizeof peer->addr);
  else
    ipv4_text(peer->addr, &((struct sockaddr_in *)&ss)->sin_addr);
  peer->port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                        : ((struct sockaddr_in *)&ss)->sin_port);
}

/* req[&head_key] of a pipeline's request: its head, from which
 * req.headers is made when first read (request_headers). */
static const char head_key;

/* The headers table of req: names lowercased, repeated fields joined
 * (RFC 9110 5.3), the authority of an absolute-form target as host. */
static void push_headers(lua_State *L, const struct http_request *req) {
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
}

/* The request table; its headers made now, or (lazy) kept as the raw
 * head until first read: most pipelines never read them. */
static void push_request(lua_State *L, struct ms_conn *c,
                         const struct http_request *req, int lazy) {
  const char *q = memchr(req->path, '?', req->path_len);
  /* sized to its fields, no more: each handshake's garbage piles up
   * until the collector runs, and an idle socket's RSS with it (a body
   * adds its connection, its serial and, once read, itself) */
  lua_createtable(L, 0, (q ? 9 : 8) + (ms_conn_body(c) ? 3 : 0));
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
  lua_pushstring(L, c->flags & CF_H2_STREAM ? "2"
                    : req->minor_version ? "1.1" : "1.0");
  lua_setfield(L, -2, "version");
  if (lazy) {
    lua_pushlstring(L, req->method, req->head_len);
    lua_rawsetp(L, -2, &head_key);
    luaL_setmetatable(L, REQUEST_MT);
  } else {
    push_headers(L, req);
    lua_setfield(L, -2, "headers");
  }
  /* an HTTP/2 connection's streams share the peer it asked for once */
  struct ms_h2_peer mine = { "", 0 };
  struct ms_h2_peer *peer = c->flags & CF_H2_STREAM ? ms_h2_peer(c) : NULL;
  if (!peer) peer = &mine;
  if (!peer->addr[0]) peer_lookup(c->io.fd, peer);
  if (peer->addr[0]) {
    lua_pushstring(L, peer->addr);
    lua_setfield(L, -2, "remote_addr");
    lua_pushinteger(L, peer->port);
    lua_setfield(L, -2, "remote_port");
  }
  lua_pushboolean(L, handshake_wanted(req));
  lua_setfield(L, -2, "upgrade");
}

void ms_push_request(lua_State *L, struct ms_conn *c,
                     const struct http_request *req) {
  push_request(L, c, req, 0);
}

/* core.request_headers(req): req.headers, made from the head req keeps
 * if not yet made (then set in req); nil when req has neither. */
static int request_headers(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushliteral(L, "headers");
  if (lua_rawget(L, 1) != LUA_TNIL ||                /* made, or set */
      lua_rawgetp(L, 1, &head_key) != LUA_TSTRING)
    return 1;
  size_t len;
  const char *raw = lua_tolstring(L, 3, &len);
  size_t lines = 0;                    /* at most one header a line */
  for (const char *p = raw; (p = memchr(p, '\n', len - (size_t)(p - raw)));
       p++)
    lines++;
  struct http_request req;
  req.headers = lua_newuserdatauv(L, lines * sizeof *req.headers, 0);
  struct http_limits limits = { len, len, lines };
  if (http_parse_request(raw, len, 0, &limits, &req) <= 0)
    return luaL_error(L, "the request head was lost");
  lua_pushliteral(L, "headers");
  push_headers(L, &req);
  lua_pushvalue(L, -1);
  lua_insert(L, -3);
  lua_rawset(L, 1);
  lua_pushnil(L);
  lua_rawsetp(L, 1, &head_key);
  return 1;
}

/* What a pipeline's request table has without the app's metatable:
 * req.headers, made when first read. */
static int request_index(lua_State *L) {
  const char *key = lua_tostring(L, 2);
  if (!key || strcmp(key, "headers") != 0) return 0;
  return request_headers(L);
}

/* The fields the core writes itself: framing and the connection's fate
 * (RFC 9112 sections 6 and 9.6, RFC 9110 section 7.8).  A handler's
 * would contradict them: Transfer-Encoding beside Content-Length. */
static int core_header(const char *name, size_t len) {
  switch (len) {                     /* one comparison at most */
  case 7: return http_ieq(name, len, "upgrade");
  case 10: return http_ieq(name, len, "connection");
  case 14: return http_ieq(name, len, "content-length");
  case 17: return http_ieq(name, len, "transfer-encoding");
  default: return 0;
  }
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

/* Why the field at -2 (name), -1 (value) would break the message, or
 * NULL; its bytes as a line are added to *total. */
static const char *check_field(lua_State *L, size_t *total) {
  size_t nl, vl;
  int vt = lua_type(L, -1);
  if (lua_type(L, -2) != LUA_TSTRING ||
      (vt != LUA_TSTRING && vt != LUA_TNUMBER))
    return lua_pushfstring(L, "a header of a %s to a %s",
                           luaL_typename(L, -2), luaL_typename(L, -1));
  const char *n = lua_tolstring(L, -2, &nl);
  const char *v = lua_tolstring(L, -1, &vl);   /* a number: its copy */
  const char *why = !http_is_token(n, nl) ? "header name '%s' is not a "
                    "token"
                    : !http_is_field_value(v, vl) ? "header '%s' has a "
                    "control character in its value"
                    : core_header(n, nl) ? "the core writes header '%s'"
                    : NULL;
  if (why) {
    const char *shown = push_shown(L, n, nl);
    return lua_pushfstring(L, why, shown);
  }
  *total += nl + vl + 4;
  return NULL;
}

/* Serialise the headers table at idx as "Name: value\r\n" lines.
 * Returns NULL with them pushed, or why they would break the response
 * (pushed above them): a name that is no token, a value with a control
 * character, a field the core writes.  The fields are checked and
 * measured, then copied into one string: no string per line. */
const char *ms_push_header_lines(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_pushliteral(L, "");
  int acc = lua_gettop(L);
  if (!lua_istable(L, idx)) return NULL;
  size_t total = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *why = check_field(L, &total);
    if (why) {
      lua_replace(L, acc + 1);
      lua_settop(L, acc + 1);
      return why;
    }
    lua_pop(L, 1);
  }
  if (!total) return NULL;
  lua_pop(L, 1);                       /* "": the buffer takes its slot */
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, total);
  size_t len = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {           /* the same fields, in order */
    size_t nl, vl;
    const char *n = lua_tolstring(L, -2, &nl);
    const char *v = lua_tolstring(L, -1, &vl);
    if (len + nl + vl + 4 <= total) {
      memcpy(p + len, n, nl);
      memcpy(p + len + nl, ": ", 2);
      memcpy(p + len + nl + 2, v, vl);
      memcpy(p + len + nl + 2 + vl, "\r\n", 2);
      len += nl + vl + 4;
    }
    lua_pop(L, 1);
  }
  luaL_pushresultsize(&b, len);
  return NULL;
}

/* Protected: build the request table and run the pipeline on it.
 * Returns the request and the pipeline's first three results. */
static int call_pipeline(lua_State *L) {
  struct ms_conn *c = lua_touserdata(L, 1);
  const struct http_request *req = lua_touserdata(L, 2);
  lua_settop(L, 0);
  push_request(L, c, req, !(c->flags & CF_H2_STREAM));
  if (ms_conn_body(c)) ms_request_mark_body(L, -1, c);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->server->on_request);
  lua_pushvalue(L, 1);
  ms_push_conn(L, c);
  lua_call(L, 2, 4);
  return 5;
}

/* Give c the options of its route; the sweep then runs often enough
 * for the route's timeouts too. */
static void use_route(struct ms_conn *c, const struct ms_route *route) {
  c->opts = &route->opts;
  ms_server_sweep_for(c->server, &route->opts);
}

/* Push the label of a connection's lines in the log, from the request
 * table at req_idx: "ADDR TARGET", or with log_format "json" the fields
 * "remote":"ADDR","target":"TARGET"; returns it. */
const char *ms_push_label(lua_State *L, struct ms_server *s, int req_idx) {
  char target[MS_LOG_FIELD_MAX];
  size_t len = 0;
  int json = s->opts.log_format == MS_LOG_JSON;
  req_idx = lua_absindex(L, req_idx);
  lua_getfield(L, req_idx, "remote_addr");
  lua_getfield(L, req_idx, "target");
  const char *raw = lua_tolstring(L, -1, &len);
  const char *label = lua_pushfstring(L,
    json ? "\"remote\":\"%s\",\"target\":\"%s\"" : "%s %s",
    lua_tostring(L, -2),
    raw ? ms_log_escape(target, sizeof target, raw, len,
                        json ? MS_ESCAPE_JSON : MS_ESCAPE_FIELD)
        : NULL);
  lua_replace(L, -3);
  lua_pop(L, 1);
  return label;
}

/* The label of c's log lines, pushed: from the request table at
 * req_idx, or without one (req_idx 0: a route opened without the
 * pipeline) from c's peer and req's target. */
static const char *push_conn_label(lua_State *L, struct ms_conn *c,
                                   const struct http_request *req,
                                   int req_idx) {
  if (req_idx) return ms_push_label(L, c->server, req_idx);
  struct ms_h2_peer peer = { "", 0 };
  peer_lookup(c->io.fd, &peer);
  lua_createtable(L, 0, 2);
  lua_pushlstring(L, req->target, req->target_len);
  lua_setfield(L, -2, "target");
  if (peer.addr[0]) {
    lua_pushstring(L, peer.addr);
    lua_setfield(L, -2, "remote_addr");
  }
  const char *label = ms_push_label(L, c->server, -1);
  lua_remove(L, -2);
  return label;
}

static void log_open(struct ms_conn *c, lua_State *L,
                     const struct http_request *req, int req_idx) {
  struct ms_server *s = c->server;
  if (s->opts.log_level < MS_LOG_INFO) return;
  const char *label = push_conn_label(L, c, req, req_idx);
  int h2 = (c->flags & CF_H2_STREAM) != 0;
  if (s->opts.log_format == MS_LOG_JSON)
    ms_log_json(s, MS_LOG_INFO, "open", ",%s,\"http2\":%s", label,
                h2 ? "true" : "false");
  else
    ms_log(s, MS_LOG_INFO, "open %s%s", label, h2 ? " over HTTP/2" : "");
  lua_pop(L, 1);
}

/* After the open event (its callback returned, or its coroutine first
 * waited or ended): the route's keep_request keeps the request, as
 * its raw head unless it was made a table; else it is dropped, and
 * only "ADDR TARGET" stays, for the close line when that is logged. */
static void end_open(struct ms_conn *c, lua_State *L,
                     const struct http_request *req, int req_idx) {
  ms_push_conn(L, c);
  if (c->opts->keep_request) {
    if (ms_aux_get(L, c, -1, AUX_REQUEST) != LUA_TTABLE) {
      lua_pushlstring(L, req->method, req->head_len);
      ms_aux_set(L, c, -3, AUX_REQUEST);
    }
    lua_pop(L, 2);
    return;
  }
  c->flags |= CF_REQUEST_DROPPED;
  lua_pushnil(L);
  ms_aux_set(L, c, -2, AUX_REQUEST);
  lua_pop(L, 1);
  if (c->server->opts.log_level >= MS_LOG_INFO &&
      !(c->flags & CF_NOTIFIED)) {
    size_t len;
    const char *label = push_conn_label(L, c, req, req_idx);
    lua_tolstring(L, -1, &len);
    /* out of memory: its close goes unlogged, as one whose request
     * had no table */
    ms_conn_set_label(c, label, len);
    lua_pop(L, 1);
  }
}

/* The pipeline's answer at r, r+1.. on L for req (its table at
 * req_idx): a response, a handler to upgrade with, nil (404).  keep:
 * whether the connection may serve another request after an error. */
static void apply_answer(lua_State *L, struct ms_conn *c,
                         const struct http_request *req, int req_idx, int r,
                         int keep) {
  struct ms_server *s = c->server;
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
                      : ms_push_header_lines(L, r + 1);
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
      c->flags |= CF_HANDSHAKE;     /* a WebSocket route answers */
      ms_conn_respond_error(c, 426, "this endpoint accepts WebSocket "
                            "connections only", 1);
      break;
    }
    struct ms_route *route = luaL_testudata(L, r + 1, ROUTE_MT);
    const char *protocol = lua_tostring(L, r + 3);
    if (protocol && !http_is_token(protocol, strlen(protocol))) {
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
    ms_push_conn(L, c);
    if (lua_istable(L, r + 2)) {
      lua_pushvalue(L, r + 2);
      ms_aux_set(L, c, -2, AUX_DATA);
    }
    log_open(c, L, req, req_idx);
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
    ms_event_open(c);
    s->opening = was;
    s->opening_req = was_req;
    end_open(c, L, req, req_idx);
    break;
  }
  case LUA_TNIL:
    ms_conn_respond_error(c, 404, "no route for this path", keep);
    break;
  default:
    if (lua_touserdata(L, r) == FAILED) {       /* the pipeline raised */
      ms_log(s, MS_LOG_ERROR, "error in request handler: %s",
             lua_tostring(L, r + 1));
      ms_conn_respond_error(c, 500, "the application failed", keep);
      break;
    }
    ms_log(s, MS_LOG_ERROR, "request handler returned a %s",
           luaL_typename(L, r));
    ms_conn_respond_error(c, 500, "the application failed", keep);
  }
}

static void answer_request(struct ms_conn *c,
                           const struct http_request *req, int top, int keep);

/* An upgrade to a WebSocket route that no middleware comes before
 * (app:ws before any app:use, without hooks: s->ws_routes) is what the
 * pipeline would answer: the route's handler, with neither data nor a
 * subprotocol.  It is opened without the pipeline, and no request
 * table is made unless a handler asks for ws.request.  Returns 0 when
 * the path has no such route. */
static int open_route(struct ms_conn *c, const struct http_request *req,
                      int top) {
  lua_State *L = c->server->module->L;
  const char *q = memchr(req->path, '?', req->path_len);
  size_t plen = q ? (size_t)(q - req->path) : req->path_len;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->server->ws_routes);
  if (plen) lua_pushlstring(L, req->path, plen);
  else lua_pushliteral(L, "/");    /* as req.path has it */
  if (lua_rawget(L, -2) != LUA_TTABLE) {
    lua_settop(L, top);
    return 0;
  }
  int route = lua_gettop(L);
  lua_rawgeti(L, route, 1);          /* the handler */
  lua_rawgeti(L, route, 2);          /* its route's options */
  lua_settop(L, route + 4);          /* no data, no subprotocol */
  apply_answer(L, c, req, 0, route + 1, 0);
  lua_settop(L, top);
  return 1;
}

void ms_event_request(struct ms_conn *c, const struct http_request *req) {
  struct ms_server *s = c->server;
  lua_State *L = s->module->L;
  int top = lua_gettop(L);
  /* after a refused upgrade the client's state is unknown: close */
  int keep = !handshake_wanted(req);
  if (!keep) c->flags |= CF_HANDSHAKE;
  const struct http_request *was = s->answering;
  double was_began = s->answer_began;
  if (was != req) {                  /* an HTTP/2 stream's: it begins */
    s->answering = req;
    if (s->opts.access_log) s->answer_began = ev_time();
  }
  if (keep || s->ws_routes == LUA_NOREF || (c->flags & CF_H2_STREAM) ||
      !open_route(c, req, top)) {
    lua_pushcfunction(L, call_pipeline);
    lua_pushlightuserdata(L, c);
    lua_pushlightuserdata(L, (void *)req);
    answer_request(c, req, top, keep);
  }
  s->answering = was;
  s->answer_began = was_began;
}

/* The pipeline's call for req, and its answer. */
static void answer_request(struct ms_conn *c, const struct http_request *req,
                           int top, int keep) {
  struct ms_server *s = c->server;
  lua_State *L = s->module->L;
  if (ms_pcall(s, L, 2, 5, "request handler") != LUA_OK) {
    ms_conn_respond_error(c, 500, "the application failed", keep);
    lua_settop(L, top);
    return;
  }
  int req_idx = top + 1, r = top + 2;
  if (c->state != CS_HTTP) {
    lua_settop(L, top);
    return;
  }
  if (lua_touserdata(L, r) == WAITING) {
    /* it answers later (core.respond): the head is in the read buffer,
     * which the next read reuses, so keep it */
    ms_push_conn(L, c);
    lua_pushlstring(L, req->method, req->head_len);
    ms_aux_set(L, c, -2, AUX_REQUEST);
    c->flags |= CF_WAITING;
  } else {
    apply_answer(L, c, req, req_idx, r, keep);
  }
  lua_settop(L, top);
}

/* core.respond(conn, req, ...): the answer of a pipeline that waited,
 * for the request table req; true, or nil, message, "ECLOSED" when the
 * connection is gone (closed, timed out, shutting down). */
static int core_respond(lua_State *L) {
  struct ms_conn *c = luaL_checkudata(L, 1, WS_MT);
  luaL_checktype(L, 2, LUA_TTABLE);
  struct ms_server *s = c->server;
  if (!s || c->state != CS_HTTP || !(c->flags & CF_WAITING)) {
    if (s && s->opts.log_level >= MS_LOG_DEBUG) {
      ms_log(s, MS_LOG_DEBUG, "answer dropped: %s left before it came",
             ms_push_label(L, s, 2));
      lua_pop(L, 1);
    }
    return ms_push_fail(L, MS_ECLOSED_DROPPED, "ECLOSED");
  }
  c->flags &= ~(uint32_t)(CF_WAITING | CF_PAUSED);
  ms_aux_get(L, c, 1, AUX_REQUEST);
  lua_pushnil(L);
  ms_aux_set(L, c, 1, AUX_REQUEST);
  size_t len;
  const char *raw = lua_tolstring(L, -1, &len);
  struct http_header headers[s->limits.max_headers];
  struct http_request req;
  struct http_limits limits = { len, len, s->limits.max_headers };
  req.headers = headers;
  if (!raw || http_parse_request(raw, len, 0, &limits, &req) <= 0)
    return luaL_error(L, "the request head was lost");
  int keep = !handshake_wanted(&req);
  lua_insert(L, 3);                  /* the head stays on the stack */
  if (lua_gettop(L) < 7) lua_settop(L, 7);
  const struct http_request *was = s->answering;
  double was_began = s->answer_began;
  s->answering = &req;               /* its head came when it began to wait */
  s->answer_began = c->deadline - s->opts.request_timeout;
  apply_answer(L, c, &req, 2, 4, keep);
  s->answering = was;
  s->answer_began = was_began;
  ms_conn_answered(c);
  lua_pushboolean(L, 1);
  return 1;
}

void ms_push_waiting(lua_State *L) {
  lua_pushlightuserdata(L, WAITING);
}

void ms_open_request(lua_State *L) {
  if (luaL_newmetatable(L, REQUEST_MT)) {
    lua_pushcfunction(L, request_index);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, core_respond);
  lua_setfield(L, -2, "respond");
  lua_pushcfunction(L, request_headers);
  lua_setfield(L, -2, "request_headers");
  lua_pushlightuserdata(L, WAITING);
  lua_setfield(L, -2, "WAITING");
  lua_pushlightuserdata(L, FAILED);
  lua_setfield(L, -2, "FAILED");
}
