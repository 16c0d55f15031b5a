/* server.h - the core's shared structures: module state, servers and
 * connections (internal; the public API is moonsocket.h) */
#ifndef MS_SERVER_H
#define MS_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <lua.h>

#include "deflate.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "outq.h"
#include "tls.h"
#include "topic.h"

/* Options.  Their defaults and ranges are written once, in the table
 * of options.c, which validates them; docs/options.md lists them for
 * users.  The first group may be set per route; the second belongs to
 * the server. */
struct ms_options {
  size_t max_message_size;     /* larger messages close with 1009 */
  size_t max_backpressure;     /* queued bytes before a slow consumer is
                                  closed */
  double close_timeout;        /* to answer our close frame */
  double keep_alive_interval;  /* ping a socket silent this long; 0 off */
  double keep_alive_timeout;   /* a ping unanswered this long closes */
  double idle_timeout;         /* nothing received this long closes */
  double message_timeout;      /* to finish a message (or frame) once
                                  begun, else 1008 */
  struct deflate_config deflate; /* compression (RFC 7692) */
  int keep_request;            /* keep ws.request after open returns */
  size_t max_body_size;        /* a request body, else 413 */

  size_t receive_buffer_size;  /* the server's one read buffer */
  size_t max_header_size;      /* request head, else 431 */
  size_t max_headers;          /* header fields, else 431 */
  size_t max_request_line;     /* request line, else 414 */
  size_t max_connections;      /* beyond, 503 and close */
  size_t max_incomplete_bytes; /* held in incomplete messages by all the
                                  server's sockets; beyond, the one
                                  holding the most is failed 1009 */
  double handshake_timeout;    /* to send a whole request head */
  double request_timeout;      /* for a pipeline that waits to answer,
                                  else 503 */
  double body_timeout;         /* between two reads of a request body
                                  being read, else 408 */
  size_t max_concurrent_streams; /* HTTP/2 streams open at once on one
                                    connection (RFC 9113 5.1.2) */
  double send_window_timeout;  /* an HTTP/2 stream whose bytes the
                                  peer's window holds back this long is
                                  reset */
  int log_level;               /* enum ms_log_level */
  int log_format;              /* enum ms_log_format */
  int access_log;              /* a line per HTTP answer */

  int route;                   /* not an option: a WebSocket route's
                                  index in the figures' routes
                                  (metrics.h), -1 for the server's */
};

void ms_options_defaults(struct ms_options *o);
/* Copy the options that may be set per route from `from`. */
void ms_options_copy_route(struct ms_options *to,
                           const struct ms_options *from);
/* Read the options in the table at idx over *o; raises naming the
 * option and its range when one is invalid or unknown.  With per_route,
 * server options raise too. */
void ms_options_read(lua_State *L, int idx, struct ms_options *o,
                     int per_route);
/* Read the option name from the field of that name of the table at idx,
 * when there is one, over *o; raises as ms_options_read.  Returns
 * whether the field was there. */
int ms_options_read_one(lua_State *L, int idx, const char *name,
                        struct ms_options *o);

/* Per lua_State: the loop and what spans servers. */
struct ms_module {
  struct ev_loop *loop;
  lua_State *L;                 /* the main thread: callbacks run here */
  struct ms_server *servers;
  ev_signal sigint, sigterm, sighup;
  ev_timer shutdown_timer;
  int shutting_down;
  int running;                  /* moonsocket_run runs the loop: only
                                   then may the module break it */
  int ref_text, ref_binary;     /* the kinds, pushed without hashing */
  const char *text, *binary;    /* and their bytes, which the refs keep:
                                   a kind argument that is one of them
                                   is known by its address */
  int ref_message;              /* the callback's name, likewise */
  struct ms_topics topics;      /* publish/subscribe, across servers */
  struct ms_history *history;   /* app:history's, or NULL (history.c) */
  struct ms_presence *presence; /* who is on which topic, or NULL
                                   (presence.c) */
  struct ms_backplane *backplane; /* Redis, to other nodes, or NULL */
  int nworkers;                 /* processes to serve in; 1: this one */
  int worker;                   /* this worker's number, 0 in a master */
  struct ms_workers *workers;   /* the master's, while it supervises */
  struct ms_link *link;         /* a worker's link to the master */
  struct ms_server *client;     /* owns client connections, or NULL */
  struct ms_log_repeat log;     /* repeated lines, counted */
  struct ms_timer *timers;      /* the armed timers (the binding's) */
  struct ms_socket_wait *waiting; /* the waits of coroutines on
                                   sockets (the binding's) */
  struct ms_sockets *sockets;   /* what client sockets share: the pool,
                                   TLS contexts (socket.c), or NULL */
  struct ms_resolver *resolver; /* names to addresses (resolver.c), made
                                   on first use, or NULL */
  struct ms_lua_lookup *lookups; /* the lookups Lua waits for (the
                                    binding's) */
  struct ms_conn *resuming;     /* whose coroutine handler runs now */
  int serving;                  /* ms_event_serving was told */
  struct ms_metrics *metrics;   /* where this process counts: own, or
                                   its slot of shared (metrics.c) */
  struct ms_metrics *shared;    /* with workers: nshared slots, one per */
  int nshared;                  /* process (the master's first) */
  struct ms_metrics own;
  unsigned int last_iteration;  /* ev_iteration at the last sample */
  unsigned int untimed;         /* calls into Lua until one is timed */
};

/* Why a WebSocket ended, as its close handler is told. */
enum ms_why { WHY_NONE, WHY_PEER, WHY_LOCAL, WHY_TIMEOUT, WHY_ERROR,
              WHY_LOST, WHY_SHUTDOWN };

struct ms_body;
struct ms_h2;
struct ms_h2_stream;
struct ms_lua_lookup;
struct ms_resolver;
struct ms_rx;
struct ms_timer;
struct ms_socket_wait;
struct ms_sockets;

struct ms_server {
  ev_io listener;
  ev_prepare prepare;           /* flushes writes before the loop sleeps */
  ev_timer sweep;               /* every timeout, for every connection */
  ev_timer shutdown_timer;      /* a graceful close's time limit */
  ev_timer delivered;           /* while closing: half-closed sockets
                                   whose peers have it all are closed */
  struct ms_module *module;
  struct ms_metrics *metrics;   /* the module's (a client's: its own) */
  struct ms_server *next;       /* in module->servers */
  struct ms_options opts;
  struct http_limits limits;
  struct ms_conn *conns;        /* open connections, a circular list */
  struct ms_conn *pending;      /* to flush or to resume in prepare */
  struct ms_conn *released;     /* closed: unanchor in prepare */
  struct outq_pool chunks;      /* small output chunks kept for reuse */
  struct deflate_buf zbuf;      /* compressed output before framing */
  size_t held;                  /* bytes in incomplete messages, for
                                   max_incomplete_bytes */
  uint32_t bodies;              /* request bodies seen: each one's serial */
  const char *validated;        /* the text message a handler is being */
  size_t validated_len;         /* given: sending it back needs no check */
  struct ms_conn *opening;      /* whose open handler runs, with the */
  const struct http_request *opening_req; /* request it was opened by */
  const struct http_request *answering; /* the request answered now, or
                                           NULL (the access log's) */
  double answer_began;          /* when its head came (access_log) */
  size_t nconns;
  uint8_t *rbuf;                /* the one receive buffer */
  int ref;                      /* anchors the server while it serves */
  int on_request;               /* registry ref of the Lua pipeline */
  int ws_routes;                /* registry ref of { [path] = { handler,
                                   route } }: WebSocket routes no
                                   middleware comes before (lrequest.c),
                                   or LUA_NOREF */
  int closing;
  struct ms_tls *tls;           /* certificates, or NULL: plain TCP */
  int http2;                    /* HTTP/2 served (h2.c), by ALPN on TLS,
                                   by prior knowledge on plain TCP */
  char host[64];
  int port;
  int backlog;
};

enum ms_conn_state {
  CS_HTTP,         /* reading a request head */
  CS_OPEN,         /* WebSocket open */
  CS_CLOSING,      /* our close frame sent, waiting for the peer's */
  CS_DRAINING,     /* flush what is queued, then shut down and linger */
  CS_CLOSED,       /* socket closed, waiting to be unanchored */
  CS_H2            /* an HTTP/2 connection: its session reads (h2.c) */
};

enum {
  CF_IN_PENDING = 1 << 0,   /* in server->pending */
  CF_WRITE_WAIT = 1 << 1,   /* the kernel refused bytes: EV_WRITE on */
  CF_PAUSED = 1 << 2,       /* not reading (coroutine busy) */
  /* 1 << 3, 4, 5, 9, 11 and 27 to 29 are the binding's
     (binding.h) */
  CF_KEEP_ALIVE = 1 << 6,   /* HTTP: another request may follow */
  CF_SHUT_WR = 1 << 7,      /* shutdown(SHUT_WR) done */
  CF_NOTIFIED = 1 << 8,     /* close event delivered */
  CF_CORKED = 1 << 10,      /* its io callback runs: what is queued goes
                               out as it ends, not in prepare */
  CF_HEAD_SCANNED = 1 << 12,/* in holds an incomplete request head */
  CF_UPGRADED = 1 << 13,    /* a WebSocket: its close is reported */
  CF_IN_REQUEST = 1 << 14,  /* the pipeline is running for it */
  CF_READ_WANTS_WRITE = 1 << 15,  /* the transport's read waits for
                                     EV_WRITE (a TLS handshake) */
  CF_WRITE_WANTS_READ = 1 << 16,  /* its write waits for EV_READ */
  CF_COMPRESSED = 1 << 17,  /* the message being read is compressed */
  CF_CLIENT = 1 << 18,      /* our client: frames out masked, in not */
  CF_RX_LOCAL = 1 << 19,    /* rx is feed's copy, on its stack */
  CF_FAIL_PENDING = 1 << 20,/* failed: told once its close frame is out */
  CF_HTTP10 = 1 << 21,      /* the request being answered is HTTP/1.0 */
  CF_WAITING = 1 << 22,     /* its pipeline waits: it answers later */
  CF_BODY_WAKE = 1 << 23,   /* its body's reader is woken in prepare */
  CF_H2 = 1 << 24,          /* carries an HTTP/2 session (c->h2) */
  CF_H2_STREAM = 1 << 25,   /* one request of an HTTP/2 session: answers
                               go to its stream (c->h2s) */
  CF_HANDSHAKE = 1 << 26,   /* the request asks for a WebSocket, or a
                               WebSocket route answers it: its answer is
                               counted as a handshake's */
  CF_MSG_ROOM = 1 << 30,    /* the message delivered is in a room of
                               ms_event_message_room: taking it clears
                               this */
};

struct ms_conn {
  ev_io io;                         /* io.data: its transport */
  struct ms_server *server;
  struct ms_conn *prev, *next;      /* in server->conns */
  struct ms_conn *next_pending;     /* in server->pending / released */
  struct ms_outq out;               /* queued, not yet written */
  struct ms_rx *rx;                 /* input left incomplete, or NULL */
  union {                           /* read through ms_conn_body */
    lua_State *co;                  /* upgraded: the coroutine handler's
                                       thread, or NULL */
    struct ms_body *body;           /* not: the request's body, or NULL */
    struct ms_h2 *h2;               /* CF_H2: the HTTP/2 session */
  };
  const struct ms_options *opts;    /* the server's, or its route's */
  double deadline;                  /* timeout of the current state */
  double last_read;
  double opened;                    /* accepted, then upgraded */
  int ref;                          /* anchors the userdata while open */
  uint32_t flags;
  uint16_t close_code;              /* sent, or to report */
  uint8_t state;
  uint8_t why;                      /* enum ms_why */
  union {
    float ping_after;               /* open: a keep-alive ping awaits an
                                       answer, sent this long after
                                       last_read; 0: none (any read
                                       answers it) */
    unsigned unsent;                /* closed or draining, once told:
                                       the messages lost, as reported */
    unsigned failed;                /* CF_FAIL_PENDING: why it failed */
    unsigned lingered;              /* HTTP, draining: bytes read and
                                       discarded since the answer */
  };
  union {
    SSL *ssl;                       /* the TLS transport's state */
    struct ms_h2_stream *h2s;       /* CF_H2_STREAM: its stream, or NULL
                                       once the stream is gone */
  };
  struct ms_deflate *deflate;       /* permessage-deflate, or NULL */
  struct ms_sub *subs;              /* topics subscribed to */
  char *protocol;                   /* the subprotocol and the log's
                                       label (binding.h), or NULL */
};

/* The body of the request c is reading or answering, or NULL.  A
 * request with a body is never upgraded, a client is upgraded from its
 * start, and an HTTP/2 connection hands its requests to connections of
 * their own: none of them shares the slot with a body. */
static inline struct ms_body *ms_conn_body(const struct ms_conn *c) {
  return c->flags & (CF_UPGRADED | CF_H2) ? NULL : c->body;
}

/* permessage-deflate of one connection, when negotiated */
struct ms_deflate {
  struct deflate_params params;
  struct deflate_state state;
  struct deflate_buf message;       /* the message being inflated */
};

/* listener.c: a server listens alone; or, with workers, the master
 * only reserves the address (bound, not listening) and each worker
 * listens on its own socket (SO_REUSEPORT: the kernel spreads the
 * connections). */
enum ms_listen_mode { MS_LISTEN_ALONE, MS_LISTEN_RESERVE, MS_LISTEN_SHARED };
int ms_server_listen(struct ms_server *s, const char *host, int port,
                     int backlog, enum ms_listen_mode mode,
                     const char **err);
void ms_server_stop_accepting(struct ms_server *s);

/* conn.c: I/O and the protocol */
void ms_conn_start(struct ms_conn *c, struct ms_server *s, int fd);
struct ms_transport;
/* A request of the HTTP/2 connection session: a connection without a
 * socket of its own in session's server, answering through t. */
void ms_conn_start_request(struct ms_conn *c, struct ms_conn *session,
                           const struct ms_transport *t);
/* Answer the request: the body is body[0..body_len), or when file >= 0
 * body_len bytes of that descriptor, which the connection then owns. */
void ms_conn_respond(struct ms_conn *c, int status, const char *headers,
                     size_t headers_len, const char *body, size_t body_len,
                     int file, int is_head);
int ms_conn_upgrade(struct ms_conn *c, const struct http_request *req,
                    const char *protocol, const char **why);
enum ms_send_status { MS_SENT, MS_QUEUED, MS_DROPPED_CLOSED,
                      MS_DROPPED_BACKPRESSURE };
enum ms_send_status ms_conn_send(struct ms_conn *c, unsigned opcode,
                                 const char *data, size_t len,
                                 lua_State *L, int idx, int compress);
/* Queue a whole frame, built by the caller; with sh, by reference to
 * the shared copy (taking a reference), else copied. */
enum ms_send_status ms_conn_send_frame(struct ms_conn *c,
                                       const uint8_t *frame, size_t len,
                                       struct ms_shared *sh);
void ms_conn_close(struct ms_conn *c, int code, const char *reason,
                   size_t reason_len, enum ms_why why);
void ms_conn_abort(struct ms_conn *c, int code);
void ms_conn_end_http(struct ms_conn *c);
void ms_conn_resume_reading(struct ms_conn *c);
/* A pipeline that waited (CF_WAITING) has answered: the next request's
 * deadline, and reading goes on. */
void ms_conn_answered(struct ms_conn *c);
void ms_conn_flush(struct ms_conn *c);
/* Before the loop sleeps: read what was left, flush (life.c's prepare
 * callback calls it for each pending connection). */
void ms_conn_service(struct ms_conn *c);
/* life.c: the watchers of a server (client.c's context uses them too) */
void ms_server_prepare_cb(struct ev_loop *loop, ev_prepare *w,
                          int revents);
void ms_server_sweep_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* The sweep: the timeouts of c's state at time now. */
void ms_conn_sweep(struct ms_conn *c, double now);
/* Shutting down: close c if it has half-closed and its peer has all we
 * sent and has sent nothing since (not waiting for the peer's end). */
void ms_conn_close_delivered(struct ms_conn *c);
void ms_conn_free_buffers(struct ms_conn *c, lua_State *L);
void ms_server_free_chunks(struct ms_server *s);
void ms_conn_respond_error(struct ms_conn *c, int status, const char *why,
                           int keep_alive);
void ms_conn_pause(struct ms_conn *c);
/* Bytes were queued on c by another file (h2.c): flush before the loop
 * sleeps. */
void ms_conn_mark_pending(struct ms_conn *c);
/* Flush what is queued, then shut down writing and close (the lingering
 * close of an HTTP answer). */
void ms_conn_drain(struct ms_conn *c);
/* The app waits for c's request body: all of it (want WANT_ALL) or
 * some (WANT_SOME); 100 Continue is sent if it was expected and reading
 * goes on.  ms_event_body tells it when there is news. */
void ms_conn_body_want(struct ms_conn *c, int want);
/* The app took n bytes of the body held for it: reading may go on. */
void ms_conn_body_taken(struct ms_conn *c, size_t n);
/* Bytes p[0..n) of c's body from its HTTP/2 stream (h2.c), end at its
 * END_STREAM: held for the app, whose reader is told, as a socket's
 * body bytes are. */
void ms_conn_body_data(struct ms_conn *c, const uint8_t *p, size_t n,
                       int end);
/* c's body cannot be read to its end: its reader is told why (413:
 * too large; else the server is busy) and status answers it. */
void ms_conn_body_fail(struct ms_conn *c, int status, const char *why);
/* c, a WebSocket, is failed with 1009 "server busy: too many
 * incomplete messages": its bytes would take the server over
 * max_incomplete_bytes. */
void ms_conn_fail_held(struct ms_conn *c);
/* A client connection: linked into s with io callback cb, connecting
 * on fd (or fd -1: failed already, cb gets EV_CUSTOM). */
void ms_conn_start_client(struct ms_conn *c, struct ms_server *s, int fd,
                          void (*cb)(struct ev_loop *, ev_io *, int));
/* Connected (and TLS done): send the request and read the response. */
void ms_conn_connected(struct ms_conn *c, const char *request,
                       size_t len);
/* Close at once, telling the handler code, reason and why. */
void ms_conn_abort_with(struct ms_conn *c, int code, const char *reason,
                        enum ms_why why);

/* client.c: the client side (RFC 6455 section 4.1) */
struct ms_server *ms_client_context(struct ms_module *m);
void ms_client_context_free(struct ms_module *m);
void ms_client_shutdown(struct ms_module *m);
/* A worker just forked: the client connections it inherited are the
 * master's.  Its copies of their sockets are closed, without a byte
 * written and without an event. */
void ms_client_forget(struct ms_module *m);
/* Fill key with n bytes of the context's CSPRNG buffer; -1 when
 * OpenSSL cannot give random bytes. */
int ms_client_random(struct ms_server *s, uint8_t *key, size_t n);
/* Bytes of the response head at p[0..n): the bytes used, 0 while
 * incomplete; the connection is open or aborted after a head. */
size_t ms_client_response(struct ms_conn *c, const uint8_t *p, size_t n);

#endif
