/* backplane.h - publish/subscribe across processes through Redis: what
 * one node publishes reaches the subscribers of every node */
#ifndef MS_BACKPLANE_H
#define MS_BACKPLANE_H

#include <stddef.h>
#include <stdint.h>

struct ms_module;
struct ms_backplane;

enum ms_backplane_status {
  MS_BP_SENT,          /* handed to Redis (at most once, unordered
                          between nodes beyond what Redis orders) */
  MS_BP_UNAVAILABLE,   /* Redis is down: this node only */
  MS_BP_DROPPED,       /* over max_pending: this node only */
  MS_BP_NO_MEMORY,
  MS_BP_CLOSED         /* the backplane is closed */
};

/* Send a message published on this node to the other nodes; it was
 * already delivered here.  Never raises. */
enum ms_backplane_status ms_backplane_publish(struct ms_backplane *b,
                                              const char *topic,
                                              size_t topic_len,
                                              unsigned opcode,
                                              const char *data,
                                              size_t len);

/* Send a publish to a topic with history (pattern p) to Redis, which
 * gives its position and hands it to every node, this one too: it is
 * delivered here when it comes back, in Redis's order (rhistory.c).
 * MS_BP_SENT: *request set, ms_event_published follows.  MS_BP_CLOSED:
 * the backplane keeps no history; the caller keeps it locally. */
struct ms_hist_pattern;
struct ms_conn;
enum ms_backplane_status ms_backplane_publish_history(
    struct ms_backplane *b, const struct ms_hist_pattern *p,
    const char *topic, size_t topic_len, unsigned opcode, const char *data,
    size_t len, struct ms_conn *skip, uint64_t *request);
/* Read what Redis keeps of topic after offset `after` into this
 * process's history (rhistory.c): MS_BP_SENT with *request set, then
 * ms_event_recovered; MS_BP_UNAVAILABLE while Redis is away. */
enum ms_backplane_status ms_backplane_fetch_history(
    struct ms_backplane *b, const struct ms_hist_pattern *p,
    const char *topic, size_t topic_len, uint64_t after,
    uint64_t *request);
/* A member of this process joined topic (join) or left: the other
 * nodes are told (rpresence.c). */
void ms_backplane_presence(struct ms_backplane *b, int join,
                           const char *topic, size_t topic_len, uint64_t id,
                           const char *info, size_t ilen);
/* For rhistory.c and rpresence.c: the publishing connection while
 * Redis is up, else NULL. */
struct redisAsyncContext;
struct redisAsyncContext *ms_backplane_publisher(struct ms_backplane *b);
/* For rhistory.c: Redis stopped answering; drop both connections (no
 * answer comes for what was sent) and reconnect, as after an outage. */
void ms_backplane_fail(struct ms_backplane *b, const char *why);
/* Whether Redis is up: both connections ready. */
int ms_backplane_connected(const struct ms_backplane *b);
/* For rhistory.c: count cost bytes more as waiting for Redis (-1, and
 * counted as dropped, over max_pending), and fewer once answered. */
int ms_backplane_reserve(struct ms_backplane *b, size_t cost);
void ms_backplane_answered(struct ms_backplane *b, size_t cost);

/* Close the module's backplane, if any: its connections and timer are
 * gone after this, so they keep no loop running. */
void ms_backplane_close_module(struct ms_module *m);

/* The object, made by the binding (lbackplane.c; README.md, Backplane):
 * a block of ms_backplane_size() bytes, made closed by ms_backplane_init
 * (closing it then only frees), configured, then started. */
struct ms_redis_url {
  char host[256];
  int port, db;
  const char *password;         /* percent-encoded, in the URL */
  size_t password_len;
  int has_password;
};
/* "redis://[:password@]host[:port][/db]" into u; -1 when invalid. */
int ms_backplane_parse_url(const char *s, size_t len, struct ms_redis_url *u);
size_t ms_backplane_size(void);
void ms_backplane_init(struct ms_backplane *b);
/* 0; -1 when the password has a bad %-escape or a NUL; -2 when memory
 * ran out. */
int ms_backplane_configure(struct ms_backplane *b,
                           const struct ms_redis_url *u,
                           const char *prefix, size_t prefix_len,
                           size_t max_pending);
/* presence_ttl's default: seconds after which the members of a process
 * not heard of are gone; set (1 to 3600) before starting. */
#define MS_BACKPLANE_PRESENCE_TTL 10.0
void ms_backplane_set_presence_ttl(struct ms_backplane *b, double ttl);
/* Attach b to m, and connect once the loop runs.  ref, a registry
 * reference to its object, anchors it until it is closed. */
void ms_backplane_start(struct ms_backplane *b, struct ms_module *m,
                        int ref);
/* Idempotent; also frees what a failed construction left.  The
 * publishes and recovery reads waiting for Redis fail ("the backplane
 * is closed"), the binding told; discard (for __gc) forgets them. */
void ms_backplane_close(struct ms_backplane *b);
void ms_backplane_discard(struct ms_backplane *b);

struct ms_backplane_info {
  const char *state;   /* "closed", "connecting", "connected",
                          "unavailable" */
  int connected;       /* Redis is up */
  uint64_t unsent;     /* publishes made while it was down */
  uint64_t dropped;    /* publishes over max_pending */
  const char *host;
  int port;
};
void ms_backplane_describe(const struct ms_backplane *b,
                           struct ms_backplane_info *info);

#endif
