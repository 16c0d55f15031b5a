/* backplane.c - publish/subscribe across processes through Redis: one
 * connection subscribed to every topic, one that publishes */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>
#include <lauxlib.h>   /* luaL_unref: the object's anchor */

#include "backplane.h"
#include "frame.h"
#include "resolver.h"
#include "rhistory.h"
#include "rpresence.h"
#include "server.h"
#include "topic.h"
#include "utf8.h"

/* A message on the wire: a header, then the data as published.
 *   byte 0     WIRE_VERSION
 *   byte 1     the opcode: 1 text, 2 binary (RFC 6455 section 5.2)
 *   bytes 2-9  the origin, the node that published it
 * Anything else on our channels (shorter, another version) is not ours
 * and is ignored. */
#define WIRE_VERSION 1
#define WIRE_HEADER 10

#define RETRY_MIN 0.1          /* s: the first retry after a failure */
#define RETRY_MAX 5.0          /* s: the back-off doubles up to this */
#define CONNECT_TIMEOUT 5.0    /* s: to connect, authenticate, subscribe */
#define GOODBYE_WAIT 0.5       /* s: at most, for Redis to read a closing
                                  process's last message */
#define COMMAND_OVERHEAD 64    /* bytes a PUBLISH adds to its arguments
                                  (RESP framing, the reply), about */

enum bp_state {
  BP_CLOSED,        /* built, or closed: no connection, no timer */
  BP_IDLE,          /* the first connect waits for the loop to run */
  BP_CONNECTING,    /* connections opened, not both ready */
  BP_UP,            /* subscribed, and publishing */
  BP_DOWN           /* both dropped, the timer retries */
};

/* One PSUBSCRIBE to prefix* rather than a SUBSCRIBE per topic: a node
 * also receives topics it has no subscriber for (dropped after a hash
 * lookup), but its subscription never changes as sockets join and leave
 * topics: no command per join, no moment when a socket has joined and
 * its SUBSCRIBE is not yet confirmed, nothing to replay on reconnect. */
struct ms_backplane {
  struct ms_module *module;     /* NULL once closed */
  redisAsyncContext *sub;       /* PSUBSCRIBE prefix* */
  redisAsyncContext *pub;       /* PUBLISH: Redis refuses it on a
                                   subscribed connection */
  ev_timer timer;               /* first connect, connect timeout, retry */
  ev_fork forked;               /* a worker connects on its own */
  struct ms_lookup *lookup;     /* the host resolving, or NULL */
  unsigned attempt;             /* connects failed since the last success:
                                   which of the host's addresses is next */
  int state;                    /* enum bp_state */
  int sub_ready, pub_ready;
  int outage_logged;            /* one line per outage */
  int overflowing;              /* over max_pending: one line per episode */
  int ref;                      /* anchors the userdata while open */
  double retry;                 /* the next back-off delay */
  uint64_t origin;              /* random, shared by a node's workers:
                                   their own messages come back */
  uint64_t unsent, unsent_mark; /* publishes while down; at outage start */
  uint64_t dropped, dropped_mark; /* over max_pending; at episode start */
  size_t pending;               /* bytes given to Redis, not answered */
  size_t max_pending;           /* 16 MiB */
  char host[256];
  int port;                     /* 6379 */
  int db;                       /* 0: no SELECT */
  char *password;               /* NULL: no AUTH */
  char *prefix;                 /* "moonsocket:": channel = prefix..topic */
  size_t prefix_len;
  char *pattern;                /* prefix, glob-escaped, then '*' */
  struct ms_rhist *history;     /* topics with history (rhistory.c) */
  struct ms_rpres *presence;    /* presence across nodes (rpresence.c) */
  double presence_ttl;          /* s: 10 */
};

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

static struct ms_server *log_server(const struct ms_backplane *b) {
  return b->module ? b->module->servers : NULL;   /* its log_level */
}

static uint64_t random_origin(const struct ms_backplane *b) {
  uint64_t r;
  if (getrandom(&r, sizeof r, 0) != sizeof r)
    r = (uint64_t)(uintptr_t)b ^ ((uint64_t)getpid() << 32) ^
        (uint64_t)(ev_time() * 1e6);
  return r;
}

static void start_timer(struct ms_backplane *b, double after) {
  struct ev_loop *loop = b->module->loop;
  ev_timer_stop(loop, &b->timer);
  ev_timer_set(&b->timer, after, 0);
  ev_timer_start(loop, &b->timer);
}

/* Forget a connection: its callbacks, run now or (from inside one of
 * them) once hiredis returns, find no backplane and do nothing. */
static void drop(redisAsyncContext **p) {
  redisAsyncContext *ac = *p;
  if (!ac) return;
  *p = NULL;
  ac->data = NULL;
  redisAsyncFree(ac);
}

static void drop_connections(struct ms_backplane *b) {
  ms_resolve_cancel(b->lookup);
  b->lookup = NULL;
  drop(&b->sub);
  drop(&b->pub);
  b->sub_ready = b->pub_ready = 0;
  b->pending = 0;
  b->overflowing = 0;
}

/* A connection failed or was lost: drop both, and retry after the
 * back-off.  Publishes reach this node only until both are back. */
static void go_down(struct ms_backplane *b, const char *why) {
  if (b->state != BP_CONNECTING && b->state != BP_UP) return;
  if (!b->outage_logged) {
    b->outage_logged = 1;
    b->unsent_mark = b->unsent;
    ms_log(log_server(b), MS_LOG_WARN, "backplane: redis %s:%d unavailable "
           "(%s); publishes reach this node only until it is back",
           b->host, b->port, why);
  }
  drop_connections(b);
  b->state = BP_DOWN;
  b->attempt++;
  start_timer(b, b->retry);
  b->retry = b->retry * 2 < RETRY_MAX ? b->retry * 2 : RETRY_MAX;
  /* last: the binding hears of the failed publishes, and may close b */
  if (b->history) ms_rhist_lost(b->history);
}

static void check_up(struct ms_backplane *b) {
  if (b->state != BP_CONNECTING || !b->sub_ready || !b->pub_ready) return;
  b->state = BP_UP;
  b->retry = RETRY_MIN;
  b->attempt = 0;
  ev_timer_stop(b->module->loop, &b->timer);
  if (b->outage_logged)
    ms_log(log_server(b), MS_LOG_WARN, "backplane: reconnected to redis "
           "%s:%d; %llu publishes during the outage reached this node "
           "only", b->host, b->port,
           (unsigned long long)(b->unsent - b->unsent_mark));
  else
    ms_log(log_server(b), MS_LOG_INFO, "backplane: connected to redis %s:%d",
           b->host, b->port);
  b->outage_logged = 0;
  if (b->presence) ms_rpres_up(b->presence);
}

static void on_connect(const redisAsyncContext *ac, int status) {
  struct ms_backplane *b = ac->data;
  if (!b || status == REDIS_OK) return;
  /* hiredis frees ac when this returns */
  if (ac == b->sub) b->sub = NULL;
  else if (ac == b->pub) b->pub = NULL;
  go_down(b, ac->errstr ? ac->errstr : "cannot connect");
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  struct ms_backplane *b = ac->data;
  if (!b) return;
  if (ac == b->sub) b->sub = NULL;
  else if (ac == b->pub) b->pub = NULL;
  else return;
  go_down(b, status == REDIS_OK || !ac->errstr ? "connection closed"
                                                : ac->errstr);
}

/* The answer to AUTH or SELECT (privdata: its name). */
static void on_setup_reply(redisAsyncContext *ac, void *r, void *what) {
  struct ms_backplane *b = ac->data;
  redisReply *reply = r;
  if (!b || !reply || reply->type != REDIS_REPLY_ERROR) return;
  char why[160];
  snprintf(why, sizeof why, "%s refused: %s", (const char *)what,
           reply->str);
  go_down(b, why);
}

/* The answer to the publishing connection's PING: it is ready. */
static void on_ping(redisAsyncContext *ac, void *r, void *unused) {
  struct ms_backplane *b = ac->data;
  redisReply *reply = r;
  (void)unused;
  if (!b || !reply) return;
  if (reply->type == REDIS_REPLY_ERROR) {
    go_down(b, reply->str);
    return;
  }
  b->pub_ready = 1;
  check_up(b);
}

/* A message from another node: to this node's subscribers, never back
 * to Redis (every node receives it from Redis itself). */
static void deliver(struct ms_backplane *b, const char *channel,
                    size_t clen, const char *msg, size_t mlen) {
  if (clen <= b->prefix_len || memcmp(channel, b->prefix, b->prefix_len))
    return;
  if (b->presence && ms_rpres_message(b->presence, msg, mlen)) return;
  if (b->history && ms_rhist_message(b->history, channel + b->prefix_len,
                                     clen - b->prefix_len, msg, mlen))
    return;
  if (mlen < WIRE_HEADER || (uint8_t)msg[0] != WIRE_VERSION) return;
  unsigned opcode = (uint8_t)msg[1];
  if (opcode != WS_OP_TEXT && opcode != WS_OP_BINARY) return;
  if (memcmp(msg + 2, &b->origin, 8) == 0)
    return;                     /* ours: delivered here when published */
  const uint8_t *data = (const uint8_t *)msg + WIRE_HEADER;
  size_t len = mlen - WIRE_HEADER;
  /* anyone may write to the channel: text must still be UTF-8 */
  if (opcode == WS_OP_TEXT &&
      utf8_validate(UTF8_ACCEPT, data, len) != UTF8_ACCEPT)
    return;
  /* handlers run by this (a slow subscriber's close) may close b: it is
   * not touched afterwards */
  ms_topic_publish(&b->module->topics, channel + b->prefix_len,
                   clen - b->prefix_len, opcode, (const char *)data, len,
                   NULL);
}

/* Every reply on the subscribed connection: the PSUBSCRIBE answer, then
 * a "pmessage" per message. */
static void on_sub_reply(redisAsyncContext *ac, void *r, void *unused) {
  struct ms_backplane *b = ac->data;
  redisReply *reply = r;
  (void)unused;
  if (!b || !reply) return;
  if (reply->type == REDIS_REPLY_ERROR) {
    go_down(b, reply->str);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) return;
  redisReply **e = reply->element;
  if (e[0]->type != REDIS_REPLY_STRING) return;
  if (strcmp(e[0]->str, "psubscribe") == 0) {
    b->sub_ready = 1;
    check_up(b);
  } else if (strcmp(e[0]->str, "pmessage") == 0 && reply->elements == 4 &&
             e[2]->type == REDIS_REPLY_STRING &&
             e[3]->type == REDIS_REPLY_STRING) {
    deliver(b, e[2]->str, e[2]->len, e[3]->str, e[3]->len);
  }
}

/* A PUBLISH answered (privdata: what it counted in pending). */
static void on_published(redisAsyncContext *ac, void *r, void *cost) {
  struct ms_backplane *b = ac->data;
  (void)r;
  if (!b) return;
  ms_backplane_answered(b, (size_t)(uintptr_t)cost);
}

void ms_backplane_answered(struct ms_backplane *b, size_t n) {
  b->pending = n < b->pending ? b->pending - n : 0;
  if (b->overflowing && b->pending <= b->max_pending / 2) {
    b->overflowing = 0;
    ms_log(log_server(b), MS_LOG_WARN, "backplane: redis caught up; %llu "
           "publishes over max_pending reached this node only",
           (unsigned long long)(b->dropped - b->dropped_mark));
  }
}

/* A connection to addr, an address: hiredis would resolve a name with
 * getaddrinfo, blocking the loop. */
static redisAsyncContext *open_connection(struct ms_backplane *b,
                                          const char *addr, int subscriber,
                                          char *why, size_t whylen) {
  redisAsyncContext *ac = redisAsyncConnect(addr, b->port);
  if (!ac) {
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  if (ac->err) {
    snprintf(why, whylen, "%s", ac->errstr);
    redisAsyncFree(ac);
    return NULL;
  }
  ac->data = b;
  redisLibevAttach(b->module->loop, ac);
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  redisEnableKeepAlive(&ac->c);   /* a vanished host is noticed */
  /* pipelined: Redis answers in order, so the first error is AUTH's */
  int rc = REDIS_OK;
  if (b->password) {
    const char *argv[] = { "AUTH", b->password };
    rc |= redisAsyncCommandArgv(ac, on_setup_reply, (void *)"AUTH", 2,
                                argv, NULL);
  }
  if (b->db)
    rc |= redisAsyncCommand(ac, on_setup_reply, (void *)"SELECT",
                            "SELECT %d", b->db);
  if (subscriber) {
    const char *argv[] = { "PSUBSCRIBE", b->pattern };
    rc |= redisAsyncCommandArgv(ac, on_sub_reply, NULL, 2, argv, NULL);
  } else {
    rc |= redisAsyncCommand(ac, on_ping, NULL, "PING");
  }
  if (rc != REDIS_OK) {
    snprintf(why, whylen, "out of memory");
    ac->data = NULL;
    redisAsyncFree(ac);
    return NULL;
  }
  return ac;
}

static void open_both(struct ms_backplane *b, const char *addr) {
  char why[160];
  if (!(b->sub = open_connection(b, addr, 1, why, sizeof why)) ||
      !(b->pub = open_connection(b, addr, 0, why, sizeof why)))
    go_down(b, why);
}

/* The host's addresses: connect to one, the next after each failure. */
static void resolved(void *arg, int status, const char *why,
                     const struct ms_addrs *addrs) {
  struct ms_backplane *b = arg;
  b->lookup = NULL;
  if (status == MS_RESOLVE_CANCELLED) return;  /* the connect timeout
                                                   retries */
  if (status != MS_RESOLVE_OK) {
    char msg[320];
    snprintf(msg, sizeof msg, "cannot resolve '%s': %s", b->host, why);
    go_down(b, msg);
    return;
  }
  char addr[INET6_ADDRSTRLEN];
  open_both(b, ms_sockaddr_text(&addrs->addr[b->attempt % addrs->n], addr,
                                sizeof addr));
}

/* Connect both, within CONNECT_TIMEOUT, the host's name resolved
 * first on the loop (an address is used as it is). */
static void connect_both(struct ms_backplane *b) {
  union ms_sockaddr a;
  b->state = BP_CONNECTING;
  start_timer(b, CONNECT_TIMEOUT);
  if (ms_resolve_literal(b->host, AF_UNSPEC, 0, &a))
    open_both(b, b->host);
  else if (!(b->lookup = ms_resolve(b->module, b->host, NULL, AF_UNSPEC,
                                    resolved, b)))
    go_down(b, "out of memory");
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  struct ms_backplane *b = w->data;
  (void)loop;
  (void)revents;
  if (b->state == BP_CONNECTING) go_down(b, "timed out");
  else if (!b->module->workers) connect_both(b);
  /* else a master of workers: it serves nothing, its workers connect */
}

/* In a forked worker: the connections are the parent's (closing our
 * copies leaves them open there); connect anew.  The origin stays: the
 * node's workers relay publishes to each other themselves, so each
 * ignores what its siblings sent through Redis. */
static void fork_cb(struct ev_loop *loop, ev_fork *w, int revents) {
  struct ms_backplane *b = w->data;
  (void)loop;
  (void)revents;
  drop_connections(b);
  if (b->history) ms_rhist_forked(b->history);
  if (b->presence) ms_rpres_forked(b->presence);
  b->state = BP_IDLE;
  b->outage_logged = 0;
  b->retry = RETRY_MIN;
  start_timer(b, 0);
}

/* ------------------------------------------------------------------ */
/* Publishing                                                          */
/* ------------------------------------------------------------------ */

enum ms_backplane_status ms_backplane_publish(struct ms_backplane *b,
                                              const char *topic,
                                              size_t topic_len,
                                              unsigned opcode,
                                              const char *data,
                                              size_t len) {
  if (b->state == BP_CLOSED) return MS_BP_CLOSED;
  if (b->state != BP_UP) {
    b->unsent++;
    return MS_BP_UNAVAILABLE;
  }
  size_t clen = b->prefix_len + topic_len;
  size_t plen = WIRE_HEADER + len;
  size_t cost = clen + plen + COMMAND_OVERHEAD;
  if (ms_backplane_reserve(b, cost) < 0) return MS_BP_DROPPED;
  char *buf = malloc(clen + plen);
  if (!buf) return MS_BP_NO_MEMORY;
  memcpy(buf, b->prefix, b->prefix_len);
  memcpy(buf + b->prefix_len, topic, topic_len);
  char *payload = buf + clen;
  payload[0] = WIRE_VERSION;
  payload[1] = (char)opcode;
  memcpy(payload + 2, &b->origin, 8);
  memcpy(payload + WIRE_HEADER, data, len);
  const char *argv[] = { "PUBLISH", buf, payload };
  const size_t argvlen[] = { 7, clen, plen };
  int rc = redisAsyncCommandArgv(b->pub, on_published,
                                 (void *)(uintptr_t)cost, 3, argv,
                                 argvlen);
  free(buf);                    /* hiredis keeps its own copy */
  if (rc != REDIS_OK) {
    ms_backplane_answered(b, cost);
    return MS_BP_NO_MEMORY;
  }
  return MS_BP_SENT;
}

/* pending never exceeds max_pending: what would is dropped, so a slow
 * Redis costs a bounded amount of memory */
int ms_backplane_reserve(struct ms_backplane *b, size_t cost) {
  if (cost > b->max_pending - b->pending) {
    b->dropped++;
    if (!b->overflowing) {
      b->overflowing = 1;
      b->dropped_mark = b->dropped - 1;
      ms_log(log_server(b), MS_LOG_WARN, "backplane: more than max_pending "
             "(%zu bytes) waiting for redis; publishes reach this node "
             "only until it catches up", b->max_pending);
    }
    return -1;
  }
  b->pending += cost;
  return 0;
}

enum ms_backplane_status ms_backplane_publish_history(
    struct ms_backplane *b, const struct ms_hist_pattern *p,
    const char *topic, size_t topic_len, unsigned opcode, const char *data,
    size_t len, struct ms_conn *skip, uint64_t *request) {
  if (b->state == BP_CLOSED || !b->history) return MS_BP_CLOSED;
  if (b->state != BP_UP) {
    b->unsent++;
    return MS_BP_UNAVAILABLE;
  }
  return ms_rhist_publish(b->history, b->pub, b->prefix, b->prefix_len, p,
                          topic, topic_len, opcode, data, len, skip,
                          request);
}

enum ms_backplane_status ms_backplane_fetch_history(
    struct ms_backplane *b, const struct ms_hist_pattern *p,
    const char *topic, size_t topic_len, uint64_t after,
    uint64_t *request) {
  if (b->state == BP_CLOSED || !b->history) return MS_BP_CLOSED;
  if (b->state != BP_UP) return MS_BP_UNAVAILABLE;
  return ms_rhist_fetch(b->history, b->pub, b->prefix, b->prefix_len, p,
                        topic, topic_len, after, request);
}

void ms_backplane_fail(struct ms_backplane *b, const char *why) {
  go_down(b, why);
}

void ms_backplane_presence(struct ms_backplane *b, int join,
                           const char *topic, size_t topic_len, uint64_t id,
                           const char *info, size_t ilen) {
  if (b->presence)
    ms_rpres_local(b->presence, join, topic, topic_len, id, info, ilen);
}

struct redisAsyncContext *ms_backplane_publisher(struct ms_backplane *b) {
  return b->state == BP_UP ? b->pub : NULL;
}

int ms_backplane_connected(const struct ms_backplane *b) {
  return b->state == BP_UP;
}

/* ------------------------------------------------------------------ */
/* Closing                                                             */
/* ------------------------------------------------------------------ */

/* Until fd is ready for events, or end (ev_time) has passed: > 0 ready. */
static int wait_ready(int fd, short events, double end) {
  for (;;) {
    double left = end - ev_time();
    if (left <= 0) return 0;
    struct pollfd p = { .fd = fd, .events = events };
    int n = poll(&p, 1, (int)(left * 1000) + 1);
    if (n >= 0 || errno != EINTR) return n;
  }
}

/* Hand Redis everything the publishing connection holds (the goodbye
 * last), then wait for Redis to have read it: our end of the stream
 * (shutdown) is read after every command before it, and Redis closes
 * its end then.  Without this, a close right after the write could
 * reset the connection (unread answers) and lose the goodbye.  Blocks
 * the loop GOODBYE_WAIT at most: the loop may not run again (shutdown),
 * and it happens once per process, only for one with members. */
static void flush_goodbye(redisAsyncContext *ac) {
  redisContext *c = &ac->c;
  double end = ev_time() + GOODBYE_WAIT;
  int done = 0;
  while (redisBufferWrite(c, &done) == REDIS_OK && !done)
    if (wait_ready(c->fd, POLLOUT, end) <= 0) return;
  if (!done || shutdown(c->fd, SHUT_WR) < 0) return;
  char buf[4096];
  for (;;) {
    ssize_t n = read(c->fd, buf, sizeof buf);    /* answers: unread */
    if (n == 0) return;                          /* Redis read it all */
    if (n > 0 || errno == EINTR) continue;
    if (errno != EAGAIN || wait_ready(c->fd, POLLIN, end) <= 0) return;
  }
}

/* tell: the publishes and reads waiting for Redis fail now, the app
 * hears the other nodes' members leave (else, from __gc, they are
 * forgotten), and the other nodes hear this process's members leave */
static void close_backplane(struct ms_backplane *b, int tell) {
  struct ms_module *m = b->module;
  struct ms_rhist *history = b->history;
  struct ms_rpres *presence = b->presence;
  b->history = NULL;            /* a close from what telling runs finds */
  b->presence = NULL;           /* nothing more to do */
  if (m && tell && presence && b->pub && ms_rpres_goodbye(presence) == 0)
    flush_goodbye(b->pub);
  if (m) {
    drop_connections(b);
    ev_timer_stop(m->loop, &b->timer);
    if (ev_is_active(&b->forked)) {
      ev_ref(m->loop);
      ev_fork_stop(m->loop, &b->forked);
    }
    if (m->backplane == b) m->backplane = NULL;
    luaL_unref(m->L, LUA_REGISTRYINDEX, b->ref);
    b->ref = LUA_NOREF;
    b->module = NULL;
  }
  b->state = BP_CLOSED;
  free(b->password);
  free(b->prefix);
  free(b->pattern);
  b->password = b->prefix = b->pattern = NULL;
  ms_rpres_free(presence, tell && m);
  if (history) ms_rhist_close(history, tell && m);
}

void ms_backplane_close(struct ms_backplane *b) {
  close_backplane(b, 1);
}

void ms_backplane_discard(struct ms_backplane *b) {
  close_backplane(b, 0);
}

void ms_backplane_close_module(struct ms_module *m) {
  if (m->backplane) ms_backplane_close(m->backplane);
}

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

static int digits(const char *p, const char *end, long max, long *out) {
  if (p == end) return -1;
  long v = 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9') return -1;
    v = v * 10 + (*p - '0');
    if (v > max) return -1;
  }
  *out = v;
  return 0;
}

/* redis://[:password@]host[:port][/db]; host may be [IPv6]. */
int ms_backplane_parse_url(const char *s, size_t len, struct ms_redis_url *u) {
  static const char scheme[] = "redis://";
  const char *end = s + len;
  memset(u, 0, sizeof *u);
  u->port = 6379;
  if (len < sizeof scheme - 1 || memcmp(s, scheme, sizeof scheme - 1))
    return -1;
  const char *p = s + sizeof scheme - 1;
  const char *auth_end = memchr(p, '/', (size_t)(end - p));
  if (!auth_end) auth_end = end;
  const char *at = NULL;
  for (const char *q = p; q < auth_end; q++)
    if (*q == '@') at = q;
  if (at) {
    if (*p != ':') return -1;   /* no user name: AUTH password */
    u->password = p + 1;
    u->password_len = (size_t)(at - p - 1);
    u->has_password = u->password_len > 0;
    p = at + 1;
  }
  const char *host = p, *host_end;
  if (*p == '[') {
    host = p + 1;
    host_end = memchr(host, ']', (size_t)(auth_end - host));
    if (!host_end) return -1;
    p = host_end + 1;
  } else {
    host_end = memchr(p, ':', (size_t)(auth_end - p));
    if (!host_end) host_end = auth_end;
    p = host_end;
  }
  size_t hlen = (size_t)(host_end - host);
  if (hlen == 0 || hlen >= sizeof u->host || memchr(host, '\0', hlen))
    return -1;
  memcpy(u->host, host, hlen);
  long v;
  if (p < auth_end) {
    if (*p != ':' || digits(p + 1, auth_end, 65535, &v) < 0 || v == 0)
      return -1;
    u->port = (int)v;
  }
  if (auth_end < end && auth_end + 1 < end) {
    if (digits(auth_end + 1, end, INT32_MAX, &v) < 0) return -1;
    u->db = (int)v;
  }
  return 0;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A percent-decoded copy, or NULL (a bad escape or a NUL: *bad set,
 * for hiredis takes the password as a C string). */
static char *percent_decode(const char *s, size_t len, int *bad) {
  char *out = malloc(len + 1), *o = out;
  if (!out) return NULL;
  for (size_t i = 0; i < len; i++) {
    if (s[i] != '%') {
      *o++ = s[i];
      if (s[i]) continue;
      free(out);
      *bad = 1;
      return NULL;
    }
    int hi = i + 2 < len ? hex_value(s[i + 1]) : -1;
    int lo = hi >= 0 ? hex_value(s[i + 2]) : -1;
    if (lo < 0 || (hi | lo) == 0) {
      free(out);
      *bad = 1;
      return NULL;
    }
    *o++ = (char)(hi << 4 | lo);
    i += 2;
  }
  *o = '\0';
  return out;
}

/* prefix with Redis's glob characters escaped, then '*' */
static char *glob_pattern(const char *prefix, size_t len) {
  char *out = malloc(2 * len + 2), *o = out;
  if (!out) return NULL;
  for (size_t i = 0; i < len; i++) {
    if (prefix[i] && strchr("*?[]\\", prefix[i])) *o++ = '\\';
    *o++ = prefix[i];
  }
  *o++ = '*';
  *o = '\0';
  return out;
}

/* ------------------------------------------------------------------ */
/* The object's life                                                  */
/* ------------------------------------------------------------------ */

size_t ms_backplane_size(void) {
  return sizeof(struct ms_backplane);
}

void ms_backplane_init(struct ms_backplane *b) {
  memset(b, 0, sizeof *b);
  b->state = BP_CLOSED;
  b->ref = LUA_NOREF;
}

int ms_backplane_configure(struct ms_backplane *b,
                           const struct ms_redis_url *u,
                           const char *prefix, size_t prefix_len,
                           size_t max_pending) {
  memcpy(b->host, u->host, sizeof b->host);
  b->port = u->port;
  b->db = u->db;
  b->max_pending = max_pending;
  b->prefix_len = prefix_len;
  b->presence_ttl = MS_BACKPLANE_PRESENCE_TTL;
  int bad = 0;
  if (u->has_password &&
      !(b->password = percent_decode(u->password, u->password_len, &bad)))
    return bad ? -1 : -2;
  if (!(b->prefix = malloc(prefix_len + 1)) ||
      !(b->pattern = glob_pattern(prefix, prefix_len)))
    return -2;
  memcpy(b->prefix, prefix, prefix_len);
  b->prefix[prefix_len] = '\0';
  return 0;
}

void ms_backplane_set_presence_ttl(struct ms_backplane *b, double ttl) {
  b->presence_ttl = ttl;
}

void ms_backplane_start(struct ms_backplane *b, struct ms_module *m,
                        int ref) {
  b->ref = ref;                 /* the loop calls back */
  b->module = m;
  b->retry = RETRY_MIN;
  b->state = BP_IDLE;
  m->backplane = b;
  b->origin = random_origin(b);
  b->history = ms_rhist_new(b, m);   /* NULL: history stays local */
  b->presence = ms_rpres_new(b, m, b->origin, b->prefix, b->prefix_len,
                             b->presence_ttl);  /* NULL: on this node */
  /* connect once the loop runs: a master forks its workers first, and
   * they connect, not it */
  ev_timer_init(&b->timer, timer_cb, 0, 0);
  b->timer.data = b;
  ev_timer_start(m->loop, &b->timer);
  ev_fork_init(&b->forked, fork_cb);
  b->forked.data = b;
  ev_fork_start(m->loop, &b->forked);
  ev_unref(m->loop);            /* it keeps no loop running */
}

void ms_backplane_describe(const struct ms_backplane *b,
                           struct ms_backplane_info *info) {
  static const char *const states[] = { "closed", "connecting",
                                        "connecting", "connected",
                                        "unavailable" };
  info->state = states[b->state];
  info->connected = b->state == BP_UP;
  info->unsent = b->unsent;
  info->dropped = b->dropped;
  info->host = b->host;
  info->port = b->port;
}
