/* presence.h - presence: who is on a topic, each with the info its
 * socket gave, in this process and, with workers, in all of them */
#ifndef MS_PRESENCE_H
#define MS_PRESENCE_H

#include <stddef.h>
#include <stdint.h>

/* A member's id: the worker it is on (0 without workers) in the top 16
 * bits, a number that worker gives below. */
#define MS_PRESENCE_ORIGIN(id) ((int)((id) >> 48))
#define MS_PRESENCE_ID(origin, serial) \
  ((uint64_t)(origin) << 48 | ((serial) & (((uint64_t)1 << 48) - 1)))

struct ms_presence_topic;

/* One socket present on one topic; info is the encoded table (the
 * binding's format, opaque here). */
struct ms_presence_member {
  struct ms_presence_member *next_id;          /* in its id bucket */
  struct ms_presence_member *prev, *next;      /* in its topic */
  struct ms_presence_topic *topic;
  uint64_t id;
  size_t len;
  char info[];
};

/* The presence of one process: every topic's members, by topic and by
 * id (a worker keeps those of every worker; so does the master). */
struct ms_presence {
  struct ms_presence_topic **topics;
  size_t ntopic_buckets, ntopics;
  struct ms_presence_member **ids;
  size_t nid_buckets, nmembers;
  uint64_t seed;
  uint64_t serial;                  /* the last id given here */
};

struct ms_presence *ms_presence_new(void);
void ms_presence_free(struct ms_presence *p);

/* Add member id to topic with info.  NULL: out of memory (or the id is
 * there already). */
struct ms_presence_member *ms_presence_add(struct ms_presence *p,
                                           const char *topic, size_t tlen,
                                           uint64_t id, const char *info,
                                           size_t ilen);
/* What a removal tells: the member's topic, id and info. */
typedef void (*ms_presence_fn)(void *arg, const char *topic, size_t tlen,
                               uint64_t id, const char *info, size_t ilen);

/* Take member id out, telling fn (NULL: nobody) before it is freed;
 * what fn runs may add and remove others.  1 when it was there. */
int ms_presence_remove(struct ms_presence *p, uint64_t id,
                       ms_presence_fn fn, void *arg);

/* The members of topic, in the order they joined: the first, then
 * ->next; NULL when none.  How many, without walking them. */
const struct ms_presence_member *ms_presence_first(
  const struct ms_presence *p, const char *topic, size_t tlen);
size_t ms_presence_count(const struct ms_presence *p, const char *topic,
                         size_t tlen);
/* Tell fn of every member of worker origin (nothing may be added or
 * removed meanwhile). */
void ms_presence_each_origin(const struct ms_presence *p, int origin,
                             ms_presence_fn fn, void *arg);

/* Take out every member of worker origin (it died), telling fn of
 * each; returns how many. */
size_t ms_presence_remove_origin(struct ms_presence *p, int origin,
                                 ms_presence_fn fn, void *arg);

#endif
