/* presence.c - presence: who is on a topic, each with its info, by
 * topic (to list and count) and by id (to leave) */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "presence.h"

#define BUCKETS_MIN 16

struct ms_presence_topic {
  struct ms_presence_topic *next_hash;
  struct ms_presence_member *head, *tail;
  size_t count;
  unsigned busy;                    /* removals telling about it */
  uint64_t hash;
  size_t len;
  char name[];
};

/* Names may come from clients: keyed with a random seed (as topic.c). */
static uint64_t hash_bytes(uint64_t seed, const char *s, size_t len) {
  uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15u);
  for (size_t i = 0; i < len; i++) {
    h = (h ^ (uint8_t)s[i]) * 0x100000001b3u;
  }
  h ^= h >> 32;
  return h * 0xff51afd7ed558ccdu;
}

static uint64_t hash_id(uint64_t id) {
  id ^= id >> 33;
  id *= 0xff51afd7ed558ccdu;
  return id ^ (id >> 33);
}

struct ms_presence *ms_presence_new(void) {
  struct ms_presence *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->topics = calloc(BUCKETS_MIN, sizeof *p->topics);
  p->ids = calloc(BUCKETS_MIN, sizeof *p->ids);
  if (!p->topics || !p->ids) {
    free(p->topics);
    free(p->ids);
    free(p);
    return NULL;
  }
  p->ntopic_buckets = p->nid_buckets = BUCKETS_MIN;
  if (getrandom(&p->seed, sizeof p->seed, 0) != sizeof p->seed)
    p->seed = (uint64_t)(uintptr_t)p ^ 0x5851f42d4c957f2du;
  return p;
}

void ms_presence_free(struct ms_presence *p) {
  if (!p) return;
  for (size_t i = 0; i < p->ntopic_buckets; i++) {
    struct ms_presence_topic *t = p->topics[i], *tn;
    for (; t; t = tn) {
      tn = t->next_hash;
      struct ms_presence_member *mb = t->head, *mn;
      for (; mb; mb = mn) {
        mn = mb->next;
        free(mb);
      }
      free(t);
    }
  }
  free(p->topics);
  free(p->ids);
  free(p);
}

/* ------------------------------------------------------------------ */
/* The tables                                                          */
/* ------------------------------------------------------------------ */

static struct ms_presence_topic *find_topic(const struct ms_presence *p,
                                            const char *name, size_t len) {
  uint64_t h = hash_bytes(p->seed, name, len);
  struct ms_presence_topic *t = p->topics[h & (p->ntopic_buckets - 1)];
  for (; t; t = t->next_hash)
    if (t->hash == h && t->len == len && memcmp(t->name, name, len) == 0)
      return t;
  return NULL;
}

/* Double the buckets; on no memory keep the longer chains. */
static void grow_topics(struct ms_presence *p) {
  size_t n = p->ntopic_buckets * 2;
  struct ms_presence_topic **b = calloc(n, sizeof *b);
  if (!b) return;
  for (size_t i = 0; i < p->ntopic_buckets; i++) {
    struct ms_presence_topic *t = p->topics[i], *next;
    for (; t; t = next) {
      next = t->next_hash;
      t->next_hash = b[t->hash & (n - 1)];
      b[t->hash & (n - 1)] = t;
    }
  }
  free(p->topics);
  p->topics = b;
  p->ntopic_buckets = n;
}

static void grow_ids(struct ms_presence *p) {
  size_t n = p->nid_buckets * 2;
  struct ms_presence_member **b = calloc(n, sizeof *b);
  if (!b) return;
  for (size_t i = 0; i < p->nid_buckets; i++) {
    struct ms_presence_member *mb = p->ids[i], *next;
    for (; mb; mb = next) {
      next = mb->next_id;
      uint64_t h = hash_id(mb->id) & (n - 1);
      mb->next_id = b[h];
      b[h] = mb;
    }
  }
  free(p->ids);
  p->ids = b;
  p->nid_buckets = n;
}

static struct ms_presence_member **id_slot(struct ms_presence *p,
                                           uint64_t id) {
  struct ms_presence_member **s = &p->ids[hash_id(id) &
                                          (p->nid_buckets - 1)];
  while (*s && (*s)->id != id) s = &(*s)->next_id;
  return s;
}

struct ms_presence_member *ms_presence_add(struct ms_presence *p,
                                           const char *topic, size_t tlen,
                                           uint64_t id, const char *info,
                                           size_t ilen) {
  if (*id_slot(p, id)) return NULL;
  struct ms_presence_member *mb = malloc(sizeof *mb + ilen);
  if (!mb) return NULL;
  struct ms_presence_topic *t = find_topic(p, topic, tlen);
  if (!t) {
    t = malloc(sizeof *t + tlen + 1);
    if (!t) {
      free(mb);
      return NULL;
    }
    memset(t, 0, sizeof *t);
    t->hash = hash_bytes(p->seed, topic, tlen);
    t->len = tlen;
    memcpy(t->name, topic, tlen);
    t->name[tlen] = '\0';
    struct ms_presence_topic **b =
      &p->topics[t->hash & (p->ntopic_buckets - 1)];
    t->next_hash = *b;
    *b = t;
    if (++p->ntopics > p->ntopic_buckets) grow_topics(p);
  }
  mb->id = id;
  mb->len = ilen;
  memcpy(mb->info, info, ilen);
  mb->topic = t;
  mb->next = NULL;
  mb->prev = t->tail;
  if (t->tail) t->tail->next = mb;
  else t->head = mb;
  t->tail = mb;
  t->count++;
  struct ms_presence_member **s = id_slot(p, id);
  mb->next_id = NULL;
  *s = mb;
  if (++p->nmembers > p->nid_buckets) grow_ids(p);
  return mb;
}

/* Drop t once it has no member and no removal is telling about it. */
static void topic_check(struct ms_presence *p, struct ms_presence_topic *t) {
  if (t->count || t->busy) return;
  struct ms_presence_topic **b = &p->topics[t->hash &
                                            (p->ntopic_buckets - 1)];
  while (*b != t) b = &(*b)->next_hash;
  *b = t->next_hash;
  p->ntopics--;
  free(t);
}

int ms_presence_remove(struct ms_presence *p, uint64_t id,
                       ms_presence_fn fn, void *arg) {
  struct ms_presence_member **s = id_slot(p, id), *mb = *s;
  if (!mb) return 0;
  struct ms_presence_topic *t = mb->topic;
  *s = mb->next_id;
  p->nmembers--;
  if (mb->prev) mb->prev->next = mb->next;
  else t->head = mb->next;
  if (mb->next) mb->next->prev = mb->prev;
  else t->tail = mb->prev;
  t->count--;
  if (fn) {
    /* what fn runs may join or leave this topic: it stays meanwhile */
    t->busy++;
    fn(arg, t->name, t->len, mb->id, mb->info, mb->len);
    t->busy--;
  }
  free(mb);
  topic_check(p, t);
  return 1;
}

size_t ms_presence_remove_origin(struct ms_presence *p, int origin,
                                 ms_presence_fn fn, void *arg) {
  size_t n = 0, cap = 0, done = 0;
  uint64_t *list = NULL;
  for (size_t i = 0; i < p->nid_buckets; i++)
    for (struct ms_presence_member *mb = p->ids[i]; mb; mb = mb->next_id) {
      if (MS_PRESENCE_ORIGIN(mb->id) != origin) continue;
      if (n == cap) {
        size_t c = cap ? cap * 2 : 64;
        uint64_t *l = realloc(list, c * sizeof *l);
        if (!l) goto remove;          /* the rest stays: no memory */
        list = l;
        cap = c;
      }
      list[n++] = mb->id;
    }
remove:
  for (size_t i = 0; i < n; i++) done += ms_presence_remove(p, list[i], fn,
                                                            arg);
  free(list);
  return done;
}

const struct ms_presence_member *ms_presence_first(
  const struct ms_presence *p, const char *topic, size_t tlen) {
  const struct ms_presence_topic *t = p ? find_topic(p, topic, tlen) : NULL;
  return t ? t->head : NULL;
}

size_t ms_presence_count(const struct ms_presence *p, const char *topic,
                         size_t tlen) {
  const struct ms_presence_topic *t = p ? find_topic(p, topic, tlen) : NULL;
  return t ? t->count : 0;
}

void ms_presence_each_origin(const struct ms_presence *p, int origin,
                             ms_presence_fn fn, void *arg) {
  if (!p) return;
  for (size_t i = 0; i < p->nid_buckets; i++)
    for (const struct ms_presence_member *mb = p->ids[i]; mb;
         mb = mb->next_id)
      if (MS_PRESENCE_ORIGIN(mb->id) == origin)
        fn(arg, mb->topic->name, mb->topic->len, mb->id, mb->info, mb->len);
}
