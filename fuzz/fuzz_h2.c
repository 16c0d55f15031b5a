/* fuzz_h2.c - the HTTP/2 path: bytes to the nghttp2 session and back,
 * through the real core (conn.c, h2.c, the output queue, the stream
 * transport) on a libev loop and a socketpair, with a small app in
 * place of the Lua binding (events.h): it answers requests (bytes, a
 * file, later), opens WebSockets on extended CONNECTs and echoes and
 * publishes their messages.  ASan and UBSan check the memory; at the
 * end every connection must be released and nothing held.
 * Input: FUZZ_SEED_LEN bytes for the splitter, a flags byte (bit 0:
 * the harness sends the client preface and an empty SETTINGS first;
 * bit 1: a small max_backpressure and receive buffer), then the bytes
 * a client sends. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>

#include "events.h"
#include "fuzz.h"
#include "body.h"
#include "handshake.h"
#include "http.h"
#include "life.h"
#include "server.h"
#include "topic.h"

static struct ms_module module;
static struct ms_server server;
static int file_fd = -1;              /* what /file answers */
#define FILE_SIZE (100u << 10)        /* more than a window */
static size_t live;                   /* connections not yet released */
#define MAX_WAITING 8
static struct ms_conn *waiting[MAX_WAITING];  /* pipelines answering later */

/* ------------------------------------------------------------------ */
/* The app, in place of the binding (events.h)                         */
/* ------------------------------------------------------------------ */

struct ms_conn *ms_event_accept(struct ms_server *s) {
  (void)s;
  struct ms_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->io.fd = -1;
  c->state = CS_CLOSED;
  c->ref = LUA_NOREF;
  live++;
  return c;
}

static int path_is(const struct http_request *req, const char *p) {
  return req->path_len == strlen(p) && memcmp(req->path, p,
                                              req->path_len) == 0;
}

void ms_event_request(struct ms_conn *c, const struct http_request *req) {
  static const char fields[] = "Content-Type: text/plain\r\n";
  int head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
  if (handshake_wanted(req)) {
    const char *why = NULL;
    int status = ms_conn_upgrade(c, req, NULL, &why);
    if (status && c->state == CS_HTTP)
      ms_conn_respond_error(c, status, why, 0);
    else if (!status && path_is(req, "/sub"))
      ms_topic_subscribe(&module.topics, c, "t", 1);
    return;
  }
  if (path_is(req, "/file")) {
    int fd = dup(file_fd);
    if (fd < 0) abort();
    ms_conn_respond(c, 200, fields, sizeof fields - 1, NULL, FILE_SIZE, fd,
                    head);
  } else if (path_is(req, "/wait")) {
    for (int i = 0; i < MAX_WAITING; i++)
      if (!waiting[i]) {
        waiting[i] = c;
        c->flags |= CF_WAITING;
        return;
      }
    ms_conn_respond_error(c, 503, "busy", 1);
  } else if ((path_is(req, "/read") || path_is(req, "/all")) &&
             ms_conn_body(c)) {
    /* a reader of the body as it comes (req:read) or whole (req:body),
     * answered at its end (ms_event_body), or earlier by answer_one */
    for (int i = 0; i < MAX_WAITING; i++)
      if (!waiting[i]) {
        waiting[i] = c;
        c->flags |= CF_WAITING;
        ms_conn_body_want(c, path_is(req, "/all") ? WANT_ALL : WANT_SOME);
        return;
      }
    ms_conn_respond_error(c, 503, "busy", 1);
  } else if (path_is(req, "/body")) {
    struct ms_body *b = ms_conn_body(c);
    char text[32];
    int n = snprintf(text, sizeof text, "%zu", b ? b->len : 0);
    ms_conn_respond(c, 200, fields, sizeof fields - 1, text, (size_t)n, -1,
                    head);
  } else if (path_is(req, "/")) {
    ms_conn_respond(c, 200, fields, sizeof fields - 1, "hello", 5, -1,
                    head);
  } else {
    ms_conn_respond_error(c, 404, "no route", 1);
  }
}

/* News of a body a reader waits for: it takes what is held (its
 * windows given back over HTTP/2), and answers at the end. */
void ms_event_body(struct ms_conn *c) {
  struct ms_body *b = ms_conn_body(c);
  if (!b || b->error || c->state != CS_HTTP || !(c->flags & CF_WAITING))
    return;
  if (b->len) ms_conn_body_taken(c, b->len);
  if (c->state != CS_HTTP) return;
  if (!b->done) {
    ms_conn_body_want(c, WANT_SOME);
    return;
  }
  for (int i = 0; i < MAX_WAITING; i++)
    if (waiting[i] == c) waiting[i] = NULL;
  c->flags &= ~(uint32_t)(CF_WAITING | CF_PAUSED);
  ms_conn_respond(c, 200, "", 0, "read", 4, -1, 0);
  ms_conn_answered(c);
}
void ms_event_open(struct ms_conn *c) { (void)c; }

/* Rooms are plain blocks here: a message of odd length takes its room,
 * the others leave it to the core, so both ways are run. */
uint8_t *ms_event_message_room(struct ms_conn *c, size_t len) {
  (void)c;
  return malloc(len);
}

void ms_event_message_room_free(struct ms_conn *c, uint8_t *room) {
  (void)c;
  free(room);
}

int ms_event_message(struct ms_conn *c, const uint8_t *data, size_t len,
                     unsigned opcode) {
  if (c->state != CS_OPEN) return 1;
  uint8_t *taken = NULL;
  if ((c->flags & CF_MSG_ROOM) && len % 2) {
    c->flags &= ~(uint32_t)CF_MSG_ROOM;
    taken = (uint8_t *)data;
  }
  if (len >= 3 && memcmp(data, "pub", 3) == 0)
    ms_topic_publish(&module.topics, "t", 1, opcode, (const char *)data,
                     len, NULL);
  else if (len >= 5 && memcmp(data, "close", 5) == 0)
    ms_conn_close(c, 1000, "bye", 3, WHY_LOCAL);
  else
    ms_conn_send(c, opcode, (const char *)data, len, NULL, 0, 1);
  free(taken);
  return c->state != CS_CLOSED;
}

void ms_event_pong(struct ms_conn *c, const uint8_t *data, size_t len) {
  (void)c;
  (void)data;
  (void)len;
}

void ms_event_drain(struct ms_conn *c) { (void)c; }

void ms_event_close(struct ms_conn *c, int code, const char *reason,
                    size_t len) {
  (void)c;
  (void)code;
  (void)reason;
  (void)len;
}

void ms_event_release(struct ms_conn *c) {
  c->flags &= ~(uint32_t)CF_IN_PENDING;
  for (int i = 0; i < MAX_WAITING; i++)
    if (waiting[i] == c) waiting[i] = NULL;
  free(c->protocol);
  if (ms_conn_body(c)) ms_body_free(c->body);
  /* as Lua's collector would, later: a core that still points at it
   * reads freed memory, which ASan reports */
  free(c);
  live--;
}

const char *ms_event_client_request(struct ms_conn *c, size_t *len) {
  (void)c;
  *len = 0;
  return NULL;
}

int ms_event_client_protocol(struct ms_conn *c, const char *p, size_t len) {
  (void)c;
  (void)p;
  (void)len;
  return -1;
}

void ms_event_serving(struct ms_module *m) { (void)m; }
void ms_event_shutdown(struct ms_module *m) { (void)m; }

/* One process without workers or presence: neither event comes. */
void ms_event_published(struct ms_module *m, uint64_t request,
                        long reached, const struct ms_hist_pos *pos,
                        const char *why) {
  (void)m;
  (void)request;
  (void)reached;
  (void)pos;
  (void)why;
  abort();
}

/* No backplane: no recovery reads Redis. */
void ms_event_recovered(struct ms_module *m, uint64_t request) {
  (void)m;
  (void)request;
  abort();
}

void ms_event_presence(struct ms_module *m, const char *topic, size_t tlen,
                       int join, const char *info, size_t ilen) {
  (void)m;
  (void)topic;
  (void)tlen;
  (void)join;
  (void)info;
  (void)ilen;
  abort();
}

/* ------------------------------------------------------------------ */
/* The harness                                                         */
/* ------------------------------------------------------------------ */

static void setup_once(void) {
  if (module.loop) return;
  module.loop = ev_loop_new(EVFLAG_AUTO);
  module.L = luaL_newstate();
  if (!module.loop || !module.L) abort();
  ms_module_init_watchers(&module);
  module.metrics = module.topics.metrics = &module.own;  /* as lmoonsocket.c */
  file_fd = memfd_create("fuzz_h2", 0);
  if (file_fd < 0) abort();
  static char block[FILE_SIZE];
  memset(block, 'f', sizeof block);
  if (write(file_fd, block, sizeof block) != (ssize_t)sizeof block) abort();
}

static void server_begin(int flags) {
  struct ms_server *s = &server;
  memset(s, 0, sizeof *s);
  s->module = &module;
  s->metrics = module.metrics;
  ms_options_defaults(&s->opts);
  /* FUZZ_H2_LOG=1 shows the server's log, to check what a seed does */
  s->opts.log_level = getenv("FUZZ_H2_LOG") ? MS_LOG_DEBUG : MS_LOG_OFF;
  s->opts.max_concurrent_streams = 8;     /* reached by small inputs */
  s->opts.max_header_size = 1024;
  s->opts.max_headers = 16;
  s->opts.max_body_size = 4096;
  if (flags & 2) {
    s->opts.max_backpressure = 1024;
    s->opts.receive_buffer_size = 1024;
  }
  s->limits.max_head = s->opts.max_header_size;
  s->limits.max_line = s->opts.max_request_line;
  s->limits.max_headers = s->opts.max_headers;
  s->listener.fd = -1;
  s->on_request = s->ref = LUA_NOREF;
  s->http2 = 1;
  if (!(s->rbuf = malloc(s->opts.receive_buffer_size))) abort();
  ms_server_start(s);
}

/* Whatever the server wrote: read and dropped (the client is random). */
static size_t answered;               /* bytes the server wrote */
static void drain_peer(int fd) {
  char buf[16384];
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0) answered += (size_t)r;
}

static void turn(int peer) {
  for (int i = 0; i < 3; i++) {
    ev_run(module.loop, EVRUN_NOWAIT);
    drain_peer(peer);
  }
}

/* The app answers a waiting pipeline, as core.respond does. */
static void answer_one(void) {
  for (int i = 0; i < MAX_WAITING; i++) {
    struct ms_conn *c = waiting[i];
    if (!c) continue;
    waiting[i] = NULL;
    if (c->state != CS_HTTP || !(c->flags & CF_WAITING)) continue;
    c->flags &= ~(uint32_t)(CF_WAITING | CF_PAUSED);
    ms_conn_respond(c, 200, "", 0, "later", 5, -1, 0);
    ms_conn_answered(c);
    return;
  }
}

/* Every connection's timeouts, as if t seconds had gone by. */
static void sweep_after(double t) {
  struct ms_conn *c = server.conns;
  double now = ev_now(module.loop) + t;
  for (size_t i = 0, n = server.nconns; i < n && server.conns; i++) {
    struct ms_conn *next = c->next;
    ms_conn_sweep(c, now);
    c = next;
  }
}

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                 "\0\0\0\4\0\0\0\0\0";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FUZZ_SEED_LEN + 1) return 0;
  setup_once();
  struct fuzz_rng rng = fuzz_rng_from(data);
  int flags = data[FUZZ_SEED_LEN];
  const uint8_t *p = data + FUZZ_SEED_LEN + 1;
  size_t n = size - FUZZ_SEED_LEN - 1;

  server_begin(flags);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) abort();
  struct ms_conn *c = ms_event_accept(&server);
  if (!c) abort();
  ms_conn_start(c, &server, sv[0]);
  if ((flags & 1) && write(sv[1], preface, sizeof preface - 1) < 0) abort();
  turn(sv[1]);

  size_t at = 0;
  while (at < n && server.nconns) {
    size_t k = fuzz_chunk(&rng, n - at);
    ssize_t w = write(sv[1], p + at, k);
    if (w > 0) at += (size_t)w;
    else if (errno != EAGAIN) break;
    turn(sv[1]);
    uint32_t x = fuzz_next(&rng);
    if ((x & 7) == 0) answer_one();
    if ((x & 31) == 1) sweep_after(1000);       /* every timeout */
  }
  answer_one();
  turn(sv[1]);
  sweep_after(1000);
  turn(sv[1]);
  /* graceful shutdown, the peer gone, then whatever is left cut off */
  ms_server_close(&server);
  turn(sv[1]);
  close(sv[1]);
  turn(-1);
  while (server.conns) ms_conn_abort(server.conns, 1006);
  ev_feed_event(module.loop, &server.prepare, EV_PREPARE);
  ev_run(module.loop, EVRUN_NOWAIT);
  FUZZ_CHECK(server.nconns == 0 && live == 0,
             "%zu connections open, %zu not released", server.nconns, live);
  FUZZ_CHECK(server.held == 0, "%zu bytes held after every connection "
             "closed", server.held);
  FUZZ_CHECK(module.servers == NULL, "the server was not finished");
  if (getenv("FUZZ_H2_LOG")) fprintf(stderr, "%zu bytes out\n", answered);
  answered = 0;
  return 0;
}
