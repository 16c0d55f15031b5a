/* rpresence.c - presence across nodes through Redis: each process tells
 * the others of its members' joins and leaves and that it lives; the
 * members of a process not heard of within presence_ttl are gone */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "backplane.h"
#include "byteorder.h"
#include "events.h"
#include "presence.h"
#include "rpresence.h"
#include "server.h"

/* A presence message, on the channel prefix.."presence":
 *   byte 0      WIRE_PRESENCE (publishes are 1, history 2)
 *   byte 1      'J' join, 'L' leave, 'H' alive, 'S' tell me yours,
 *               'B' and 'E' around every member told again (J)
 *   bytes 2-9   the sending process (random per process)
 *   bytes 10-17 its node (the backplane's origin, shared by a node's
 *               workers: they hear of each other through the master)
 *   bytes 18-25 the member's id in that process (J, L); the list's
 *               number (B, E)
 *   J then: the topic's length (4), the topic, the encoded info.
 * A whole list, B to E, is the sender's every member: a receiver that
 * heard all of it drops the members of the sender not in it, whose
 * leaves it missed (sent, or published, while Redis was away).  An
 * empty whole list is a process's goodbye: closing its backplane, it has
 * the others drop its members at once, with a leave each.
 * Integers are big-endian, as in the info (lpresence.c): nodes of any
 * byte order read each other's messages. */
#define WIRE_PRESENCE 3
#define HEADER 26
#define COMMAND_OVERHEAD 64

/* Members of other processes are kept under this origin (no worker has
 * it), each with an id of this process's giving. */
#define REMOTE_ORIGIN 0xffff

#define BUCKETS_MIN 16

/* Another process's member, found by (process, id) in a hash table. */
struct rmember {
  struct rmember *next_hash;
  struct rmember *prev, *next;  /* among its process's */
  uint64_t process;
  uint64_t id;                  /* in its process */
  uint64_t local;               /* in m->presence */
  int listed;                   /* told in the list under way */
};

/* Another process, while it has members. */
struct peer {
  struct peer *next;
  uint64_t process;
  double heard;                 /* its last message */
  uint64_t list;                /* the list under way (B heard), 0 none */
  struct rmember *members;
};

struct ms_rpres {
  struct ms_backplane *b;
  struct ms_module *m;
  struct peer *peers;
  struct rmember **buckets;     /* every peer's members */
  size_t nbuckets, nmembers;
  size_t own;                   /* this process's members */
  uint64_t process;
  uint64_t node;
  uint64_t serial;              /* the last local id given */
  uint64_t lists;               /* the last list of ours begun */
  int unsent;                   /* a message of that list was lost */
  double ttl;
  ev_timer timer;               /* every ttl/3: alive, and expiry */
  int depth, closed;
  size_t clen;
  char channel[];
};

static uint64_t random64(const void *salt) {
  uint64_t v;
  if (getrandom(&v, sizeof v, 0) != sizeof v)
    v = (uint64_t)(uintptr_t)salt ^ ((uint64_t)getpid() << 32) ^
        (uint64_t)(ev_time() * 1e6);
  return v;
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */
/* ------------------------------------------------------------------ */

static void on_sent(redisAsyncContext *ac, void *reply, void *cost) {
  struct ms_backplane *b = ac->data;
  (void)reply;
  if (b) ms_backplane_answered(b, (size_t)(uintptr_t)cost);
}

/* Publish a message of kind about member id; lost when Redis is down
 * or too far behind (the others then expire what they miss): -1. */
static int send_message(struct ms_rpres *r, char kind, uint64_t id,
                        const char *topic, size_t tlen, const char *info,
                        size_t ilen) {
  struct redisAsyncContext *pub = ms_backplane_publisher(r->b);
  if (!pub) return -1;
  size_t len = HEADER + (kind == 'J' ? 4 + tlen + ilen : 0);
  size_t cost = r->clen + len + COMMAND_OVERHEAD;
  if (ms_backplane_reserve(r->b, cost) < 0) return -1;
  char *msg = malloc(len);
  if (!msg) {
    ms_backplane_answered(r->b, cost);
    return -1;
  }
  msg[0] = WIRE_PRESENCE;
  msg[1] = kind;
  ms_put_be64(msg + 2, r->process);
  ms_put_be64(msg + 10, r->node);
  ms_put_be64(msg + 18, id);
  if (kind == 'J') {
    ms_put_be32(msg + HEADER, (uint32_t)tlen);
    memcpy(msg + HEADER + 4, topic, tlen);
    memcpy(msg + HEADER + 4 + tlen, info, ilen);
  }
  const char *argv[] = { "PUBLISH", r->channel, msg };
  const size_t argvlen[] = { 7, r->clen, len };
  int rc = redisAsyncCommandArgv(pub, on_sent, (void *)(uintptr_t)cost, 3,
                                 argv, argvlen);
  free(msg);
  if (rc != REDIS_OK) {
    ms_backplane_answered(r->b, cost);
    return -1;
  }
  return 0;
}

static void send_own(void *arg, const char *topic, size_t tlen, uint64_t id,
                     const char *info, size_t ilen) {
  struct ms_rpres *r = arg;
  if (send_message(r, 'J', id, topic, tlen, info, ilen) < 0) r->unsent = 1;
}

/* Every member of this process, to the others, as a whole list (B to
 * E); with a message of it lost, no E: the others drop nothing. */
static void send_all(struct ms_rpres *r) {
  uint64_t list = ++r->lists;
  if (send_message(r, 'B', list, NULL, 0, NULL, 0) < 0) return;
  r->unsent = 0;
  ms_presence_each_origin(r->m->presence, r->m->worker, send_own, r);
  if (!r->unsent) send_message(r, 'E', list, NULL, 0, NULL, 0);
}

static int has_own(const struct ms_rpres *r) {
  return r->own > 0;
}

/* ------------------------------------------------------------------ */
/* Other processes' members                                            */
/* ------------------------------------------------------------------ */

static void leave_r(struct ms_rpres *r);

static int enter(struct ms_rpres *r) {
  return ++r->depth;
}

/* Back from what may have reached Lua: 1 when r is gone. */
static int leave(struct ms_rpres *r) {
  if (--r->depth == 0 && r->closed) {
    leave_r(r);
    return 1;
  }
  return 0;
}

static void tell_leave(void *arg, const char *topic, size_t tlen,
                       uint64_t id, const char *info, size_t ilen) {
  struct ms_rpres *r = arg;
  (void)id;
  ms_event_presence(r->m, topic, tlen, 0, info, ilen);
}

static size_t slot(const struct ms_rpres *r, uint64_t process,
                   uint64_t id) {
  uint64_t h = process ^ (id * 0x9e3779b97f4a7c15u);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdu;
  return (size_t)(h ^ (h >> 33)) & (r->nbuckets - 1);
}

static struct rmember *find_member(const struct ms_rpres *r,
                                   uint64_t process, uint64_t id) {
  if (!r->buckets) return NULL;
  struct rmember *mb = r->buckets[slot(r, process, id)];
  while (mb && (mb->process != process || mb->id != id))
    mb = mb->next_hash;
  return mb;
}

static void grow(struct ms_rpres *r) {
  size_t n = r->nbuckets * 2;
  struct rmember **b = calloc(n, sizeof *b);
  if (!b) return;                 /* longer chains, still correct */
  struct rmember **old = r->buckets;
  size_t oldn = r->nbuckets;
  r->buckets = b;
  r->nbuckets = n;
  for (size_t i = 0; i < oldn; i++) {
    struct rmember *mb = old[i], *next;
    for (; mb; mb = next) {
      next = mb->next_hash;
      struct rmember **s = &b[slot(r, mb->process, mb->id)];
      mb->next_hash = *s;
      *s = mb;
    }
  }
  free(old);
}

/* Into the table and p's list; -1 out of memory. */
static int insert_member(struct ms_rpres *r, struct peer *p,
                         struct rmember *mb) {
  if (!r->buckets) {
    if (!(r->buckets = calloc(BUCKETS_MIN, sizeof *r->buckets))) return -1;
    r->nbuckets = BUCKETS_MIN;
  }
  struct rmember **s = &r->buckets[slot(r, mb->process, mb->id)];
  mb->next_hash = *s;
  *s = mb;
  mb->prev = NULL;
  mb->next = p->members;
  if (p->members) p->members->prev = mb;
  p->members = mb;
  if (++r->nmembers > r->nbuckets) grow(r);
  return 0;
}

static void remove_member(struct ms_rpres *r, struct peer *p,
                          struct rmember *mb) {
  struct rmember **s = &r->buckets[slot(r, mb->process, mb->id)];
  while (*s != mb) s = &(*s)->next_hash;
  *s = mb->next_hash;
  if (mb->prev) mb->prev->next = mb->next;
  else p->members = mb->next;
  if (mb->next) mb->next->prev = mb->prev;
  r->nmembers--;
}

static struct peer *find_peer(struct ms_rpres *r, uint64_t process) {
  struct peer *p = r->peers;
  while (p && p->process != process) p = p->next;
  return p;
}

/* Take p out with its members, telling the app of each (tell).  1 when
 * r is gone meanwhile (freed once all is done). */
static int drop_peer(struct ms_rpres *r, struct peer *p, int tell) {
  struct peer **pp = &r->peers;
  while (*pp != p) pp = &(*pp)->next;
  *pp = p->next;
  enter(r);
  while (p->members) {
    struct rmember *mb = p->members;
    remove_member(r, p, mb);
    if (r->m->presence)
      ms_presence_remove(r->m->presence, mb->local,
                         tell ? tell_leave : NULL, r);
    free(mb);
  }
  free(p);
  return leave(r);
}

static void joined(struct ms_rpres *r, struct peer *p, uint64_t id,
                   const char *topic, size_t tlen, const char *info,
                   size_t ilen) {
  struct rmember *known = find_member(r, p->process, id);
  if (known) {                          /* told again */
    known->listed = 1;
    return;
  }
  struct ms_module *m = r->m;
  if (!m->presence && !(m->presence = ms_presence_new())) return;
  struct rmember *mb = malloc(sizeof *mb);
  if (!mb) return;
  mb->process = p->process;
  mb->id = id;
  mb->local = MS_PRESENCE_ID(REMOTE_ORIGIN, ++r->serial);
  mb->listed = 1;
  if (insert_member(r, p, mb) < 0) {
    free(mb);
    return;
  }
  if (!ms_presence_add(m->presence, topic, tlen, mb->local, info, ilen)) {
    remove_member(r, p, mb);
    free(mb);
    return;
  }
  enter(r);
  ms_event_presence(m, topic, tlen, 1, info, ilen);
  leave(r);
}

static void left(struct ms_rpres *r, struct peer *p, uint64_t id) {
  struct rmember *mb = find_member(r, p->process, id);
  if (!mb) return;
  remove_member(r, p, mb);
  uint64_t local = mb->local;
  free(mb);
  if (!r->m->presence) return;
  enter(r);
  ms_presence_remove(r->m->presence, local, tell_leave, r);
  leave(r);
}

/* p's list begins: none of its members is listed yet. */
static void list_begun(struct peer *p, uint64_t list) {
  p->list = list;
  for (struct rmember *mb = p->members; mb; mb = mb->next) mb->listed = 0;
}

/* p's whole list was heard: its members not in it left (their leaves
 * were lost), each told to the app. */
static void list_ended(struct ms_rpres *r, struct peer *p, uint64_t list) {
  if (p->list != list) return;          /* its beginning was not heard */
  p->list = 0;
  struct rmember *mb = p->members, *next;
  for (; mb; mb = next) {
    next = mb->next;
    if (mb->listed) continue;
    remove_member(r, p, mb);
    uint64_t local = mb->local;
    free(mb);
    if (r->m->presence)
      ms_presence_remove(r->m->presence, local, tell_leave, r);
    /* a handler that closed the backplane dropped every peer, p too;
     * nothing else a handler does changes p's members */
    if (r->closed) return;
  }
}

int ms_rpres_message(struct ms_rpres *r, const char *msg, size_t mlen) {
  if (mlen < HEADER || (uint8_t)msg[0] != WIRE_PRESENCE) return 0;
  uint64_t process = ms_get_be64(msg + 2), node = ms_get_be64(msg + 10),
           id = ms_get_be64(msg + 18);
  if (node == r->node) return 1;        /* this node's: known already */
  char kind = msg[1];
  if (kind == 'S') {
    send_all(r);
    return 1;
  }
  struct peer *p = find_peer(r, process);
  if (!p) {
    if (kind != 'J') return 1;          /* nothing of it is kept */
    if (!(p = calloc(1, sizeof *p))) return 1;
    p->process = process;
    p->next = r->peers;
    r->peers = p;
  }
  p->heard = ev_now(r->m->loop);
  enter(r);
  if (kind == 'J' && mlen >= HEADER + 4) {
    uint32_t tlen = ms_get_be32(msg + HEADER);
    if (tlen > 0 && tlen <= mlen - HEADER - 4)
      joined(r, p, id, msg + HEADER + 4, tlen, msg + HEADER + 4 + tlen,
             mlen - HEADER - 4 - tlen);
  } else if (kind == 'L') {
    left(r, p, id);
  } else if (kind == 'B') {
    list_begun(p, id);
  } else if (kind == 'E') {
    list_ended(r, p, id);
  }
  if (leave(r)) return 1;
  return 1;
}

/* ------------------------------------------------------------------ */
/* Alive, and expiry                                                   */
/* ------------------------------------------------------------------ */

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  struct ms_rpres *r = w->data;
  (void)revents;
  /* others forget this process's members unless it says it lives */
  if (has_own(r)) send_message(r, 'H', 0, NULL, 0, NULL, 0);
  double now = ev_now(loop);
  struct peer *p = r->peers, *next;
  enter(r);
  for (; p; p = next) {
    next = p->next;
    if (p->heard >= now - r->ttl) continue;
    drop_peer(r, p, 1);
    /* a handler that closed the backplane dropped the others (next
     * too); nothing else a handler does changes the list */
    if (r->closed) break;
  }
  leave(r);
}

void ms_rpres_up(struct ms_rpres *r) {
  send_message(r, 'S', 0, NULL, 0, NULL, 0);
  send_all(r);
  if (!ev_is_active(&r->timer)) {
    ev_timer_set(&r->timer, r->ttl / 3, r->ttl / 3);
    ev_timer_start(r->m->loop, &r->timer);
    ev_unref(r->m->loop);       /* it keeps no loop running */
  }
}

int ms_rpres_goodbye(struct ms_rpres *r) {
  if (!has_own(r)) return -1;
  uint64_t list = ++r->lists;
  if (send_message(r, 'B', list, NULL, 0, NULL, 0) < 0 ||
      send_message(r, 'E', list, NULL, 0, NULL, 0) < 0)
    return -1;
  return 0;
}

void ms_rpres_local(struct ms_rpres *r, int join, const char *topic,
                    size_t tlen, uint64_t id, const char *info,
                    size_t ilen) {
  if (join) r->own++;
  else if (r->own > 0) r->own--;
  send_message(r, join ? 'J' : 'L', id, topic, tlen, info, ilen);
}

/* ------------------------------------------------------------------ */
/* The object's life                                                   */
/* ------------------------------------------------------------------ */

static void stop_timer(struct ms_rpres *r) {
  if (ev_is_active(&r->timer)) {
    ev_ref(r->m->loop);
    ev_timer_stop(r->m->loop, &r->timer);
  }
}

/* Forget every other process without telling (the module may be going
 * away). */
static void forget_peers(struct ms_rpres *r) {
  while (r->peers) {
    struct peer *p = r->peers;
    r->peers = p->next;
    while (p->members) {
      struct rmember *mb = p->members;
      remove_member(r, p, mb);
      if (r->m->presence) ms_presence_remove(r->m->presence, mb->local,
                                             NULL, NULL);
      free(mb);
    }
    free(p);
  }
}

static void leave_r(struct ms_rpres *r) {
  stop_timer(r);
  forget_peers(r);
  free(r->buckets);
  free(r);
}

void ms_rpres_forked(struct ms_rpres *r) {
  stop_timer(r);
  forget_peers(r);
  r->own = 0;                   /* the parent's are not this one's */
  r->process = random64(r);
}

struct ms_rpres *ms_rpres_new(struct ms_backplane *b, struct ms_module *m,
                              uint64_t node, const char *prefix,
                              size_t prefix_len, double ttl) {
  static const char name[] = "presence";
  struct ms_rpres *r = calloc(1, sizeof *r + prefix_len + sizeof name);
  if (!r) return NULL;
  r->b = b;
  r->m = m;
  r->ttl = ttl;
  r->process = random64(r);
  r->node = node;
  memcpy(r->channel, prefix, prefix_len);
  memcpy(r->channel + prefix_len, name, sizeof name);
  r->clen = prefix_len + sizeof name - 1;
  ev_init(&r->timer, timer_cb);
  r->timer.data = r;
  return r;
}

void ms_rpres_free(struct ms_rpres *r, int tell) {
  if (!r || r->closed) return;
  r->closed = 1;
  stop_timer(r);
  enter(r);
  /* the app's list loses the other nodes' members: its on_presence
   * hears each leave, so what it was told and what it lists agree */
  while (tell && r->peers) drop_peer(r, r->peers, 1);
  leave(r);                     /* frees r, unless inside a callback */
}
