/* fuzz_inflate.c - deflate_inflate_chunk, the receiving half of RFC 7692,
 * on messages fed frame by frame in random chunks (empty ones included)
 * with last set on the final call.  The output buffer may never pass
 * max_size, an error must drop the stream, and:
 *  - raw mode: the payloads are the fuzzer's bytes; reading each message
 *    in chunks must give what reading it in one call gives;
 *  - valid mode: the fuzzer's bytes are the plain messages, compressed
 *    first by zlib or by deflate_compress; each must come back intact,
 *    or fail with DEFLATE_TOO_BIG when it is longer than max_size.
 * Input: FUZZ_SEED_LEN bytes for the splitter, a mode byte (see struct
 * mode), then messages, each a 2-byte big-endian length and its bytes
 * (a short last one takes what is left). */
#define ZLIB_CONST
#include <zlib.h>

#include "deflate.h"
#include "fuzz.h"

#define BIG_MAX_SIZE (64 * 1024)

struct mode {
  int valid;        /* bit 0: compress the messages first */
  int bits;         /* bits 1-3: client_max_window_bits 8 + n */
  int no_takeover;  /* bit 4: client_no_context_takeover */
  int small_max;    /* bit 5: max_size 1..4096, not 64 KiB */
  int own_sender;   /* bit 6: deflate_compress compresses, not zlib */
  int finish;       /* bit 7: zlib ends some messages with BFINAL */
};

static struct mode mode_from(uint8_t b) {
  struct mode m = { b & 1, 8 + (b >> 1 & 7), b >> 4 & 1, b >> 5 & 1,
                    b >> 6 & 1, b >> 7 & 1 };
  return m;
}

/* The next message of the input: its bytes and length. */
static int next_message(const uint8_t **p, size_t *left, const uint8_t **msg,
                        size_t *len) {
  if (*left < 2) return 0;
  size_t want = (size_t)(*p)[0] << 8 | (*p)[1];
  *p += 2;
  *left -= 2;
  *len = want < *left ? want : *left;
  *msg = *p;
  *p += *len;
  *left -= *len;
  return 1;
}

/* What must hold after every call, whatever the data. */
static void check_call(const struct deflate_state *st,
                       const struct deflate_params *p,
                       const struct deflate_buf *out, size_t max_size,
                       int rc, int last) {
  FUZZ_CHECK(rc == DEFLATE_OK || rc == DEFLATE_TOO_BIG ||
             rc == DEFLATE_BAD_DATA, "deflate_inflate_chunk returned %d",
             rc);
  FUZZ_CHECK(out->len <= out->cap && out->len <= max_size &&
             out->cap <= max_size, "len %zu, cap %zu, max_size %zu",
             out->len, out->cap, max_size);
  FUZZ_CHECK(rc == DEFLATE_OK || st->decompress == NULL,
             "error %d leaves the stream open", rc);
  FUZZ_CHECK((rc == DEFLATE_OK && !last) ||
             (!st->got_input && !st->ended),
             "a message's flags outlive it");
  FUZZ_CHECK(!last || !p->client_no_context_takeover ||
             st->decompress == NULL,
             "no context takeover, yet the stream outlives the message");
  FUZZ_CHECK((deflate_state_memory(st) != 0) == (st->decompress != NULL),
             "memory %zu with the stream %s", deflate_state_memory(st),
             st->decompress ? "open" : "closed");
}

/* One message's payload in random chunks, the last call flagged (with
 * the final bytes, or alone and empty); out starts empty. */
static int receive(struct deflate_state *st, const struct deflate_params *p,
                   const uint8_t *in, size_t n, size_t max_size,
                   struct deflate_buf *out, struct fuzz_rng *rng) {
  out->len = 0;
  size_t at = 0;
  int sent_last = 0, rc = DEFLATE_OK;
  while (at < n) {
    size_t k = fuzz_next(rng) % 8 == 0 ? 0 : fuzz_chunk(rng, n - at);
    int last = at + k == n && (fuzz_next(rng) & 1);
    uint8_t *chunk = fuzz_copy(in + at, k);
    rc = deflate_inflate_chunk(st, p, chunk, k, last, max_size, out);
    free(chunk);
    check_call(st, p, out, max_size, rc, last);
    if (rc != DEFLATE_OK) return rc;
    at += k;
    sent_last = last;
  }
  if (!sent_last) {
    uint8_t *none = fuzz_copy("", 0);
    rc = deflate_inflate_chunk(st, p, none, 0, 1, max_size, out);
    free(none);
    check_call(st, p, out, max_size, rc, 1);
  }
  return rc;
}

/* ---------------------------------------------------------------------
 * Raw mode: chunked against whole
 * ------------------------------------------------------------------- */

static void run_raw(const uint8_t *s, size_t n,
                    const struct deflate_params *p, size_t max_size,
                    struct fuzz_rng *rng) {
  struct deflate_state chunked = { 0 }, whole = { 0 };
  struct deflate_buf out = { 0 }, ref = { 0 };
  const uint8_t *msg;
  size_t len;
  while (next_message(&s, &n, &msg, &len)) {
    int rc = receive(&chunked, p, msg, len, max_size, &out, rng);
    ref.len = 0;
    uint8_t *copy = fuzz_copy(msg, len);
    int ref_rc = deflate_inflate_chunk(&whole, p, copy, len, 1, max_size,
                                       &ref);
    free(copy);
    check_call(&whole, p, &ref, max_size, ref_rc, 1);
    /* zlib (built without INFLATE_STRICT) checks a back-reference only
     * against what it can reach: its window plus the output of the
     * current inflate() call.  So a reference beyond a negotiated window
     * under 15 bits (the sender broke its own agreement) passes or fails
     * (1007) by where the calls cut the message: a frame's end, or the
     * output buffer's growth inside one deflate_inflate_chunk, so either
     * side may be the one that refuses; the side that takes it may
     * then outgrow max_size (1009) where the other refused (1007).
     * With 15 bits the window covers every DEFLATE distance and the two
     * must agree. */
    int bad = rc == DEFLATE_BAD_DATA, ref_bad = ref_rc == DEFLATE_BAD_DATA;
    int other = bad ? ref_rc : rc;
    int too_far_back = p->client_max_window_bits < 15 && bad != ref_bad &&
                       (other == DEFLATE_OK || other == DEFLATE_TOO_BIG);
    FUZZ_CHECK(rc == ref_rc || too_far_back, "in chunks %d, whole %d", rc,
               ref_rc);
    if (rc != DEFLATE_OK || ref_rc != DEFLATE_OK) break;
    FUZZ_CHECK(out.len == ref.len &&
               (!out.len || memcmp(out.data, ref.data, out.len) == 0),
               "in chunks %zu bytes, whole %zu, or other bytes", out.len,
               ref.len);
  }
  deflate_state_free(&chunked);
  deflate_state_free(&whole);
  deflate_buf_free(&out);
  deflate_buf_free(&ref);
}

/* ---------------------------------------------------------------------
 * Valid mode: compressed by a sender, inflated back
 * ------------------------------------------------------------------- */

/* zlib as a client's compressor: a sync flush less its 00 00 ff ff
 * (section 7.2.1), or a final block; either may end a message. */
static void zlib_send(z_stream *z, const uint8_t *in, size_t n, int finish,
                      struct deflate_buf *out) {
  out->len = 0;
  z->next_in = in;
  z->avail_in = (uInt)n;
  for (;;) {
    if (out->cap - out->len < 64) {
      size_t cap = out->cap * 2 + deflateBound(z, (uLong)n) + 64;
      if (!(out->data = realloc(out->data, cap))) abort();
      out->cap = cap;
    }
    size_t room = out->cap - out->len;
    z->next_out = out->data + out->len;
    z->avail_out = (uInt)room;
    int rc = deflate(z, finish ? Z_FINISH : Z_SYNC_FLUSH);
    out->len += room - z->avail_out;
    FUZZ_CHECK(rc == Z_OK || rc == Z_BUF_ERROR || rc == Z_STREAM_END,
               "zlib's deflate returned %d", rc);
    if (finish ? rc == Z_STREAM_END : z->avail_out != 0) break;
  }
  if (!finish && out->len >= 4 &&
      memcmp(out->data + out->len - 4, "\0\0\xff\xff", 4) == 0)
    out->len -= 4;
}

static void run_valid(const uint8_t *s, size_t n, const struct mode *m,
                      const struct deflate_params *p, size_t max_size,
                      struct fuzz_rng *rng) {
  /* zlib's raw deflate has no 8-bit window: a sender asked for 8 uses 9,
   * whose matches reach back 250 bytes at most (deflate.c comments) */
  int send_bits = m->bits < 9 ? 9 : m->bits;
  uint32_t x = fuzz_next(rng);
  int level = (int)(x % 11) - 1, mem_level = 1 + (int)(x >> 8) % 9;
  static const int strategies[] = { Z_DEFAULT_STRATEGY, Z_FILTERED,
                                    Z_HUFFMAN_ONLY, Z_RLE, Z_FIXED };
  int strategy = strategies[(x >> 16) % 5];

  z_stream z;
  memset(&z, 0, sizeof z);
  if (!m->own_sender)
    FUZZ_CHECK(deflateInit2(&z, level, Z_DEFLATED, -send_bits, mem_level,
                            strategy) == Z_OK, "deflateInit2 failed");
  struct deflate_params sp = *p;
  sp.server_max_window_bits = (uint8_t)send_bits;
  sp.server_no_context_takeover = p->client_no_context_takeover;
  sp.level = (int8_t)level;
  sp.mem_level = (uint8_t)mem_level;
  struct deflate_state sender = { 0 }, receiver = { 0 };
  struct deflate_buf wire = { 0 }, out = { 0 };

  const uint8_t *msg;
  size_t len;
  while (next_message(&s, &n, &msg, &len)) {
    if (m->own_sender) {
      wire.len = 0;
      int rc = deflate_compress(&sender, &sp, msg, len, &wire);
      FUZZ_CHECK(rc == DEFLATE_OK, "deflate_compress returned %d", rc);
    } else {
      int finish = m->finish && fuzz_next(rng) % 3 == 0;
      zlib_send(&z, msg, len, finish, &wire);
      /* after a final block, or without takeover, start afresh */
      if (finish || p->client_no_context_takeover) deflateReset(&z);
    }
    int rc = receive(&receiver, p, wire.data ? wire.data : (uint8_t *)"",
                     wire.len, max_size, &out, rng);
    if (len > max_size) {
      FUZZ_CHECK(rc == DEFLATE_TOO_BIG, "%zu bytes, max_size %zu: %d", len,
                 max_size, rc);
      break;
    }
    FUZZ_CHECK(rc == DEFLATE_OK, "a valid message of %zu bytes (%zu "
               "compressed) fails with %d", len, wire.len, rc);
    FUZZ_CHECK(out.len == len && (!len || memcmp(out.data, msg, len) == 0),
               "%zu bytes in, %zu out, or other bytes", len, out.len);
  }
  if (!m->own_sender) deflateEnd(&z);
  deflate_state_free(&sender);
  deflate_state_free(&receiver);
  deflate_buf_free(&wire);
  deflate_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FUZZ_SEED_LEN + 1) return 0;
  struct fuzz_rng rng = fuzz_rng_from(data);
  struct mode m = mode_from(data[FUZZ_SEED_LEN]);
  const uint8_t *s = data + FUZZ_SEED_LEN + 1;
  size_t n = size - FUZZ_SEED_LEN - 1;

  struct deflate_params p = { 15, (uint8_t)m.bits, 0,
                              (uint8_t)m.no_takeover, -1, 8, 0 };
  size_t max_size = m.small_max ? 1 + fuzz_next(&rng) % 4096
                                : BIG_MAX_SIZE;
  if (m.valid) run_valid(s, n, &m, &p, max_size, &rng);
  else run_raw(s, n, &p, max_size, &rng);
  return 0;
}
