/* workers.h - worker processes: the master forks and supervises them,
 * and relays what one publishes to the others */
#ifndef MS_WORKERS_H
#define MS_WORKERS_H

#include <stddef.h>

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

/* Free what the worker side holds (lua_close). */
void ms_workers_free(struct ms_module *m);

#endif
