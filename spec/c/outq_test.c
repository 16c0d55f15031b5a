/* outq_test.c - TAP tests for csrc/outq.c: cuts, counts and chunks */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "outq.h"
#include "tap.h"

/* ---------------------------------------------------------------------
 * A queue to test
 * ------------------------------------------------------------------- */

/* Borrowed chunks' refs, as they are released. */
struct refs {
  int released[16];
  int n;
};

static void unref(void *ctx, int ref) {
  struct refs *rs = ctx;
  if (rs->n < 16) rs->released[rs->n] = ref;
  rs->n++;
}

struct fixture {
  struct ms_outq q;
  struct outq_pool pool;
  struct refs refs;
  struct outq_release rel;
};

static void setup(struct fixture *f) {
  memset(f, 0, sizeof *f);
  f->rel.unref = unref;
  f->rel.ctx = &f->refs;
}

static void teardown(struct fixture *f) {
  outq_clear(&f->q, &f->pool, &f->rel);
  outq_pool_free(&f->pool);
}

/* A server data frame of n payload bytes, each fill; returns its size. */
static size_t data_frame(struct fixture *f, size_t n, int fill) {
  uint8_t hdr[10], *payload = malloc(n ? n : 1);
  memset(payload, fill, n);
  size_t hl = frame_write_header(hdr, WS_OP_BINARY, 1, 0, n);
  if (outq_data_copy(&f->q, &f->pool, hdr, hl, payload, n) < 0) abort();
  free(payload);
  return hl + n;
}

/* data_frame, its header written in place (outq_data_reserve). */
static size_t data_frame_in_place(struct fixture *f, size_t n, int fill) {
  size_t hl = frame_header_size(n);
  uint8_t *at = outq_data_reserve(&f->q, &f->pool, hl + n);
  if (!at) abort();
  frame_write_header(at, WS_OP_BINARY, 1, 0, n);
  memset(at + hl, fill, n);
  return hl + n;
}

/* The queue's unsent bytes, memory chunks only. */
static size_t contents(const struct ms_outq *q, uint8_t *out, size_t cap) {
  struct iovec iov[64];
  int n = outq_iov(q, iov, 64, SIZE_MAX);
  size_t len = 0;
  for (int i = 0; i < n; i++) {
    if (len + iov[i].iov_len > cap) abort();
    memcpy(out + len, iov[i].iov_base, iov[i].iov_len);
    len += iov[i].iov_len;
  }
  return len;
}

static size_t chunks(const struct ms_outq *q) {
  struct iovec iov[64];
  return (size_t)outq_iov(q, iov, 64, SIZE_MAX);
}

/* ---------------------------------------------------------------------
 * The empty queue
 * ------------------------------------------------------------------- */

/* The writer's connection, as outq.c is given it: opaque there. */
struct ms_conn {
  struct ms_outq *q;
  size_t per_call;       /* bytes taken per write, at most */
  int refuse_after;      /* calls before it takes nothing */
  int calls;
  size_t got;
};

static ssize_t never(struct ms_conn *k, size_t budget) {
  (void)budget;
  k->calls++;
  return -7;
}

static void test_empty(struct run *r) {
  struct fixture f;
  setup(&f);
  struct ms_conn k = { &f.q, 0, 0, 0, 0 };
  struct iovec iov[4];
  check(r, outq_empty(&f.q) && f.q.bytes == 0, "a new queue is empty");
  check(r, outq_unsent(&f.q) == 0, "empty: nothing unsent");
  check(r, outq_drop(&f.q, &f.pool, &f.rel, 0) == 0 && outq_empty(&f.q),
        "empty: a cut drops nothing");
  check(r, outq_drop(&f.q, &f.pool, &f.rel, 1) == 0 && outq_empty(&f.q),
        "empty: a cut keeping the head drops nothing");
  check(r, outq_iov(&f.q, iov, 4, 100) == 0, "empty: no iovecs");
  check(r, outq_flush(&f.q, &f.pool, &f.rel, never, &k) == 0 &&
        k.calls == 0,
        "empty: a flush writes nothing and calls no writer");
  outq_clear(&f.q, &f.pool, &f.rel);
  outq_consume(&f.q, &f.pool, 0, &f.rel);
  check(r, outq_empty(&f.q) && f.pool.nspare == 0,
        "empty: clear and consume of nothing");
  teardown(&f);
}

/* ---------------------------------------------------------------------
 * Unsent messages, and cuts at frame boundaries
 * ------------------------------------------------------------------- */

static void test_unsent(struct run *r) {
  struct fixture f;
  setup(&f);
  size_t a = data_frame(&f, 10, 'a');
  size_t b = data_frame(&f, 20, 'b');
  data_frame(&f, 30, 'c');
  uint8_t ping[] = { 0x89, 0x00 };
  outq_frame_copy(&f.q, &f.pool, ping, 2);        /* not a message */
  check(r, outq_unsent(&f.q) == 3 && chunks(&f.q) == 1,
        "three data frames and a ping in one chunk: 3 unsent");
  outq_consume(&f.q, &f.pool, a - 1, &f.rel);
  check(r, outq_unsent(&f.q) == 3, "all but a byte of the first: 3");
  outq_consume(&f.q, &f.pool, 1, &f.rel);
  check(r, outq_unsent(&f.q) == 2, "the first written: 2");
  outq_consume(&f.q, &f.pool, b + 5, &f.rel);
  check(r, outq_unsent(&f.q) == 1, "the second and part of the third: 1");
  outq_consume(&f.q, &f.pool, f.q.bytes - 2, &f.rel);
  check(r, outq_unsent(&f.q) == 0 && f.q.bytes == 2,
        "only the ping left: 0");
  outq_consume(&f.q, &f.pool, 2, &f.rel);
  check(r, outq_empty(&f.q) && f.pool.nspare == 1,
        "all written: empty, the chunk kept for reuse");
  teardown(&f);
}

static void test_cut(struct run *r) {
  struct fixture f;
  uint8_t buf[256];
  setup(&f);
  size_t a = data_frame(&f, 10, 'a');
  data_frame(&f, 20, 'b');
  data_frame(&f, 30, 'c');
  outq_consume(&f.q, &f.pool, 3, &f.rel);
  unsigned dropped = outq_drop(&f.q, &f.pool, &f.rel, 0);
  size_t n = contents(&f.q, buf, sizeof buf);
  check(r, dropped == 2 && f.q.bytes == a - 3 && n == a - 3 &&
        buf[n - 1] == 'a',
        "cut inside the first frame: its rest kept, 2 dropped");
  check(r, outq_unsent(&f.q) == 1, "after the cut: 1 unsent");
  teardown(&f);

  setup(&f);
  data_frame(&f, 10, 'a');
  data_frame(&f, 20, 'b');
  dropped = outq_drop(&f.q, &f.pool, &f.rel, 0);
  check(r, dropped == 2 && f.q.bytes == 0 && outq_unsent(&f.q) == 0,
        "cut before anything was written: all dropped");
  struct ms_conn k = { &f.q, 0, 0, 0, 0 };
  check(r, outq_flush(&f.q, &f.pool, &f.rel, never, &k) == -7 &&
        k.calls == 1,
        "an empty chunk left by a cut is offered to the writer");
  outq_consume(&f.q, &f.pool, 0, &f.rel);
  check(r, outq_empty(&f.q), "and popped once consumed");
  teardown(&f);

  setup(&f);
  a = data_frame(&f, 10, 'a');
  size_t b = data_frame(&f, 20, 'b');
  outq_consume(&f.q, &f.pool, a, &f.rel);
  dropped = outq_drop(&f.q, &f.pool, &f.rel, 0);
  check(r, dropped == 1 && f.q.bytes == 0,
        "cut right after a written frame: the next one dropped");
  (void)b;
  teardown(&f);
}

/* An HTTP answer, then frames, in one chunk: the bytes before the
 * chunk's first frame count as one piece, never cut. */
static void test_cut_before_first_frame(struct run *r) {
  struct fixture f;
  uint8_t buf[256];
  const char *head = "HTTP/1.1 101 Switching Protocols\r\n\r\n";
  size_t hl = strlen(head);
  setup(&f);
  outq_copy(&f.q, &f.pool, head, hl);
  data_frame(&f, 10, 'a');
  unsigned dropped = outq_drop(&f.q, &f.pool, &f.rel, 0);
  size_t n = contents(&f.q, buf, sizeof buf);
  check(r, dropped == 1 && n == hl && memcmp(buf, head, hl) == 0,
        "nothing written: the answer kept, the frame dropped");
  teardown(&f);

  setup(&f);
  outq_copy(&f.q, &f.pool, head, hl);
  data_frame(&f, 10, 'a');
  outq_consume(&f.q, &f.pool, 5, &f.rel);
  dropped = outq_drop(&f.q, &f.pool, &f.rel, 0);
  check(r, dropped == 1 && f.q.bytes == hl - 5,
        "the answer begun: its rest kept, the frame dropped");
  teardown(&f);
}

/* A frame whose payload goes on into the next chunk: the first chunk
 * of a queue is small, so a 2000-byte payload after a small frame
 * starts a second chunk, with its header left in the first. */
static void test_cut_spanning(struct run *r) {
  struct fixture f;
  setup(&f);
  size_t a = data_frame(&f, 10, 'a');
  size_t b = data_frame(&f, 2000, 'b');
  check(r, chunks(&f.q) == 2 && outq_unsent(&f.q) == 2,
        "a payload spanning two chunks");
  outq_consume(&f.q, &f.pool, 3, &f.rel);
  unsigned dropped = outq_drop(&f.q, &f.pool, &f.rel, 0);
  check(r, dropped == 1 && f.q.bytes == a - 3 && chunks(&f.q) == 1,
        "cut in the frame before it: its header and payload dropped");
  teardown(&f);

  setup(&f);
  a = data_frame(&f, 10, 'a');
  b = data_frame(&f, 2000, 'b');
  size_t c = data_frame(&f, 30, 'c');
  outq_consume(&f.q, &f.pool, a + 2, &f.rel);       /* into its header */
  dropped = outq_drop(&f.q, &f.pool, &f.rel, 0);
  check(r, dropped == 1 && f.q.bytes == b - 2 && chunks(&f.q) == 2,
        "cut in the spanning frame: its payload kept, the next dropped");
  check(r, outq_unsent(&f.q) == 1, "after it: the spanning one unsent");
  outq_consume(&f.q, &f.pool, f.q.bytes, &f.rel);
  check(r, outq_empty(&f.q) && outq_unsent(&f.q) == 0,
        "written: empty");
  (void)c;
  teardown(&f);

  /* written into the second chunk: the head is the payload's tail, the
   * bytes before its first frame */
  setup(&f);
  a = data_frame(&f, 10, 'a');
  b = data_frame(&f, 2000, 'b');
  c = data_frame(&f, 30, 'c');
  outq_consume(&f.q, &f.pool, a + b - 7, &f.rel);
  check(r, outq_unsent(&f.q) == 2, "inside the payload's tail: 2 unsent");
  dropped = outq_drop(&f.q, &f.pool, &f.rel, 0);
  check(r, dropped == 1 && f.q.bytes == 7 && outq_unsent(&f.q) == 1,
        "cut in a payload's tail: the tail kept, the next dropped");
  teardown(&f);
}

/* A TLS write is retried with the same bytes: a cut keeps the whole
 * head chunk once its first frame is reached. */
static void test_cut_whole_head(struct run *r) {
  struct fixture f;
  setup(&f);
  data_frame(&f, 10, 'a');
  data_frame(&f, 20, 'b');
  size_t all = f.q.bytes;
  outq_consume(&f.q, &f.pool, 3, &f.rel);
  unsigned dropped = outq_drop(&f.q, &f.pool, &f.rel, 1);
  check(r, dropped == 0 && f.q.bytes == all - 3 && outq_unsent(&f.q) == 2,
        "whole head: a begun chunk is kept whole");
  teardown(&f);

  /* The head chunk ends in a frame's header whose payload is in the
   * next chunk (a large string is queued so): kept whole, the head
   * would need that payload kept too, but the chunks after it are
   * dropped, payload and all. */
  setup(&f);
  size_t a0 = data_frame(&f, 10, 'a');
  size_t b0 = data_frame(&f, 2000, 'b');
  data_frame(&f, 30, 'c');
  outq_consume(&f.q, &f.pool, 3, &f.rel);
  dropped = outq_drop(&f.q, &f.pool, &f.rel, 1);
  check(r, dropped == 1 && chunks(&f.q) == 2 &&
        f.q.bytes == a0 + b0 - 3 && outq_unsent(&f.q) == 2,
        "whole head: the head chunk kept, with the spanning payload");
  outq_consume(&f.q, &f.pool, f.q.bytes, &f.rel);
  check(r, outq_empty(&f.q) && outq_unsent(&f.q) == 0,
        "whole head, written: empty");
  teardown(&f);

  setup(&f);
  size_t a = data_frame(&f, 10, 'a');
  data_frame(&f, 2000, 'b');
  data_frame(&f, 30, 'c');
  outq_consume(&f.q, &f.pool, a + 1, &f.rel);
  dropped = outq_drop(&f.q, &f.pool, &f.rel, 1);
  check(r, dropped == 1 && chunks(&f.q) == 2,
        "whole head, inside the spanning frame: as without the rule");
  teardown(&f);
}

/* ---------------------------------------------------------------------
 * Borrowed chunks: Lua strings, shared frames, files
 * ------------------------------------------------------------------- */

static void test_borrowed(struct run *r) {
  struct fixture f;
  static const char big[] = "a Lua string's bytes";
  uint8_t hdr[10];
  setup(&f);
  size_t hl = frame_write_header(hdr, WS_OP_TEXT, 1, 0, sizeof big);
  outq_frame_copy(&f.q, &f.pool, hdr, hl);
  outq_borrow(&f.q, big, sizeof big, 41);
  outq_message(&f.q);
  outq_frame_copy(&f.q, &f.pool, hdr, hl);
  outq_borrow(&f.q, big, sizeof big, 42);
  outq_message(&f.q);
  check(r, outq_unsent(&f.q) == 2 && f.q.bytes == 2 * (hl + sizeof big),
        "two borrowed strings: 2 unsent");
  outq_consume(&f.q, &f.pool, hl + sizeof big, &f.rel);
  check(r, f.refs.n == 1 && f.refs.released[0] == 41 &&
        outq_unsent(&f.q) == 1, "the first written: its ref released");
  unsigned dropped = outq_drop(&f.q, &f.pool, &f.rel, 0);
  check(r, dropped == 1 && f.refs.n == 2 && f.refs.released[1] == 42 &&
        f.q.bytes == 0, "cut: the second dropped, its ref released");
  teardown(&f);

  setup(&f);
  outq_frame_copy(&f.q, &f.pool, hdr, hl);
  outq_borrow(&f.q, big, sizeof big, 44);
  outq_message(&f.q);
  outq_consume(&f.q, &f.pool, 1, &f.rel);
  dropped = outq_drop(&f.q, &f.pool, &f.rel, 0);
  check(r, dropped == 0 && f.refs.n == 0 &&
        f.q.bytes == hl + sizeof big - 1,
        "cut in the header before a string: the string kept");
  teardown(&f);
  check(r, f.refs.n == 1 && f.refs.released[0] == 44,
        "cleared: its ref released");

  setup(&f);
  outq_borrow(&f.q, big, sizeof big, 43);
  outq_clear(&f.q, &f.pool, NULL);
  check(r, f.refs.n == 0 && outq_empty(&f.q),
        "cleared without a release: the ref is left alone");
  teardown(&f);
}

static void test_shared(struct run *r) {
  struct fixture one, two;
  setup(&one);
  setup(&two);
  size_t len = 2 + 300;
  struct ms_shared *sh = malloc(sizeof *sh + len + 8);
  sh->refs = 1;                       /* the publisher's */
  sh->len = frame_write_header(sh->bytes, WS_OP_BINARY, 1, 0, 300) + 300;
  memset(sh->bytes + sh->len - 300, 'p', 300);
  outq_shared(&one.q, sh->bytes, sh->len, sh);
  outq_shared(&two.q, sh->bytes, sh->len, sh);
  check(r, sh->refs == 3 && outq_unsent(&one.q) == 1 &&
        outq_unsent(&two.q) == 1, "a frame shared by two queues: 3 refs");
  ms_shared_release(sh);
  check(r, sh->refs == 2, "the publisher done: 2 refs");
  outq_consume(&one.q, &one.pool, 10, &one.rel);
  check(r, sh->refs == 2 && outq_unsent(&one.q) == 1,
        "partly written: still referenced");
  outq_consume(&one.q, &one.pool, sh->len - 10, &one.rel);
  check(r, sh->refs == 1 && outq_empty(&one.q),
        "written by one: 1 ref");
  unsigned dropped = outq_drop(&two.q, &two.pool, &two.rel, 0);
  /* sh is freed now: ASan and LeakSanitizer see to the rest */
  check(r, dropped == 1 && two.q.bytes == 0,
        "dropped by the other: the last ref let go");
  teardown(&one);
  teardown(&two);
}

static void test_file(struct run *r) {
  struct fixture f;
  int fds[2];
  struct iovec iov[4];
  struct outq_span s;
  setup(&f);
  if (pipe(fds) < 0) abort();
  outq_copy(&f.q, &f.pool, "head", 4);
  outq_file(&f.q, fds[0], 1000);
  outq_copy(&f.q, &f.pool, "tail", 4);
  check(r, outq_iov(&f.q, iov, 4, SIZE_MAX) == 1 && iov[0].iov_len == 4,
        "gathering stops at a file");
  outq_consume(&f.q, &f.pool, 4, &f.rel);
  outq_head(&f.q, &s);
  check(r, outq_iov(&f.q, iov, 4, SIZE_MAX) == 0 && s.fd == fds[0] &&
        s.len == 1000 && s.offset == 0, "a file at the head");
  outq_consume(&f.q, &f.pool, 600, &f.rel);
  outq_head(&f.q, &s);
  check(r, s.len == 400 && s.offset == 600 && f.q.bytes == 404,
        "partly sent: its offset moves");
  outq_clear(&f.q, &f.pool, &f.rel);
  check(r, fcntl(fds[0], F_GETFD) < 0 && errno == EBADF,
        "cleared: the queue closed the file");
  close(fds[1]);
  teardown(&f);
}

/* ---------------------------------------------------------------------
 * Frames built in the queue
 * ------------------------------------------------------------------- */

static void test_frames(struct run *r) {
  struct fixture f;
  uint8_t buf[256];
  static const uint8_t key[4] = { 1, 2, 3, 4 };
  setup(&f);
  outq_masked(&f.q, &f.pool, WS_OP_TEXT, 0, "hello", 5, key);
  outq_masked(&f.q, &f.pool, WS_OP_PING, 0, "", 0, key);
  size_t n = contents(&f.q, buf, sizeof buf);
  int ok = n == 2 + 4 + 5 + 2 + 4 && buf[0] == 0x81 && buf[1] == 0x85 &&
           memcmp(buf + 2, key, 4) == 0 && buf[11] == 0x89 &&
           buf[12] == 0x80;
  for (int i = 0; ok && i < 5; i++)
    ok = (buf[6 + i] ^ key[i & 3]) == (uint8_t)"hello"[i];
  check(r, ok, "a masked text frame and a masked ping");
  check(r, outq_unsent(&f.q) == 1, "a masked ping is not a message");
  teardown(&f);

  setup(&f);
  outq_control(&f.q, &f.pool, WS_OP_CLOSE, "\x03\xe8", 2);
  n = contents(&f.q, buf, sizeof buf);
  check(r, n == 4 && memcmp(buf, "\x88\x02\x03\xe8", 4) == 0 &&
        outq_unsent(&f.q) == 0, "a close frame, not a message");
  teardown(&f);
}

/* ---------------------------------------------------------------------
 * Flushing, and the spare chunks
 * ------------------------------------------------------------------- */

static ssize_t take(struct ms_conn *k, size_t budget) {
  struct iovec iov[64];
  if (k->calls++ >= k->refuse_after) return 0;
  int n = outq_iov(k->q, iov, 64, budget);
  size_t w = 0;
  for (int i = 0; i < n; i++) w += iov[i].iov_len;
  if (w > k->per_call) w = k->per_call;
  k->got += w;
  return (ssize_t)w;
}

static void test_flush(struct run *r) {
  struct fixture f;
  setup(&f);
  for (int i = 0; i < 3000; i++) data_frame(&f, 1000, 'x');
  size_t all = f.q.bytes;
  struct ms_conn k = { &f.q, 65536, 1000, 0, 0 };
  ssize_t written = outq_flush(&f.q, &f.pool, &f.rel, take, &k);
  check(r, written == (ssize_t)k.got && written >= OUTQ_FLUSH_BUDGET &&
        written < OUTQ_FLUSH_BUDGET + 65536,
        "the budget stops a flush (%zd bytes)", written);
  check(r, f.q.bytes == all - (size_t)written,
        "what was written left the queue");
  k.refuse_after = k.calls + 2;
  written = outq_flush(&f.q, &f.pool, &f.rel, take, &k);
  check(r, written == 2 * 65536 && !outq_empty(&f.q),
        "a refusal stops a flush");
  k.refuse_after = 1 << 30;
  outq_flush(&f.q, &f.pool, &f.rel, take, &k);
  check(r, outq_empty(&f.q) && k.got == all && outq_unsent(&f.q) == 0,
        "flushed: empty");
  check(r, f.pool.nspare > 1 && f.pool.nspare <= 64,
        "written chunks are kept for reuse (%u)", f.pool.nspare);
  unsigned spare = f.pool.nspare;
  data_frame(&f, 10, 'y');
  check(r, f.pool.nspare == spare - 1, "and reused");
  teardown(&f);
  check(r, f.pool.nspare == 0 && f.pool.spare == NULL,
        "the spare chunks freed");
}

/* ---------------------------------------------------------------------
 * Frames written in place
 * ------------------------------------------------------------------- */

static void test_in_place(struct run *r) {
  static uint8_t want[40000], got[40000];
  struct fixture f, g;
  setup(&f);
  setup(&g);
  size_t sizes[] = { 0, 10, 125, 126, 300, 8000, 8000, 8000 };
  size_t total = 0;
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    total += data_frame(&f, sizes[i], 'a' + (int)i);
    data_frame_in_place(&g, sizes[i], 'a' + (int)i);
  }
  size_t n = contents(&f.q, want, sizeof want);
  size_t m = contents(&g.q, got, sizeof got);
  check(r, n == total && m == n && memcmp(want, got, n) == 0 &&
        g.q.bytes == total,
        "frames written in place: the bytes of copied ones");
  check(r, outq_unsent(&g.q) == 8, "in place: each frame one message");
  struct iovec iov[8];
  int k = outq_iov(&g.q, iov, 8, SIZE_MAX), whole = k == 3;
  for (int i = 0; i < k; i++)
    whole &= ((const uint8_t *)iov[i].iov_base)[0] == 0x82;
  check(r, whole,
        "in place: a frame that does not fit takes a new chunk whole");
  outq_consume(&g.q, &g.pool, 3, &g.rel);     /* the first, and a byte */
  unsigned dropped = outq_drop(&g.q, &g.pool, &g.rel, 0);
  m = contents(&g.q, got, sizeof got);
  check(r, dropped == 6 && m == 11 && outq_unsent(&g.q) == 1,
        "in place: a cut keeps the rest of the frame being written");
  teardown(&f);
  teardown(&g);
}

int main(void) {
#if defined(__SANITIZE_ADDRESS__)
  printf("# built with -fsanitize=address,undefined\n");
#endif
  struct run r = { 0, 0 };
  test_empty(&r);
  test_unsent(&r);
  test_cut(&r);
  test_cut_before_first_frame(&r);
  test_cut_spanning(&r);
  test_cut_whole_head(&r);
  test_borrowed(&r);
  test_shared(&r);
  test_file(&r);
  test_frames(&r);
  test_flush(&r);
  test_in_place(&r);
  printf("1..%d\n", r.count);
  printf("outq_test: %d passed, %d failed\n", r.count - r.failed,
         r.failed);
  return r.failed ? 1 : 0;
}
