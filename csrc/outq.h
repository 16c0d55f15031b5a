/* outq.h - a connection's output queue: chunks of bytes, written in
 * order, that know where their WebSocket frames and messages end */
#ifndef MS_OUTQ_H
#define MS_OUTQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct ms_conn;                 /* whose queue is written: opaque here */

/* Queued bytes live in chunks: owned chunks copy small frames together;
 * a large payload is written straight from its Lua string, which a
 * registry reference keeps alive until it is written; a published
 * frame is written from the one copy its subscribers share; a file is
 * sent from its descriptor by sendfile.  Only outq.c changes them; the
 * writers' helpers below read them in line, on the hot path. */
struct ms_chunk {
  struct ms_chunk *next;
  const char *data;
  size_t len, sent, cap;      /* cap 0: data is not the chunk's own */
  size_t first;               /* where its first frame starts, or
                                 OUTQ_NO_FRAME (an HTTP answer, a payload) */
  unsigned msgs;              /* data messages whose last byte is here */
  struct ms_shared *shared;   /* a published frame's, or NULL */
  int ref;                    /* the Lua string's, or OUTQ_NO_REF */
  int fd;                     /* a file's, or -1 */
  char buf[];
};

#define OUTQ_NO_FRAME  SIZE_MAX
#define OUTQ_NO_REF    (-2)          /* (Lua's LUA_NOREF) */

/* The queue is a ring of chunks, so that a connection needs one pointer
 * for it: the last chunk, whose next is the first; NULL when empty.
 * Embedded in every connection: keep it this small. */
struct ms_outq {
  struct ms_chunk *tail;
  size_t bytes;                 /* queued, not yet written */
};

/* Small chunks kept for reuse, shared by a server's queues. */
struct outq_pool {
  struct ms_chunk *spare;
  unsigned nspare;
};

/* How a borrowed chunk lets go of its bytes: unref(ctx, ref) for the
 * ref it was queued with.  A NULL release (or unref) leaves refs alone:
 * the Lua state that holds them is being closed. */
struct outq_release {
  void (*unref)(void *ctx, int ref);
  void *ctx;
};

/* A published frame, shared by the queues of every subscriber: freed
 * when the last one has written or dropped it. */
struct ms_shared {
  size_t refs;
  size_t len;
  uint8_t bytes[];
};

void ms_shared_release(struct ms_shared *sh);

/* The head chunk's unsent bytes: in memory at data, or when fd >= 0
 * len bytes of that file from offset. */
struct outq_span {
  const char *data;
  size_t len;
  int fd;
  off_t offset;
};

static inline int outq_empty(const struct ms_outq *q) {
  return q->tail == NULL;
}

/* ---------------------------------------------------------------------
 * Queueing.  Each returns -1 (or NULL) when memory ran out, and then
 * has queued nothing more.
 * ------------------------------------------------------------------- */

/* Copy bytes: an HTTP answer, or the rest of a frame. */
int outq_copy(struct ms_outq *q, struct outq_pool *p, const void *data,
              size_t len);
/* A data message's last byte was queued. */
void outq_message(struct ms_outq *q);
/* Copy bytes that begin a frame. */
int outq_frame_copy(struct ms_outq *q, struct outq_pool *p,
                    const void *bytes, size_t n);
/* Room for a whole data frame of n bytes, header and payload, at the
 * end: one message.  Its address, the caller writes the n bytes; NULL
 * out of memory. */
uint8_t *outq_data_reserve(struct ms_outq *q, struct outq_pool *p,
                           size_t n);
/* Copy a data frame, its header then its payload: one message. */
int outq_data_copy(struct ms_outq *q, struct outq_pool *p, const void *hdr,
                   size_t hl, const void *data, size_t len);
/* A control frame of the server (RFC 6455 section 5.5): payload up to
 * 125 bytes. */
int outq_control(struct ms_outq *q, struct outq_pool *p, unsigned opcode,
                 const void *payload, size_t len);
/* A client's frame (section 5.3), masked with key, a message unless it
 * is a control frame. */
int outq_masked(struct ms_outq *q, struct outq_pool *p, unsigned opcode,
                unsigned rsv, const void *data, size_t len,
                const uint8_t key[4]);
/* Queue len bytes at data without copying them: a Lua string, which
 * ref keeps alive until they are written or dropped. */
int outq_borrow(struct ms_outq *q, const char *data, size_t len, int ref);
/* A whole frame, one message, from the copy its subscribers share
 * (taking a reference, given back when written or dropped). */
int outq_shared(struct ms_outq *q, const uint8_t *frame, size_t len,
                struct ms_shared *sh);
/* len bytes of the file fd, sent by sendfile; the queue owns fd once
 * this succeeds. */
int outq_file(struct ms_outq *q, int fd, size_t len);

/* ---------------------------------------------------------------------
 * Counting and cutting
 * ------------------------------------------------------------------- */

/* Data messages queued and not wholly written. */
unsigned outq_unsent(const struct ms_outq *q);

/* Cut the queue after the frame being written (a close frame may only
 * follow whole frames): what was not begun is dropped.  With whole_head
 * the head chunk is kept whole once begun (a TLS write is retried with
 * the same bytes).  Returns the data messages dropped. */
unsigned outq_drop(struct ms_outq *q, struct outq_pool *p,
                   const struct outq_release *r, int whole_head);

/* Drop everything. */
void outq_clear(struct ms_outq *q, struct outq_pool *p,
                const struct outq_release *r);

/* Free the spare chunks. */
void outq_pool_free(struct outq_pool *p);

/* ---------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------- */

/* The head chunk's unsent bytes; the queue must not be empty. */
static inline void outq_head(const struct ms_outq *q, struct outq_span *s) {
  const struct ms_chunk *h = q->tail->next;
  s->data = h->data ? h->data + h->sent : NULL;
  s->len = h->len - h->sent;
  s->fd = h->fd;
  s->offset = (off_t)h->sent;
}

/* The unsent memory chunks from the head up to the first file chunk,
 * at most n of them, stopping once budget bytes are reached (the last
 * may pass it).  Returns how many; 0 when the head is a file (or the
 * queue is empty). */
static inline int outq_iov(const struct ms_outq *q, struct iovec *iov,
                           int n, size_t budget) {
  int i = 0;
  size_t want = 0;
  if (!q->tail) return 0;
  for (const struct ms_chunk *ch = q->tail->next; ch && ch->fd < 0 &&
       i < n && want < budget; ch = ch == q->tail ? NULL : ch->next, i++) {
    iov[i].iov_base = (char *)ch->data + ch->sent;
    iov[i].iov_len = ch->len - ch->sent;
    want += iov[i].iov_len;
  }
  return i;
}

/* Drop the first w written bytes, and chunks left empty. */
void outq_consume(struct ms_outq *q, struct outq_pool *p, size_t w,
                  const struct outq_release *r);

/* Writes from the head of c's queue: the bytes written, 0 when none
 * could be (the head is then not empty), or a negative failure. */
typedef ssize_t outq_writer(struct ms_conn *c, size_t budget);

#define OUTQ_FLUSH_BUDGET (2u << 20)  /* bytes per connection per flush */

/* Write until the queue is empty, OUTQ_FLUSH_BUDGET bytes are out
 * (fairness between connections) or the writer refuses more or fails.
 * Returns the bytes written, or the writer's failure. */
ssize_t outq_flush(struct ms_outq *q, struct outq_pool *p,
                   const struct outq_release *r, outq_writer *write,
                   struct ms_conn *c);

#endif
