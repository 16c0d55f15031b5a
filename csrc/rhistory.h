/* rhistory.h - topic history kept in Redis Streams: Redis gives each
 * message its position, and every node keeps and delivers the messages
 * in Redis's order as they come back through the backplane */
#ifndef MS_RHISTORY_H
#define MS_RHISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "backplane.h"

struct ms_backplane;
struct ms_conn;
struct ms_hist_pattern;
struct ms_module;
struct ms_rhist;
struct redisAsyncContext;

/* The state of one backplane's history (NULL: out of memory). */
struct ms_rhist *ms_rhist_new(struct ms_backplane *b, struct ms_module *m);
/* Free it (later, when called from inside one of its callbacks); the
 * publishes still pending are forgotten without a word. */
void ms_rhist_free(struct ms_rhist *r);
/* The backplane closed (its connections dropped): with tell, what is
 * pending fails ("the backplane is closed"), the binding told; then r
 * is freed. */
void ms_rhist_close(struct ms_rhist *r, int tell);

/* Send a publish to Redis on pub (the backplane's publishing
 * connection, up): MS_BP_SENT with *request set, and the binding is
 * told its position and reach (ms_event_published) once both the
 * answer and the message are back, or that it failed. */
enum ms_backplane_status ms_rhist_publish(struct ms_rhist *r,
                                          struct redisAsyncContext *pub,
                                          const char *prefix,
                                          size_t prefix_len,
                                          const struct ms_hist_pattern *p,
                                          const char *topic, size_t tlen,
                                          unsigned opcode, const char *data,
                                          size_t len, struct ms_conn *skip,
                                          uint64_t *request);

/* Read what Redis keeps of topic after offset `after`, and keep it
 * beside what this process kept (newer messages delivered to the
 * subscribers): MS_BP_SENT with *request set, and ms_event_recovered
 * follows once it is done or failed.  A read of topic already under way
 * from as far back serves (its request is given); MS_BP_DROPPED when
 * too many reads are under way. */
enum ms_backplane_status ms_rhist_fetch(struct ms_rhist *r,
                                        struct redisAsyncContext *pub,
                                        const char *prefix,
                                        size_t prefix_len,
                                        const struct ms_hist_pattern *pat,
                                        const char *topic, size_t tlen,
                                        uint64_t after, uint64_t *request);

/* Whether msg, received on the channel of topic, is a message of the
 * history kind (then it was handled: kept, delivered). */
int ms_rhist_message(struct ms_rhist *r, const char *topic, size_t tlen,
                     const char *msg, size_t mlen);

/* Redis went away: the publishes pending fail (or, positioned but not
 * yet back, report that they reached nobody here), and what this
 * process kept is forgotten: it may miss what others publish now. */
void ms_rhist_lost(struct ms_rhist *r);

/* In a forked worker: its own process id; nothing pending. */
void ms_rhist_forked(struct ms_rhist *r);

#endif
