/* workers.h - worker processes: the master forks and supervises them,
 * and relays what one publishes to the others */
#ifndef MS_WORKERS_H
#define MS_WORKERS_H

#include <stddef.h>
#include <stdint.h>

struct ms_module;
struct ms_link;

/* The most workers a listen may ask for. */
#define MS_WORKERS_MAX 256

/* In the master: fork m->nworkers workers, restart those that die, and
 * forward SIGTERM, SIGINT and SIGHUP to them; return 0 once they have
 * all exited after a shutdown signal.  In a worker (fork returned 0):
 * the servers listen on their own SO_REUSEPORT sockets, the link to the
 * master is set up, and it returns 1: the worker goes on to serve. */
int ms_workers_run(struct ms_module *m);

/* In a worker: send a publish to the master, which hands it to every
 * other worker.  Delivery is at-most-once: a worker whose link has
 * fallen 64 MiB behind loses what does not fit (counted, logged). */
void ms_workers_publish(struct ms_module *m, const char *topic,
                        size_t topic_len, unsigned opcode,
                        const char *data, size_t len);

/* In a worker: publish to a topic with history, without waiting.  The
 * message goes to the master, which gives it its position and hands it
 * to every worker, this one too, where it is kept and delivered (to
 * every subscriber but skip) in the master's order.  Then
 * ms_event_published tells the binding its position and the sockets it
 * reached here, under the number *request; or that it failed: the
 * master is gone, had no memory, or did not answer within 5 s (the
 * message may still come later, to skip too).  The binding keeps skip
 * alive until then.  Returns -1 when it cannot be sent (no link, the
 * link full, no memory): nothing will be told. */
struct ms_conn;
int ms_workers_publish_history(struct ms_module *m, const char *topic,
                               size_t topic_len, unsigned opcode,
                               const char *data, size_t len,
                               struct ms_conn *skip, uint64_t *request);

/* In a worker: tell the master that member id joined topic with info
 * (join), or left (its topic may be empty); the master tells the other
 * workers.  At most once, as a publish. */
void ms_workers_presence(struct ms_module *m, int join, const char *topic,
                         size_t topic_len, uint64_t id, const char *info,
                         size_t len);

/* In a worker: ask the master to answer once everything it relayed so
 * far is here, and to give topic (with history; "" none) its position,
 * beginning the topic's epoch when nothing was published to it.
 * Nothing waits: ms_event_recovered(m, *id) says the answer came (the
 * topic's position is kept here then), or that none came within 5 s or
 * the link was lost.  -1 when it could not be sent. */
int ms_workers_sync(struct ms_module *m, const char *topic,
                    size_t topic_len, uint64_t *id);

/* Free what the worker side holds (lua_close). */
void ms_workers_free(struct ms_module *m);

#endif
