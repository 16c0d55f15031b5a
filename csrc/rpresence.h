/* rpresence.h - presence across nodes through Redis: each process tells
 * the others of its members' joins and leaves and that it lives; the
 * members of a process not heard of within presence_ttl are gone */
#ifndef MS_RPRESENCE_H
#define MS_RPRESENCE_H

#include <stddef.h>
#include <stdint.h>

struct ms_backplane;
struct ms_module;
struct ms_rpres;

/* The state of one backplane's presence (NULL: out of memory); node is
 * the id its node's processes share; its messages go on the channel
 * prefix.."presence". */
struct ms_rpres *ms_rpres_new(struct ms_backplane *b, struct ms_module *m,
                              uint64_t node, const char *prefix,
                              size_t prefix_len, double ttl);
/* Free it (later, when called from inside one of its callbacks); tell:
 * the app hears a leave of each member of another process first (not
 * when the module is going away). */
void ms_rpres_free(struct ms_rpres *r, int tell);

/* Redis is up (again): tell the others every member of this process,
 * and ask them for theirs. */
void ms_rpres_up(struct ms_rpres *r);

/* This process closes its backplane: tell the others, with an empty
 * whole list, that its members are gone.  0 when handed to the
 * publishing connection (which the caller flushes); -1 when there is
 * nothing to tell or Redis is down or too far behind. */
int ms_rpres_goodbye(struct ms_rpres *r);

/* A member of this process joined topic (join) or left. */
void ms_rpres_local(struct ms_rpres *r, int join, const char *topic,
                    size_t tlen, uint64_t id, const char *info,
                    size_t ilen);

/* Whether msg is a presence message (then it was handled). */
int ms_rpres_message(struct ms_rpres *r, const char *msg, size_t mlen);

/* In a forked worker: a process of its own, knowing no other. */
void ms_rpres_forked(struct ms_rpres *r);

#endif
