/* topic.c - publish/subscribe: topics by name, their subscribers, and
 * one frame queued to all of them */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "frame.h"
#include "metrics.h"
#include "server.h"
#include "topic.h"

/* Frames up to this size are copied into each subscriber's output
 * buffer, which costs no more than queueing a reference to them;
 * larger ones are queued by reference to one shared copy. */
#define SHARE_MIN 128
#define BUCKETS_MIN 16

struct ms_topic {
  struct ms_topic *next_hash;
  struct ms_sub *head, *tail;
  size_t count;          /* subscribers, not counting those who left */
  unsigned publishing;   /* publishes under way (they may nest) */
  size_t left;           /* nodes of those who left meanwhile */
  uint64_t hash;
  size_t len;
  char name[];
};

/* ------------------------------------------------------------------ */
/* The table                                                           */
/* ------------------------------------------------------------------ */

/* Topic names may come from clients (chat rooms): the hash is keyed
 * with a random seed so that colliding names cannot be chosen ahead. */
static uint64_t hash_name(uint64_t seed, const char *p, size_t len) {
  uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15u);
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdu;
    h ^= h >> 29;
    p += 8;
    len -= 8;
  }
  uint64_t w = 0;
  memcpy(&w, p, len);
  h = (h ^ w) * 0xc4ceb9fe1a85ec53u;
  h ^= h >> 32;
  return h;
}

static int table_init(struct ms_topics *ts) {
  if (ts->buckets) return 0;
  ts->buckets = calloc(BUCKETS_MIN, sizeof *ts->buckets);
  if (!ts->buckets) return -1;
  ts->nbuckets = BUCKETS_MIN;
  if (getrandom(&ts->seed, sizeof ts->seed, 0) != sizeof ts->seed)
    ts->seed = (uint64_t)(uintptr_t)ts ^ 0x5851f42d4c957f2du;
  return 0;
}

static struct ms_topic *find(const struct ms_topics *ts, const char *name,
                             size_t len) {
  if (!ts->buckets) return NULL;
  uint64_t h = hash_name(ts->seed, name, len);
  struct ms_topic *t = ts->buckets[h & (ts->nbuckets - 1)];
  for (; t; t = t->next_hash)
    if (t->hash == h && t->len == len && memcmp(t->name, name, len) == 0)
      return t;
  return NULL;
}

static void grow(struct ms_topics *ts) {
  size_t n = ts->nbuckets * 2;
  struct ms_topic **b = calloc(n, sizeof *b);
  if (!b) return;                  /* longer chains, still correct */
  for (size_t i = 0; i < ts->nbuckets; i++) {
    struct ms_topic *t = ts->buckets[i], *next;
    for (; t; t = next) {
      next = t->next_hash;
      t->next_hash = b[t->hash & (n - 1)];
      b[t->hash & (n - 1)] = t;
    }
  }
  free(ts->buckets);
  ts->buckets = b;
  ts->nbuckets = n;
}

static struct ms_topic *create(struct ms_topics *ts, const char *name,
                               size_t len) {
  if (table_init(ts) < 0) return NULL;
  struct ms_topic *t = malloc(sizeof *t + len + 1);
  if (!t) return NULL;
  memset(t, 0, sizeof *t);
  t->hash = hash_name(ts->seed, name, len);
  t->len = len;
  memcpy(t->name, name, len);
  t->name[len] = '\0';
  struct ms_topic **b = &ts->buckets[t->hash & (ts->nbuckets - 1)];
  t->next_hash = *b;
  *b = t;
  if (++ts->ntopics > ts->nbuckets) grow(ts);
  ts->metrics->topics_created++;
  return t;
}

/* Drop a topic nobody is subscribed to. */
static void destroy(struct ms_topics *ts, struct ms_topic *t) {
  struct ms_topic **p = &ts->buckets[t->hash & (ts->nbuckets - 1)];
  while (*p != t) p = &(*p)->next_hash;
  *p = t->next_hash;
  ts->ntopics--;
  ts->metrics->topics_destroyed++;
  free(t);
}

/* ------------------------------------------------------------------ */
/* Subscriptions                                                       */
/* ------------------------------------------------------------------ */

static void unlink_from_topic(struct ms_topic *t, struct ms_sub *s) {
  if (s->prev) s->prev->next = s->next;
  else t->head = s->next;
  if (s->next) s->next->prev = s->prev;
  else t->tail = s->prev;
}

/* Remove s, already off its socket's list, from its topic.  While the
 * topic is being published to, the node stays (its conn cleared) so
 * that the publish can walk on; it is freed when the publish ends. */
static void sub_remove(struct ms_topics *ts, struct ms_sub *s) {
  struct ms_topic *t = s->topic;
  uint64_t presence = s->presence;
  t->count--;
  ts->metrics->unsubscribed++;
  s->conn = NULL;
  s->presence = 0;
  if (t->publishing) {
    t->left++;
  } else {
    unlink_from_topic(t, s);
    free(s);
    if (t->count == 0) destroy(ts, t);
  }
  if (presence && ts->presence_left) ts->presence_left(ts, presence);
}

int ms_topic_subscribe(struct ms_topics *ts, struct ms_conn *c,
                       const char *name, size_t len) {
  struct ms_sub **end = &c->subs;
  for (; *end; end = &(*end)->next_of_conn) {
    const struct ms_topic *t = (*end)->topic;
    if (t->len == len && memcmp(t->name, name, len) == 0) return 0;
  }
  struct ms_sub *s = malloc(sizeof *s);
  if (!s) return -1;
  struct ms_topic *t = find(ts, name, len);
  if (!t && !(t = create(ts, name, len))) {
    free(s);
    return -1;
  }
  s->topic = t;
  s->conn = c;
  s->next = NULL;
  s->prev = t->tail;
  if (t->tail) t->tail->next = s;
  else t->head = s;
  t->tail = s;
  t->count++;
  ts->metrics->subscribed++;
  s->next_of_conn = NULL;
  s->presence = 0;
  *end = s;
  return 1;
}

int ms_topic_unsubscribe(struct ms_topics *ts, struct ms_conn *c,
                         const char *name, size_t len) {
  for (struct ms_sub **p = &c->subs; *p; p = &(*p)->next_of_conn) {
    struct ms_sub *s = *p;
    if (s->topic->len == len && memcmp(s->topic->name, name, len) == 0) {
      *p = s->next_of_conn;
      sub_remove(ts, s);
      return 1;
    }
  }
  return 0;
}

int ms_topic_is_subscribed(const struct ms_conn *c, const char *name,
                           size_t len) {
  for (const struct ms_sub *s = c->subs; s; s = s->next_of_conn)
    if (s->topic->len == len && memcmp(s->topic->name, name, len) == 0)
      return 1;
  return 0;
}

void ms_topic_set_presence(struct ms_conn *c, const char *name, size_t len,
                           uint64_t id) {
  for (struct ms_sub *s = c->subs; s; s = s->next_of_conn)
    if (s->topic->len == len && memcmp(s->topic->name, name, len) == 0) {
      s->presence = id;
      return;
    }
}

void ms_topic_leave_all(struct ms_topics *ts, struct ms_conn *c) {
  struct ms_sub *s = c->subs, *next;
  c->subs = NULL;
  for (; s; s = next) {
    next = s->next_of_conn;
    sub_remove(ts, s);
  }
}

size_t ms_topic_subscribers(struct ms_topics *ts, const char *name,
                            size_t len) {
  const struct ms_topic *t = find(ts, name, len);
  return t ? t->count : 0;
}

void ms_topic_each_of_conn(const struct ms_conn *c,
                           void (*fn)(void *arg, const char *name,
                                      size_t len), void *arg) {
  for (const struct ms_sub *s = c->subs; s; s = s->next_of_conn)
    fn(arg, s->topic->name, s->topic->len);
}

/* ------------------------------------------------------------------ */
/* Publishing                                                          */
/* ------------------------------------------------------------------ */

/* After the outermost publish: free the nodes of those who left. */
static void compact(struct ms_topics *ts, struct ms_topic *t) {
  struct ms_sub *s = t->head, *next;
  for (; s && t->left; s = next) {
    next = s->next;
    if (!s->conn) {
      unlink_from_topic(t, s);
      free(s);
      t->left--;
    }
  }
  if (t->count == 0) destroy(ts, t);
}

/* A message on its way to a topic's subscribers.  What a send runs (a
 * close handler, a presence hook) may publish the next one to the same
 * topic: that one must not overtake this one at the
 * subscribers still to come, so the newer publish first finishes the
 * deliveries of its topic under way, oldest first (each lives on the
 * stack of the publish that began it; the list is the process's, so a
 * topic costs nothing more). */
struct ms_delivery {
  struct ms_delivery *outer;       /* begun before this one */
  struct ms_topic *topic;
  struct ms_sub *next, *last;      /* next to get it (NULL: done), last */
  const uint8_t *frame;
  size_t flen;
  struct ms_shared *sh;
  struct ms_conn *skip;
  long reached;
};

static void delivery_run(struct ms_delivery *d) {
  while (d->next) {
    struct ms_sub *s = d->next;
    d->next = s == d->last ? NULL : s->next;
    struct ms_conn *c = s->conn;
    if (c && c != d->skip && c->state == CS_OPEN) {
      enum ms_send_status st = ms_conn_send_frame(c, d->frame, d->flen,
                                                  d->sh);
      if (st == MS_SENT || st == MS_QUEUED) d->reached++;
    }
  }
}

/* those of t from d on, the eldest first */
static void delivery_finish(struct ms_delivery *d, struct ms_topic *t) {
  if (d->outer) delivery_finish(d->outer, t);
  if (d->topic == t) delivery_run(d);
}

/* Queue frame to every open subscriber of t but skip (by reference to
 * sh when there is one, else copied), after what earlier publishes to
 * t still under way have to deliver. */
static long publish_frame(struct ms_topics *ts, struct ms_topic *t,
                          const uint8_t *frame, size_t flen,
                          struct ms_shared *sh, struct ms_conn *skip) {
  /* those who subscribe while this runs do not get this message */
  struct ms_delivery d = { ts->delivering, t, t->head, t->tail, frame,
                           flen, sh, skip, 0 };
  ts->delivering = &d;
  t->publishing++;
  delivery_finish(&d, t);
  ts->delivering = d.outer;
  if (--t->publishing == 0) compact(ts, t);
  ts->metrics->deliveries += (uint64_t)d.reached;
  return d.reached;
}

long ms_topic_publish_shared(struct ms_topics *ts, const char *name,
                             size_t nlen, struct ms_shared *sh,
                             struct ms_conn *skip) {
  struct ms_topic *t = find(ts, name, nlen);
  if (!t) return 0;
  return publish_frame(ts, t, sh->bytes, sh->len,
                       sh->len > SHARE_MIN ? sh : NULL, skip);
}

long ms_topic_publish(struct ms_topics *ts, const char *name, size_t nlen,
                      unsigned opcode, const char *data, size_t len,
                      struct ms_conn *skip) {
  struct ms_topic *t = find(ts, name, nlen);
  if (!t) return 0;
  uint8_t small[SHARE_MIN];
  struct ms_shared *sh = NULL;
  uint8_t *frame = small;
  size_t flen = frame_header_size(len) + len;
  if (flen > SHARE_MIN) {
    sh = malloc(sizeof *sh + flen);
    if (!sh) return -1;
    sh->refs = 1;                  /* ours, until the loop is done */
    sh->len = flen;
    frame = sh->bytes;
  }
  size_t hl = frame_write_header(frame, opcode, 1, 0, len);
  memcpy(frame + hl, data, len);

  long reached = publish_frame(ts, t, frame, flen, sh, skip);
  if (sh) ms_shared_release(sh);
  return reached;
}

/* Nothing is told: the presence goes with the process. */
void ms_topics_free(struct ms_topics *ts) {
  for (size_t i = 0; i < ts->nbuckets; i++) {
    struct ms_topic *t = ts->buckets[i], *next;
    for (; t; t = next) {
      next = t->next_hash;
      struct ms_sub *s = t->head, *sn;
      for (; s; s = sn) {
        sn = s->next;
        if (s->conn) s->conn->subs = NULL;   /* closed after this */
        free(s);
      }
      free(t);
    }
  }
  free(ts->buckets);
  memset(ts, 0, sizeof *ts);
}
