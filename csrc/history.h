/* history.h - topic history: the messages last published to a topic,
 * each at a position (epoch, offset), kept as their shared frames */
#ifndef MS_HISTORY_H
#define MS_HISTORY_H

#include <stddef.h>
#include <stdint.h>

struct ms_shared;

/* Where a message stands in its topic's history.  The offset grows by
 * one per message; the epoch names one unbroken history, and changes
 * when a history is lost and begun again (a restart, an eviction). */
struct ms_hist_pos {
  uint64_t epoch;
  uint64_t offset;
};

/* The envelope before each payload: the position as text, 16 hex digits
 * of epoch, ':', the offset in decimal, ' '. */
#define MS_HIST_ENVELOPE_MAX (16 + 1 + 20 + 1)

/* What app:history set for a topic name or a prefix ("room:*"). */
struct ms_hist_pattern {
  struct ms_hist_pattern *next;
  size_t size;                      /* messages kept per topic */
  double ttl;                       /* seconds a message is kept; 0: no
                                       limit but size and the total */
  int prefix;                       /* name ends with '*' */
  size_t len;                       /* of name, without the '*' */
  char name[];
};

/* One kept message: its frame (envelope included) is shared with the
 * queues it was sent to. */
struct ms_hist_entry {
  struct ms_hist_entry *next;       /* in its topic, oldest first */
  struct ms_hist_entry *older, *newer; /* among all, by time */
  struct ms_hist_topic *topic;
  uint64_t offset;
  double time;
  struct ms_shared *frame;
  uint32_t data_at;                 /* where the payload begins */
  uint8_t opcode;
};

struct ms_hist_topic;

/* The histories of one process. */
struct ms_history {
  struct ms_hist_pattern *patterns;
  struct ms_hist_topic **buckets;
  size_t nbuckets, ntopics;
  uint64_t seed;
  struct ms_hist_entry *oldest, *newest;
  struct ms_hist_topic *lru_oldest, *lru_newest; /* by last publish */
  size_t bytes, max_bytes;
};

#define MS_HISTORY_MAX_BYTES ((size_t)64 << 20)

/* Make a history (NULL: out of memory). */
struct ms_history *ms_history_new(void);
void ms_history_free(struct ms_history *h);

/* Keep history for name ("room:*": every name beginning "room:"); the
 * same pattern again replaces its limits.  -1: out of memory. */
int ms_history_configure(struct ms_history *h, const char *name,
                         size_t len, size_t size, double ttl);
/* The pattern name falls under (an exact name before the longest
 * prefix), or NULL: the topic keeps no history. */
const struct ms_hist_pattern *ms_history_match(const struct ms_history *h,
                                               const char *name,
                                               size_t len);

/* Keep a message published to name at position *pos: with assign, this
 * process gives the next position of the topic; else *pos was given by
 * the process that assigns them (the master), and a position that does
 * not follow the last kept one begins the history anew.  The frame is
 * built once, envelope and all.  Returns the frame with a reference
 * for the caller to release, or NULL when memory ran out. */
struct ms_shared *ms_history_append(struct ms_history *h,
                                    const struct ms_hist_pattern *p,
                                    const char *name, size_t len,
                                    double now, unsigned opcode,
                                    const char *data, size_t dlen,
                                    int assign, struct ms_hist_pos *pos);

/* Keep a message (as ms_history_append) and queue its frame to the
 * subscribers of name but skip.  Returns how many it reached, -1 when
 * memory ran out. */
struct ms_topics;
struct ms_conn;
long ms_history_publish(struct ms_history *h, struct ms_topics *ts,
                        const struct ms_hist_pattern *p, const char *name,
                        size_t len, double now, unsigned opcode,
                        const char *data, size_t dlen, int assign,
                        struct ms_hist_pos *pos, struct ms_conn *skip);

/* The master's half: the next position of name, nothing kept.  -1: out
 * of memory. */
int ms_history_assign(struct ms_history *h, const char *name, size_t len,
                      double now, struct ms_hist_pos *pos);

/* The position of the last message of name (epoch 0, offset 0 when
 * this process keeps none; nothing is created).  Returns whether
 * name has a history in this process. */
int ms_history_current(struct ms_history *h, const char *name, size_t len,
                       double now, struct ms_hist_pos *pos);

/* As ms_history_current, but name's history begins here when it has
 * none (a fresh epoch, offset 0): a subscriber's position to come back
 * from, where this process gives the positions.  -1: out of memory. */
int ms_history_open(struct ms_history *h, const char *name, size_t len,
                    double now, struct ms_hist_pos *pos);

/* name's history is at pos, as the process that gives the positions
 * says: what this process keeps of it stays when it leads up to pos,
 * else it is dropped and the history begins at pos.  -1: out of
 * memory. */
int ms_history_open_at(struct ms_history *h, const char *name, size_t len,
                       const struct ms_hist_pos *pos);

/* The messages after since, oldest first, up to limit (0: all), with a
 * reference taken on each frame: *out is a malloc'd array of *n frames
 * the caller releases.  Returns 1 when they are all there (since is of
 * this epoch and no message after it was dropped), 0 when not (nothing
 * returned), -1 out of memory.  *current: the position of the last. */
int ms_history_since(struct ms_history *h, const char *name, size_t len,
                     double now, const struct ms_hist_pos *since,
                     struct ms_shared ***out, size_t *n,
                     struct ms_hist_pos *current);

/* The first kept entry of name with an offset after `after` (0: the
 * oldest), expired ones dropped first; walk on with ->next.  NULL: none. */
struct ms_hist_entry *ms_history_first(struct ms_history *h,
                                       const char *name, size_t len,
                                       double now, uint64_t after,
                                       uint64_t *epoch);

/* What this process keeps of name: 0 when nothing (no topic); else 1,
 * the epoch, and the offsets first .. next-1 kept (none: first ==
 * next). */
int ms_history_span(struct ms_history *h, const char *name, size_t len,
                    double now, uint64_t *epoch, uint64_t *first,
                    uint64_t *next);

/* Keep a message older than every kept one of name: pos must be the
 * one before the first kept, of the same epoch (else nothing happens:
 * 0).  time is when it was published.  1 kept (the bounds may drop it
 * at once), -1 out of memory. */
int ms_history_prepend(struct ms_history *h, const struct ms_hist_pattern *p,
                       const char *name, size_t len, double time,
                       double now, unsigned opcode, const char *data,
                       size_t dlen, const struct ms_hist_pos *pos);

/* Forget every topic's messages and positions (the patterns stay): a
 * later message begins each topic anew at its own position. */
void ms_history_forget(struct ms_history *h);

/* An epoch as text (16 lowercase hex digits, as the envelope writes it)
 * read into *epoch: 1, or 0 when s is not one. */
int ms_history_parse_epoch(const char *s, size_t len, uint64_t *epoch);

/* An offset as text (1 to 19 decimal digits, no sign or blank, at most
 * 2^63 - 1: a Lua integer) read into *offset: 1, or 0 when s is not
 * one. */
int ms_history_parse_offset(const char *s, size_t len, uint64_t *offset);

/* The envelope of pos written at out; returns its length. */
size_t ms_history_envelope(char out[MS_HIST_ENVELOPE_MAX + 1],
                           const struct ms_hist_pos *pos);

#endif
