/* topic.h - publish/subscribe: topics, their subscribers, and a message
 * framed once for all of them */
#ifndef MS_TOPIC_H
#define MS_TOPIC_H

#include <stddef.h>
#include <stdint.h>

struct ms_conn;
struct ms_topic;

/* A subscription: one socket on one topic.  It is on the topic's list
 * and on the socket's.  conn NULL: left while the topic was being
 * published to; the node is unlinked once the publish is over. */
struct ms_sub {
  struct ms_topic *topic;
  struct ms_conn *conn;
  struct ms_sub *prev, *next;       /* in the topic */
  struct ms_sub *next_of_conn;      /* in conn->subs */
  uint64_t presence;                /* its presence member's id, or 0 */
};

/* Every topic of a lua_State, by name. */
struct ms_metrics;

struct ms_topics {
  struct ms_topic **buckets;
  size_t nbuckets, ntopics;
  uint64_t seed;                    /* of the name hash: random */
  struct ms_metrics *metrics;       /* the module's */
  /* told when a subscription with presence ends (unsubscribed, or its
   * socket closing), after it is gone; NULL: no presence yet */
  void (*presence_left)(struct ms_topics *ts, uint64_t id);
  /* positioned messages being delivered, innermost first (topic.c) */
  struct ms_delivery *delivering;
};

/* 1 when conn subscribed now, 0 when it already was, -1 out of memory */
int ms_topic_subscribe(struct ms_topics *ts, struct ms_conn *c,
                       const char *name, size_t len);
/* 1 when conn was subscribed, 0 when it was not */
int ms_topic_unsubscribe(struct ms_topics *ts, struct ms_conn *c,
                         const char *name, size_t len);
int ms_topic_is_subscribed(const struct ms_conn *c, const char *name,
                           size_t len);
/* Give conn's subscription to name its presence member id (0: none). */
void ms_topic_set_presence(struct ms_conn *c, const char *name, size_t len,
                           uint64_t id);
/* Leave every topic: the socket is closing. */
void ms_topic_leave_all(struct ms_topics *ts, struct ms_conn *c);
size_t ms_topic_subscribers(struct ms_topics *ts, const char *name,
                            size_t len);

/* Queue one message to every open subscriber of the topic but skip
 * (NULL: none).  The frame is built once.  Subscribers over their
 * max_backpressure are closed with 1008 (the send policy); handlers run
 * by that may subscribe, unsubscribe, close or publish again.  Returns
 * the number of sockets the message was queued to, or -1 when memory
 * ran out before any was. */
long ms_topic_publish(struct ms_topics *ts, const char *name, size_t nlen,
                      unsigned opcode, const char *data, size_t len,
                      struct ms_conn *skip);

/* The same with a frame built already (a topic's history keeps it):
 * queued by reference to sh, or copied when it is small.  Positioned
 * messages keep their order: one published by what this delivery runs
 * (a close handler) reaches each subscriber after this one. */
struct ms_shared;
long ms_topic_publish_shared(struct ms_topics *ts, const char *name,
                             size_t nlen, struct ms_shared *sh,
                             struct ms_conn *skip);

/* The names of conn's topics, through fn, in subscription order. */
void ms_topic_each_of_conn(const struct ms_conn *c,
                           void (*fn)(void *arg, const char *name,
                                      size_t len), void *arg);

/* Free every topic and subscription (lua_close, whose finalizers may
 * close sockets afterwards: they find no subscriptions left). */
void ms_topics_free(struct ms_topics *ts);


#endif
