/* history.c - topic history: the messages last published to a topic,
 * each at a position (epoch, offset), kept as their shared frames */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "frame.h"
#include "history.h"
#include "outq.h"
#include "topic.h"

#define BUCKETS_MIN 16

/* The history of one topic.  Offsets first .. next-1 are kept (none
 * when first == next). */
struct ms_hist_topic {
  struct ms_hist_topic *next_hash;
  struct ms_hist_topic *lru_older, *lru_newer;
  struct ms_hist_entry *head, *tail;
  size_t count;
  uint64_t epoch, first, next;
  uint64_t hash;
  size_t len;
  char name[];
};

static uint64_t random64(const void *salt) {
  uint64_t r;
  if (getrandom(&r, sizeof r, 0) != sizeof r)
    r = (uint64_t)(uintptr_t)salt * 0x9e3779b97f4a7c15u;
  return r ? r : 1;                 /* epoch 0 means "none" on the wire */
}

/* ------------------------------------------------------------------ */
/* Patterns                                                            */
/* ------------------------------------------------------------------ */

struct ms_history *ms_history_new(void) {
  struct ms_history *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  h->max_bytes = MS_HISTORY_MAX_BYTES;
  h->seed = random64(h);
  return h;
}

int ms_history_configure(struct ms_history *h, const char *name,
                         size_t len, size_t size, double ttl) {
  int prefix = len > 0 && name[len - 1] == '*';
  if (prefix) len--;
  for (struct ms_hist_pattern *p = h->patterns; p; p = p->next)
    if (p->prefix == prefix && p->len == len &&
        memcmp(p->name, name, len) == 0) {
      p->size = size;
      p->ttl = ttl;
      return 0;
    }
  struct ms_hist_pattern *p = malloc(sizeof *p + len + 1);
  if (!p) return -1;
  p->size = size;
  p->ttl = ttl;
  p->prefix = prefix;
  p->len = len;
  memcpy(p->name, name, len);
  p->name[len] = '\0';
  p->next = h->patterns;
  h->patterns = p;
  return 0;
}

const struct ms_hist_pattern *ms_history_match(const struct ms_history *h,
                                               const char *name,
                                               size_t len) {
  const struct ms_hist_pattern *best = NULL;
  for (const struct ms_hist_pattern *p = h->patterns; p; p = p->next) {
    if (!p->prefix) {
      if (p->len == len && memcmp(p->name, name, len) == 0) return p;
    } else if (p->len <= len && memcmp(p->name, name, p->len) == 0 &&
               (!best || p->len > best->len)) {
      best = p;
    }
  }
  return best;
}

/* ------------------------------------------------------------------ */
/* The table of topics                                                 */
/* ------------------------------------------------------------------ */

static uint64_t hash_name(uint64_t seed, const char *p, size_t len) {
  uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15u);
  for (size_t i = 0; i < len; i++) {
    h = (h ^ (uint8_t)p[i]) * 0x100000001b3u;
    h ^= h >> 31;
  }
  return h;
}

static struct ms_hist_topic *find(const struct ms_history *h,
                                  const char *name, size_t len) {
  if (!h->buckets) return NULL;
  uint64_t hv = hash_name(h->seed, name, len);
  struct ms_hist_topic *t = h->buckets[hv & (h->nbuckets - 1)];
  for (; t; t = t->next_hash)
    if (t->hash == hv && t->len == len && memcmp(t->name, name, len) == 0)
      return t;
  return NULL;
}

static void grow(struct ms_history *h) {
  size_t n = h->nbuckets * 2;
  struct ms_hist_topic **b = calloc(n, sizeof *b);
  if (!b) return;                  /* longer chains, still correct */
  for (size_t i = 0; i < h->nbuckets; i++) {
    struct ms_hist_topic *t = h->buckets[i], *next;
    for (; t; t = next) {
      next = t->next_hash;
      t->next_hash = b[t->hash & (n - 1)];
      b[t->hash & (n - 1)] = t;
    }
  }
  free(h->buckets);
  h->buckets = b;
  h->nbuckets = n;
}

static size_t topic_bytes(const struct ms_hist_topic *t) {
  return sizeof *t + t->len + 1;
}

static size_t entry_bytes(const struct ms_hist_entry *e) {
  return sizeof *e + sizeof *e->frame + e->frame->len;
}

static void lru_unlink(struct ms_history *h, struct ms_hist_topic *t) {
  if (t->lru_older) t->lru_older->lru_newer = t->lru_newer;
  else h->lru_oldest = t->lru_newer;
  if (t->lru_newer) t->lru_newer->lru_older = t->lru_older;
  else h->lru_newest = t->lru_older;
}

static void lru_append(struct ms_history *h, struct ms_hist_topic *t) {
  t->lru_newer = NULL;
  t->lru_older = h->lru_newest;
  if (h->lru_newest) h->lru_newest->lru_newer = t;
  else h->lru_oldest = t;
  h->lru_newest = t;
}

static struct ms_hist_topic *create(struct ms_history *h, const char *name,
                                    size_t len) {
  if (!h->buckets) {
    h->buckets = calloc(BUCKETS_MIN, sizeof *h->buckets);
    if (!h->buckets) return NULL;
    h->nbuckets = BUCKETS_MIN;
  }
  struct ms_hist_topic *t = malloc(sizeof *t + len + 1);
  if (!t) return NULL;
  memset(t, 0, sizeof *t);
  t->hash = hash_name(h->seed, name, len);
  t->len = len;
  memcpy(t->name, name, len);
  t->name[len] = '\0';
  t->epoch = random64(t);
  t->first = t->next = 1;
  struct ms_hist_topic **b = &h->buckets[t->hash & (h->nbuckets - 1)];
  t->next_hash = *b;
  *b = t;
  lru_append(h, t);
  h->bytes += topic_bytes(t);
  if (++h->ntopics > h->nbuckets) grow(h);
  return t;
}

/* ------------------------------------------------------------------ */
/* Dropping                                                            */
/* ------------------------------------------------------------------ */

/* Drop the oldest entry of t. */
static void drop_head(struct ms_history *h, struct ms_hist_topic *t) {
  struct ms_hist_entry *e = t->head;
  t->head = e->next;
  if (!t->head) t->tail = NULL;
  t->count--;
  t->first = e->offset + 1;
  if (e->older) e->older->newer = e->newer;
  else h->oldest = e->newer;
  if (e->newer) e->newer->older = e->older;
  else h->newest = e->older;
  h->bytes -= entry_bytes(e);
  ms_shared_release(e->frame);
  free(e);
}

static void drop_all(struct ms_history *h, struct ms_hist_topic *t) {
  while (t->head) drop_head(h, t);
}

static void destroy(struct ms_history *h, struct ms_hist_topic *t) {
  drop_all(h, t);
  struct ms_hist_topic **p = &h->buckets[t->hash & (h->nbuckets - 1)];
  while (*p != t) p = &(*p)->next_hash;
  *p = t->next_hash;
  lru_unlink(h, t);
  h->ntopics--;
  h->bytes -= topic_bytes(t);
  free(t);
}

/* What a topic's limits no longer allow: over size, older than ttl. */
static void prune(struct ms_history *h, struct ms_hist_topic *t,
                  const struct ms_hist_pattern *p, double now) {
  if (!p) return;
  while (t->count > p->size) drop_head(h, t);
  if (p->ttl > 0)
    while (t->head && t->head->time < now - p->ttl) drop_head(h, t);
}

/* Over the process's total: the topic least recently published to goes
 * first when it keeps no message (only its position), else the oldest
 * message of any topic; then the topics least recently published to
 * (their positions: a later publish begins a new epoch).  keep is
 * spared.  Empty topics before messages: else many topics' bookkeeping
 * alone could fill the total and drop every message, the newest too. */
static void bound(struct ms_history *h, struct ms_hist_topic *keep) {
  while (h->bytes > h->max_bytes) {
    struct ms_hist_topic *t = h->lru_oldest;
    if (t == keep) t = t->lru_newer;
    if (t && !t->head) {
      destroy(h, t);
      continue;
    }
    if (h->oldest) {
      drop_head(h, h->oldest->topic);
      continue;
    }
    if (!t) break;
    destroy(h, t);
  }
}

/* ------------------------------------------------------------------ */
/* Keeping messages                                                    */
/* ------------------------------------------------------------------ */

int ms_history_parse_epoch(const char *s, size_t len, uint64_t *epoch) {
  if (len != 16) return 0;
  uint64_t v = 0;
  for (size_t i = 0; i < 16; i++) {
    char ch = s[i];
    int d = ch >= '0' && ch <= '9' ? ch - '0'
          : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
    if (d < 0) return 0;
    v = v << 4 | (uint64_t)d;
  }
  *epoch = v;
  return 1;
}

int ms_history_parse_offset(const char *s, size_t len, uint64_t *offset) {
  if (len == 0 || len > 19) return 0;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (uint64_t)(s[i] - '0');   /* 19 digits: no wrap */
  }
  if (v > INT64_MAX) return 0;
  *offset = v;
  return 1;
}

size_t ms_history_envelope(char out[MS_HIST_ENVELOPE_MAX + 1],
                           const struct ms_hist_pos *pos) {
  int n = snprintf(out, MS_HIST_ENVELOPE_MAX + 1, "%016" PRIx64 ":%" PRIu64
                   " ", pos->epoch, pos->offset);
  return (size_t)n;
}

static struct ms_hist_topic *topic_for(struct ms_history *h,
                                       const char *name, size_t len) {
  struct ms_hist_topic *t = find(h, name, len);
  if (t) {
    lru_unlink(h, t);
    lru_append(h, t);
    return t;
  }
  return create(h, name, len);
}

static struct ms_hist_topic *look(struct ms_history *h, const char *name,
                                  size_t len, double now);

/* An entry of t at pos, its frame built (envelope and all), linked
 * nowhere yet; NULL: out of memory. */
static struct ms_hist_entry *entry_new(struct ms_hist_topic *t, double time,
                                       unsigned opcode, const char *data,
                                       size_t dlen,
                                       const struct ms_hist_pos *pos) {
  char env[MS_HIST_ENVELOPE_MAX + 1];
  size_t elen = ms_history_envelope(env, pos);
  size_t plen = elen + dlen;
  size_t hl = frame_header_size(plen);
  struct ms_hist_entry *e = malloc(sizeof *e);
  struct ms_shared *sh = malloc(sizeof *sh + hl + plen);
  if (!e || !sh) {
    free(e);
    free(sh);
    return NULL;
  }
  sh->refs = 1;                     /* the history's */
  sh->len = hl + plen;
  frame_write_header(sh->bytes, opcode, 1, 0, plen);
  memcpy(sh->bytes + hl, env, elen);
  memcpy(sh->bytes + hl + elen, data, dlen);
  e->frame = sh;
  e->data_at = (uint32_t)(hl + elen);
  e->opcode = (uint8_t)opcode;
  e->offset = pos->offset;
  e->time = time;
  e->topic = t;
  return e;
}

int ms_history_prepend(struct ms_history *h, const struct ms_hist_pattern *p,
                       const char *name, size_t len, double time,
                       double now, unsigned opcode, const char *data,
                       size_t dlen, const struct ms_hist_pos *pos) {
  struct ms_hist_topic *t = find(h, name, len);
  if (!t || t->epoch != pos->epoch || pos->offset + 1 != t->first ||
      pos->offset == 0)
    return 0;
  struct ms_hist_entry *e = entry_new(t, time, opcode, data, dlen, pos);
  if (!e) return -1;
  e->next = t->head;
  t->head = e;
  if (!t->tail) t->tail = e;
  t->count++;
  t->first = pos->offset;
  /* the oldest of all: the first the total evicts */
  e->older = NULL;
  e->newer = h->oldest;
  if (h->oldest) h->oldest->older = e;
  else h->newest = e;
  h->oldest = e;
  h->bytes += entry_bytes(e);
  prune(h, t, p, now);
  bound(h, t);
  return 1;
}

int ms_history_span(struct ms_history *h, const char *name, size_t len,
                    double now, uint64_t *epoch, uint64_t *first,
                    uint64_t *next) {
  struct ms_hist_topic *t = look(h, name, len, now);
  if (!t) return 0;
  *epoch = t->epoch;
  *first = t->first;
  *next = t->next;
  return 1;
}

struct ms_shared *ms_history_append(struct ms_history *h,
                                    const struct ms_hist_pattern *p,
                                    const char *name, size_t len,
                                    double now, unsigned opcode,
                                    const char *data, size_t dlen,
                                    int assign, struct ms_hist_pos *pos) {
  struct ms_hist_topic *t = topic_for(h, name, len);
  if (!t) return NULL;
  if (assign) {
    pos->epoch = t->epoch;
    pos->offset = t->next;
  } else if (pos->epoch != t->epoch || pos->offset != t->next) {
    /* a new epoch, or messages this process never got: what it kept
     * does not lead up to this one */
    drop_all(h, t);
    t->epoch = pos->epoch;
    t->first = pos->offset;
  }
  struct ms_hist_entry *e = entry_new(t, now, opcode, data, dlen, pos);
  if (!e) return NULL;
  struct ms_shared *sh = e->frame;
  sh->refs = 2;                     /* the history's and the caller's */
  e->next = NULL;
  if (t->tail) t->tail->next = e;
  else t->head = e;
  t->tail = e;
  t->count++;
  t->next = pos->offset + 1;
  e->newer = NULL;
  e->older = h->newest;
  if (h->newest) h->newest->newer = e;
  else h->oldest = e;
  h->newest = e;
  h->bytes += entry_bytes(e);
  prune(h, t, p, now);
  bound(h, t);                      /* may drop e itself: sh is ours */
  return sh;
}

long ms_history_publish(struct ms_history *h, struct ms_topics *ts,
                        const struct ms_hist_pattern *p, const char *name,
                        size_t len, double now, unsigned opcode,
                        const char *data, size_t dlen, int assign,
                        struct ms_hist_pos *pos, struct ms_conn *skip) {
  struct ms_shared *sh = ms_history_append(h, p, name, len, now, opcode,
                                           data, dlen, assign, pos);
  if (!sh) return -1;
  long reached = ms_topic_publish_shared(ts, name, len, sh, skip);
  ms_shared_release(sh);
  return reached;
}

int ms_history_assign(struct ms_history *h, const char *name, size_t len,
                      double now, struct ms_hist_pos *pos) {
  (void)now;
  struct ms_hist_topic *t = topic_for(h, name, len);
  if (!t) return -1;
  pos->epoch = t->epoch;
  pos->offset = t->next++;
  t->first = t->next;
  bound(h, t);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */
/* ------------------------------------------------------------------ */

/* The topic, its expired messages dropped. */
static struct ms_hist_topic *look(struct ms_history *h, const char *name,
                                  size_t len, double now) {
  struct ms_hist_topic *t = find(h, name, len);
  if (t) prune(h, t, ms_history_match(h, name, len), now);
  return t;
}

int ms_history_current(struct ms_history *h, const char *name, size_t len,
                       double now, struct ms_hist_pos *pos) {
  struct ms_hist_topic *t = look(h, name, len, now);
  if (!t) {
    pos->epoch = 0;
    pos->offset = 0;
    return 0;
  }
  pos->epoch = t->epoch;
  pos->offset = t->next - 1;
  return 1;
}

int ms_history_open(struct ms_history *h, const char *name, size_t len,
                    double now, struct ms_hist_pos *pos) {
  if (ms_history_current(h, name, len, now, pos)) return 0;
  struct ms_hist_topic *t = create(h, name, len);
  if (!t) return -1;
  bound(h, t);
  pos->epoch = t->epoch;
  pos->offset = t->next - 1;
  return 0;
}

int ms_history_open_at(struct ms_history *h, const char *name, size_t len,
                       const struct ms_hist_pos *pos) {
  struct ms_hist_topic *t = find(h, name, len);
  if (t && t->epoch == pos->epoch && t->next == pos->offset + 1) return 0;
  if (!t && !(t = create(h, name, len))) return -1;
  drop_all(h, t);
  t->epoch = pos->epoch;
  t->first = t->next = pos->offset + 1;
  bound(h, t);
  return 0;
}

int ms_history_since(struct ms_history *h, const char *name, size_t len,
                     double now, const struct ms_hist_pos *since,
                     struct ms_shared ***out, size_t *n,
                     struct ms_hist_pos *current) {
  *out = NULL;
  *n = 0;
  ms_history_current(h, name, len, now, current);
  struct ms_hist_topic *t = find(h, name, len);
  /* every message after since must still be here: since is at most the
   * last, and the one after it is at least the first kept */
  if (!t || since->epoch != t->epoch || since->offset >= t->next ||
      since->offset + 1 < t->first)
    return 0;
  size_t count = (size_t)(t->next - 1 - since->offset);
  if (count == 0) return 1;
  struct ms_shared **list = malloc(count * sizeof *list);
  if (!list) return -1;
  struct ms_hist_entry *e = t->head;
  while (e && e->offset <= since->offset) e = e->next;
  for (; e; e = e->next) {
    e->frame->refs++;
    list[(*n)++] = e->frame;
  }
  *out = list;
  return 1;
}

struct ms_hist_entry *ms_history_first(struct ms_history *h,
                                       const char *name, size_t len,
                                       double now, uint64_t after,
                                       uint64_t *epoch) {
  struct ms_hist_topic *t = look(h, name, len, now);
  *epoch = t ? t->epoch : 0;
  if (!t) return NULL;
  struct ms_hist_entry *e = t->head;
  while (e && e->offset <= after) e = e->next;
  return e;
}

void ms_history_forget(struct ms_history *h) {
  while (h->lru_oldest) destroy(h, h->lru_oldest);
}

void ms_history_free(struct ms_history *h) {
  if (!h) return;
  while (h->lru_oldest) destroy(h, h->lru_oldest);
  free(h->buckets);
  struct ms_hist_pattern *p = h->patterns, *next;
  for (; p; p = next) {
    next = p->next;
    free(p);
  }
  free(h);
}
