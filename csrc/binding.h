/* binding.h - what the files of the Lua binding share (private to them:
 * no file below the binding includes it) */
#ifndef MS_BINDING_H
#define MS_BINDING_H

#include <lua.h>

#include "events.h"
#include "server.h"

/* The metatables, one per userdata type. */
#define SERVER_MT  "moonsocket.server"
#define WS_MT      "moonsocket.ws"
#define FILE_MT    "moonsocket.file"
#define TIMER_MT   "moonsocket.timer"
#define ROUTE_MT   "moonsocket.route"
#define TLS_MT     "moonsocket.tls"
#define SOCKET_MT  "moonsocket.socket"
#define LOOKUP_MT  "moonsocket.lookup"
#define REQUEST_MT "moonsocket.request"  /* a pipeline's request table */

/* Uservalues of a WebSocket object: the handler (a table, or the
 * coroutine handler's thread; a request's body reader before an
 * upgrade) and one slot, UV_AUX, for the request and ws.data, read and
 * written through ms_aux_get and ms_aux_set.  The request is made a
 * table only when asked for: while open runs, from the parsed request;
 * after, from the raw head kept by keep_request (a client keeps the
 * head it sent).  An idle socket then holds no table of headers, and
 * by default not even the head.  The subprotocol and the log's label
 * are in C (ms_conn_protocol, ms_conn_label): a slot would cost every
 * socket, the few that have them pay for them.  A client has one more
 * slot, UV_OFFERED: the protocols it offered, until the 101.  Each slot
 * is 16 bytes of every socket's userdata. */
enum { UV_HANDLER = 1, UV_AUX, NUV = UV_AUX, UV_OFFERED };

/* The binding's bits of c->flags (server.h leaves them free). */
enum {
  CF_COROUTINE = 1 << 3,    /* handler is a coroutine */
  CF_CO_RECV = 1 << 4,      /* coroutine waits in receive() */
  CF_CO_SEND = 1 << 5,      /* coroutine waits in send() for drain */
  CF_CO_WAIT = 1 << 9,      /* coroutine waits for core.wake */
  CF_REQUEST_DROPPED = 1 << 11, /* after open: ws.request is gone */
  CF_AUX_DATA = 1 << 27,    /* UV_AUX holds ws.data, not the request */
  CF_AUX_PAIR = 1 << 28,    /* UV_AUX holds { request, data } */
  CF_LABEL = 1 << 29,       /* c->protocol is followed by the label */
};

/* What UV_AUX holds: the request (its table, or a raw head, or what a
 * client sent) and ws.data.  Most sockets have one or neither; one
 * that has both pays for a table of the two. */
enum ms_aux { AUX_REQUEST = 1, AUX_DATA = 2 };
/* Push what of w the ws object at idx holds (nil: none); its type. */
int ms_aux_get(lua_State *L, struct ms_conn *c, int idx, enum ms_aux w);
/* Pop a value and make it what of w the ws object at idx holds. */
void ms_aux_set(lua_State *L, struct ms_conn *c, int idx, enum ms_aux w);

/* c->protocol is NULL, or "PROTOCOL\0", and with CF_LABEL "LABEL\0"
 * after it; PROTOCOL is empty when none was chosen.  The label is what
 * the close line of the log names the socket by ("ADDR TARGET"). */
static inline const char *ms_conn_protocol(const struct ms_conn *c) {
  return c->protocol && c->protocol[0] ? c->protocol : NULL;
}
const char *ms_conn_label(const struct ms_conn *c);
/* Keep label[0..len) after the protocol; -1 when out of memory. */
int ms_conn_set_label(struct ms_conn *c, const char *label, size_t len);

/* An open file to answer a request with: the connection takes fd. */
struct ms_file {
  int fd;
  size_t size;
  long long mtime;                     /* seconds */
  long mtime_ns;
  unsigned long long ino;
};

/* The options a route declared, created by core.route_options. */
struct ms_route {
  struct ms_options opts;
};

/* lmoonsocket.c: the module of L; raises when it is not loaded. */
struct ms_module *ms_module_get(lua_State *L);
/* A runtime failure: push nil, message and code (STYLE convention 1);
 * returns 3.  Programmer errors raise instead, and so does running out
 * of memory, as Lua's own allocations do ("out of memory"). */
int ms_push_fail(lua_State *L, const char *message, const char *code);
/* The messages of ECLOSED: a send or a ping dropped at once, and
 * anything else a ws object no longer open refuses or gives up. */
#define MS_ECLOSED_DROPPED "dropped: the connection is closed"
#define MS_ECLOSED_REFUSED "the connection is closing or closed"

/* Topic history (lhistory.c): a publish to a topic with history, and a
 * subscribe with options; both push their results. */
struct ms_hist_pattern;
int ms_history_publish_lua(lua_State *L, struct ms_module *m,
                           const struct ms_hist_pattern *p,
                           const char *name, size_t nlen, unsigned op,
                           const char *data, size_t len,
                           struct ms_conn *skip);
/* again: what ws:subscribe continues with after waiting for Redis or
 * the master (a recovery reading what this process did not keep), NULL:
 * no waiting; later: the index of a function the runtime calls when
 * the answer has come, for a caller that cannot wait (0: none); then
 * nothing is pushed and 0 returned. */
int ms_history_subscribe_lua(lua_State *L, struct ms_conn *c,
                             const char *name, size_t len, int opts,
                             lua_KFunction again, int later);
/* lpresence.c: ws:subscribe's presence.  Push the options' presence
 * info encoded, or nil (raises on a bad one); after a subscription made
 * now, make the socket present on it with the info at index info. */
void ms_presence_encode_lua(lua_State *L, int opts);
void ms_presence_join_lua(lua_State *L, struct ms_conn *c, const char *name,
                          size_t len, int info);

/* Each makes the metatables of its types (once per lua_State) and sets
 * its functions in the module table on top of the stack. */
void ms_open_server(lua_State *L);       /* lserver.c */
void ms_open_ws(lua_State *L);           /* lws.c */
void ms_open_history(lua_State *L);      /* lhistory.c */
void ms_open_presence(lua_State *L);     /* lpresence.c */
void ms_open_client(lua_State *L);       /* lclient.c */
void ms_open_file(lua_State *L);         /* lfile.c */
void ms_open_timer(lua_State *L);        /* ltimer.c */

/* ltimer.c: timers.  A C timer calls fire once after seconds; the
 * timer is pushed, and stays referenced while armed. */
struct ms_timer;
struct ms_timer *ms_timer_start(lua_State *L, double after,
                                void (*fire)(struct ms_timer *t),
                                void *arg);
void *ms_timer_arg(const struct ms_timer *t);
void ms_timer_cancel(struct ms_timer *t, lua_State *L);
/* Cancel every armed timer (shutdown; a new worker's inherited ones). */
void ms_timers_cancel_all(struct ms_module *m);
void ms_open_backplane(lua_State *L);    /* lbackplane.c */
void ms_open_socket(lua_State *L);       /* lsocket.c */
void ms_open_metrics(lua_State *L);      /* lmetrics.c: core.metrics */
/* lsocket.c: stop every wait on a socket, without waking the coroutine
 * (shutdown; a new worker's inherited ones). */
void ms_sockets_stop_waits(struct ms_module *m);

/* lresolver.c: core.resolve and core.resolver */
void ms_open_resolver(lua_State *L);
/* Cancel every lookup Lua waits for, nothing called (shutdown; a new
 * worker's inherited ones), as ms_timers_cancel_all. */
void ms_lua_lookups_cancel_all(struct ms_module *m);

/* lcall.c: calling into Lua */
static inline void ms_push_conn(lua_State *L, struct ms_conn *c) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
}
/* Call the function below nargs arguments; log an error with its
 * traceback.  Returns 0 on success.  Timed (metrics.h) when s is given. */
int ms_pcall(struct ms_server *s, lua_State *L, int nargs, int nresults,
             const char *what);
/* ms_pcall timed in m's figures: for what has no server (a timer) */
int ms_pcall_timed(struct ms_module *m, lua_State *L, int nargs,
                   int nresults, const char *what);
/* Push what calls the callback name of c's handler table: the function
 * and ws, or call_field, ws and name.  Returns how many arguments are
 * pushed after the function (1 or 2), 0 when there is no callback. */
int ms_push_callback(lua_State *L, struct ms_conn *c, const char *name);
/* The message event of a callback handler: handler.message(ws, data,
 * kind).  Returns 0, or the call's error (logged). */
int ms_call_message(struct ms_conn *c, const uint8_t *data, size_t len,
                    unsigned opcode);
/* A handler raised: close its WebSocket with 1011. */
void ms_handler_failed(struct ms_conn *c);
/* "text" or "binary", from strings made once (no hashing per message) */
void ms_push_kind(lua_State *L, const struct ms_module *m,
                  unsigned opcode);
/* Resume the coroutine of c with the nargs values on its stack. */
void ms_resume(struct ms_conn *c, int nargs);

/* lrequest.c: the request pipeline */
/* Sets core.respond and the pipeline's markers in the module table. */
void ms_open_request(lua_State *L);
void ms_push_request(lua_State *L, struct ms_conn *c,
                     const struct http_request *req);
/* The headers table at idx as "Name: value\r\n" lines, pushed; or NULL
 * with them pushed, else why they would break the message (pushed). */
const char *ms_push_header_lines(lua_State *L, int idx);
/* Push the label of a connection's log lines from the request table at
 * req_idx, "ADDR TARGET" (or JSON fields, for s's log_format); returns
 * it. */
const char *ms_push_label(lua_State *L, struct ms_server *s, int req_idx);

/* The marker of a pipeline that answers later (core.WAITING). */
void ms_push_waiting(lua_State *L);

/* lbody.c: request bodies */
void ms_open_body(lua_State *L);
/* The request table at req_idx has c's body: req:body() reads it. */
void ms_request_mark_body(lua_State *L, int req_idx, struct ms_conn *c);
/* c is released: a reader still waiting for its body is told. */
void ms_body_released(struct ms_conn *c);

/* lroom.c: a long message written straight into its Lua string */
/* The bytes of a long string of len bytes to be, or NULL (too short,
 * not the runner's allocator, out of memory). */
uint8_t *ms_room_new(lua_State *L, size_t len);
/* Push the string of a room filled with len bytes; it is Lua's now. */
const char *ms_room_push(lua_State *L, uint8_t *room, size_t len);
/* A room not pushed. */
void ms_room_free(lua_State *L, uint8_t *room);

/* Push a message's data as a string: a room the core filled
 * (CF_MSG_ROOM, which this clears: the room is taken) or a copy. */
static inline const char *ms_push_message(lua_State *L, struct ms_conn *c,
                                          const uint8_t *data,
                                          size_t len) {
  if (!(c->flags & CF_MSG_ROOM))
    return lua_pushlstring(L, (const char *)data, len);
  c->flags &= ~(uint32_t)CF_MSG_ROOM;
  return ms_room_push(L, (uint8_t *)data, len);
}

/* lws.c: the ws object */
/* Push ws.request of the object at idx (nil before an upgrade). */
void ms_push_ws_request(lua_State *L, struct ms_conn *c, int idx);
/* The why of a close event: "local", "peer", "timeout"... */
const char *ms_why_name(int why);

#endif
