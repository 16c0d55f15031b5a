/* outq.c - a connection's output queue: chunks of bytes, written in
 * order, that know where their WebSocket frames and messages end */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "outq.h"

#define CHUNK_CAP      (16384 - sizeof(struct ms_chunk))
#define CHUNK_SMALL    (1024 - sizeof(struct ms_chunk))
#define FREE_CHUNKS    64      /* spare chunks a server keeps */

void ms_shared_release(struct ms_shared *sh) {
  if (--sh->refs == 0) free(sh);
}

/* ---------------------------------------------------------------------
 * Chunks
 * ------------------------------------------------------------------- */

/* A chunk holding len bytes at data, none sent, no frame, no message,
 * nothing to release; its cap is left as it is. */
static struct ms_chunk *chunk_init(struct ms_chunk *ch, const char *data,
                                   size_t len) {
  ch->next = NULL;
  ch->data = data;
  ch->len = len;
  ch->sent = 0;
  ch->first = OUTQ_NO_FRAME;
  ch->msgs = 0;
  ch->shared = NULL;
  ch->ref = OUTQ_NO_REF;
  ch->fd = -1;
  return ch;
}

/* A chunk for need bytes at the end of a queue.  Spare chunks are
 * reused first.  Without one, a queue's first chunk is small when need
 * is: many sockets queueing a little at once (a close to all at
 * shutdown, a publish to thousands) must not take 16 KiB each; a queue
 * that fills it grows by full chunks. */
static struct ms_chunk *chunk_new(struct outq_pool *p, size_t need,
                                  int first) {
  struct ms_chunk *ch;
  if (p->spare && need <= p->spare->cap) {
    ch = p->spare;
    p->spare = ch->next;
    p->nspare--;
  } else {
    size_t cap = need > CHUNK_CAP ? need
                 : first && need <= CHUNK_SMALL ? CHUNK_SMALL : CHUNK_CAP;
    ch = malloc(sizeof *ch + cap);
    if (!ch) return NULL;
    ch->cap = cap;
  }
  return chunk_init(ch, ch->buf, 0);
}

/* A chunk that points at bytes it does not own (a Lua string, a shared
 * frame, a file): the caller sets what keeps them alive. */
static struct ms_chunk *chunk_borrow(const char *data, size_t len) {
  struct ms_chunk *ch = malloc(sizeof *ch);
  if (!ch) return NULL;
  ch->cap = 0;
  return chunk_init(ch, data, len);
}

static void chunk_free(struct outq_pool *p, struct ms_chunk *ch,
                       const struct outq_release *r) {
  if (ch->ref != OUTQ_NO_REF || ch->fd >= 0 || ch->shared) {
    if (ch->ref != OUTQ_NO_REF && r && r->unref) r->unref(r->ctx, ch->ref);
    if (ch->fd >= 0) close(ch->fd);
    if (ch->shared) ms_shared_release(ch->shared);
    free(ch);
  } else if ((ch->cap == CHUNK_CAP || ch->cap == CHUNK_SMALL) &&
             p->nspare < FREE_CHUNKS) {
    ch->next = p->spare;
    p->spare = ch;
    p->nspare++;
  } else {
    free(ch);
  }
}

void outq_pool_free(struct outq_pool *p) {
  while (p->spare) {
    struct ms_chunk *next = p->spare->next;
    free(p->spare);
    p->spare = next;
  }
  p->nspare = 0;
}

/* Free bytes at the end of an owned chunk; 0 for strings and files. */
static size_t chunk_room(const struct ms_chunk *ch) {
  return ch && ch->data == ch->buf ? ch->cap - ch->len : 0;
}

static struct ms_chunk *first_of(const struct ms_outq *q) {
  return q->tail ? q->tail->next : NULL;
}

static void link_last(struct ms_outq *q, struct ms_chunk *ch) {
  if (q->tail) {
    ch->next = q->tail->next;
    q->tail->next = ch;
  } else {
    ch->next = ch;
  }
  q->tail = ch;
}

/* ---------------------------------------------------------------------
 * Queueing
 * ------------------------------------------------------------------- */

/* The chunk to append len bytes to: the last, or a new one. */
static inline struct ms_chunk *tail_for(struct ms_outq *q,
                                        struct outq_pool *p, size_t len) {
  struct ms_chunk *t = q->tail;
  if (!t || chunk_room(t) < len) {
    t = chunk_new(p, len, !t);
    if (!t) return NULL;
    link_last(q, t);
  }
  return t;
}

/* Append n bytes to t, the last chunk, which has room for them. */
static inline void append(struct ms_outq *q, struct ms_chunk *t,
                          const void *data, size_t n) {
  if (n) memcpy(t->buf + t->len, data, n);
  t->len += n;
  q->bytes += n;
}

/* Room for len bytes at the end: their address; the caller writes
 * them all. */
static uint8_t *reserve(struct ms_outq *q, struct outq_pool *p, size_t len) {
  struct ms_chunk *t = tail_for(q, p, len);
  if (!t) return NULL;
  uint8_t *at = (uint8_t *)t->buf + t->len;
  t->len += len;
  q->bytes += len;
  return at;
}

int outq_copy(struct ms_outq *q, struct outq_pool *p, const void *data,
              size_t len) {
  struct ms_chunk *t = tail_for(q, p, len);
  if (!t) return -1;
  append(q, t, data, len);
  return 0;
}

/* A frame's header ends the queue but for back bytes: a chunk knows
 * where its first frame starts, for outq_drop to walk its frames. */
static void framed(struct ms_outq *q, size_t back) {
  struct ms_chunk *t = q->tail;
  if (t->first == OUTQ_NO_FRAME) t->first = t->len - back;
}

void outq_message(struct ms_outq *q) {
  q->tail->msgs++;
}

int outq_frame_copy(struct ms_outq *q, struct outq_pool *p,
                    const void *bytes, size_t n) {
  struct ms_chunk *t = tail_for(q, p, n);
  if (!t) return -1;
  if (t->first == OUTQ_NO_FRAME) t->first = t->len;
  append(q, t, bytes, n);
  return 0;
}

uint8_t *outq_data_reserve(struct ms_outq *q, struct outq_pool *p,
                           size_t n) {
  uint8_t *at = reserve(q, p, n);
  if (!at) return NULL;
  framed(q, n);
  q->tail->msgs++;
  return at;
}

/* The header goes where it fits, and the payload after it while it
 * fits, else into a chunk of its own. */
int outq_data_copy(struct ms_outq *q, struct outq_pool *p, const void *hdr,
                   size_t hl, const void *data, size_t len) {
  struct ms_chunk *t = tail_for(q, p, hl);
  if (!t) return -1;
  if (t->first == OUTQ_NO_FRAME) t->first = t->len;
  append(q, t, hdr, hl);
  if (chunk_room(t) < len && !(t = tail_for(q, p, len))) return -1;
  append(q, t, data, len);
  t->msgs++;
  return 0;
}

int outq_control(struct ms_outq *q, struct outq_pool *p, unsigned opcode,
                 const void *payload, size_t len) {
  uint8_t frame[2 + WS_CONTROL_MAX];
  frame[0] = (uint8_t)(0x80 | opcode);
  frame[1] = (uint8_t)len;
  if (len) memcpy(frame + 2, payload, len);
  return outq_frame_copy(q, p, frame, 2 + len);
}

int outq_masked(struct ms_outq *q, struct outq_pool *p, unsigned opcode,
                unsigned rsv, const void *data, size_t len,
                const uint8_t key[4]) {
  uint8_t hdr[WS_FRAME_HEADER_MAX];
  size_t hl = frame_write_header(hdr, opcode, 1, rsv, len);
  hdr[1] |= 0x80;
  memcpy(hdr + hl, key, 4);
  uint8_t *at = reserve(q, p, hl + 4 + len);
  if (!at) return -1;
  framed(q, hl + 4 + len);
  if (opcode < 8) outq_message(q);
  memcpy(at, hdr, hl + 4);
  frame_mask_copy(at + hl + 4, data, len, key);
  return 0;
}

int outq_borrow(struct ms_outq *q, const char *data, size_t len, int ref) {
  struct ms_chunk *ch = chunk_borrow(data, len);
  if (!ch) return -1;
  ch->ref = ref;
  link_last(q, ch);
  q->bytes += len;
  return 0;
}

int outq_shared(struct ms_outq *q, const uint8_t *frame, size_t len,
                struct ms_shared *sh) {
  struct ms_chunk *ch = chunk_borrow((const char *)frame, len);
  if (!ch) return -1;
  ch->first = 0;
  ch->msgs = 1;
  ch->shared = sh;
  sh->refs++;
  link_last(q, ch);
  q->bytes += len;
  return 0;
}

int outq_file(struct ms_outq *q, int fd, size_t len) {
  struct ms_chunk *ch = chunk_borrow(NULL, len);
  if (!ch) return -1;
  ch->fd = fd;
  link_last(q, ch);
  q->bytes += len;
  return 0;
}

void outq_clear(struct ms_outq *q, struct outq_pool *p,
                const struct outq_release *r) {
  struct ms_chunk *ch = first_of(q), *next;
  if (ch) q->tail->next = NULL;           /* open the ring */
  for (; ch; ch = next) {
    next = ch->next;
    chunk_free(p, ch, r);
  }
  q->tail = NULL;
  q->bytes = 0;
}

/* ---------------------------------------------------------------------
 * Counting and cutting
 * ------------------------------------------------------------------- */

/* The head chunk's frames: the data messages ending in its written
 * part, and where the frame being written ends (the first frame
 * boundary at or after sent; bytes before the chunk's first frame, a
 * frame's tail or an HTTP answer, count as one).  A frame whose payload
 * goes on into the next chunk leaves cut at OUTQ_NO_FRAME. */
struct head_walk {
  size_t cut;
  unsigned written;       /* messages ending at or before sent */
  unsigned kept;          /* messages ending at or before cut */
  int open;               /* its last frame goes on in the next chunk */
};

static struct head_walk walk_head(const struct ms_chunk *h) {
  struct head_walk w = { OUTQ_NO_FRAME, 0, 0, 0 };
  size_t off = h->first == OUTQ_NO_FRAME ? h->len : h->first;
  unsigned walked = 0;
  if (off >= h->sent) w.cut = off;
  while (off < h->len) {
    struct frame_header fh;
    const uint8_t *at = (const uint8_t *)h->data + off;
    int hl = frame_parse_header(at, h->len - off, &fh);
    if (hl <= 0 || fh.length > h->len - off - (size_t)hl) {
      w.open = 1;             /* the payload is in the next chunk */
      break;
    }
    off += (size_t)hl + (size_t)fh.length;
    if (w.cut == OUTQ_NO_FRAME && off >= h->sent) w.cut = off;
    if (fh.opcode < 8 && fh.fin) {
      walked++;
      if (off <= h->sent) w.written++;
      if (off <= w.cut) w.kept++;
    }
  }
  if (h->msgs > walked) {     /* a message's tail: it ends at first */
    if ((h->first == OUTQ_NO_FRAME ? h->len : h->first) <= h->sent)
      w.written++;
    w.kept++;
  }
  return w;
}

unsigned outq_unsent(const struct ms_outq *q) {
  const struct ms_chunk *h = first_of(q), *ch = h;
  unsigned n = 0;
  if (!h) return 0;
  do n += ch->msgs;
  while ((ch = ch->next) != h);
  if (n && h->sent) n -= walk_head(h).written;
  return n;
}

unsigned outq_drop(struct ms_outq *q, struct outq_pool *p,
                   const struct outq_release *r, int whole_head) {
  struct ms_chunk *h = first_of(q), *keep = h;
  if (!h) return 0;
  unsigned total = 0, kept;
  q->tail->next = NULL;                   /* open the ring */
  for (const struct ms_chunk *ch = h; ch; ch = ch->next) total += ch->msgs;
  struct head_walk w = walk_head(h);
  size_t cut = w.cut;
  kept = w.kept;
  if (whole_head && cut != OUTQ_NO_FRAME) {
    cut = h->len;
    kept = h->msgs;
    /* a frame whose header ends the chunk keeps its payload too */
    if (w.open) cut = OUTQ_NO_FRAME;
  }
  if (cut == OUTQ_NO_FRAME && h->next) {    /* keep the frame's payload */
    keep = h->next;
    cut = keep->first == OUTQ_NO_FRAME ? keep->len : keep->first;
    kept = h->msgs + 1;
  }
  if (cut != OUTQ_NO_FRAME) {
    q->bytes -= keep->len - cut;
    keep->len = cut;
    if (keep->first >= cut) keep->first = OUTQ_NO_FRAME;
    keep->msgs = keep == h ? kept : 1;
  }
  struct ms_chunk *ch = keep->next;
  keep->next = h;                         /* close it again */
  q->tail = keep;
  while (ch) {
    struct ms_chunk *next = ch->next;
    q->bytes -= ch->len - ch->sent;
    chunk_free(p, ch, r);
    ch = next;
  }
  return total - kept;
}

/* ---------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------- */

static inline void consume(struct ms_outq *q, struct outq_pool *p,
                           size_t w, const struct outq_release *r) {
  q->bytes -= w;
  while (q->tail) {
    struct ms_chunk *ch = q->tail->next;
    size_t left = ch->len - ch->sent;
    if (w < left) {
      ch->sent += w;
      break;
    }
    w -= left;
    if (ch == q->tail) q->tail = NULL;
    else q->tail->next = ch->next;
    chunk_free(p, ch, r);
  }
}

void outq_consume(struct ms_outq *q, struct outq_pool *p, size_t w,
                  const struct outq_release *r) {
  consume(q, p, w, r);
}

ssize_t outq_flush(struct ms_outq *q, struct outq_pool *p,
                   const struct outq_release *r, outq_writer *write,
                   struct ms_conn *c) {
  size_t budget = OUTQ_FLUSH_BUDGET;
  while (q->tail && budget) {
    ssize_t w = write(c, budget);
    if (w < 0) return w;
    if (w == 0 && q->tail->next->len > q->tail->next->sent)
      break;                          /* the kernel is full */
    consume(q, p, (size_t)w, r);      /* (empty chunks pop too) */
    budget = (size_t)w < budget ? budget - (size_t)w : 0;
  }
  return (ssize_t)(OUTQ_FLUSH_BUDGET - budget);
}
