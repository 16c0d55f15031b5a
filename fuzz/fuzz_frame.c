/* fuzz_frame.c - a client's frame stream read by frame_reader.c, the
 * reader conn.c dispatches, fed in random chunks, against the whole
 * stream at once and against a byte-at-a-time reference of RFC 6455
 * section 5.2: all must log the same frames.
 * Input: FUZZ_SEED_LEN bytes for the splitter, a flags byte (bit 0:
 * permessage-deflate was negotiated, so RSV1 is allowed), the stream. */
#include "deflate.h"
#include "frame.h"
#include "frame_reader.h"
#include "fuzz.h"

/* What a reader saw: header records, and the unmasked payload bytes. */
struct log {
  uint8_t *data;
  size_t len, cap;
};

static void log_put(struct log *l, const void *p, size_t n) {
  if (l->len + n > l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 256;
    while (cap < l->len + n) cap *= 2;
    if (!(l->data = realloc(l->data, cap))) abort();
    l->cap = cap;
  }
  if (n) memcpy(l->data + l->len, p, n);
  l->len += n;
}

static void log_u64(struct log *l, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
  log_put(l, b, 8);
}

struct trace {
  struct log events, payload;
};

/* A header and the close code frame_check gave it; payload_at ties it
 * to the payload bytes logged so far. */
static void log_header(struct trace *t, const struct frame_header *h,
                       int code) {
  uint8_t b[10] = { 'H', h->fin, h->rsv, h->opcode, h->masked,
                    h->mask[0], h->mask[1], h->mask[2], h->mask[3],
                    (uint8_t)(code - 1000) };
  if (!h->masked) memset(b + 5, 0, 4);    /* no key on the wire */
  log_put(&t->events, b, sizeof b);
  log_u64(&t->events, h->length);
  log_u64(&t->events, t->payload.len);
}

static void log_bad_length(struct trace *t) {
  log_put(&t->events, "X", 1);
  log_u64(&t->events, t->payload.len);
}

/* What ends a read: where it stopped and in which state. */
struct ending {
  uint64_t left, hdr_len, mask_off, in_frame, in_message, stopped;
};

/* The header round-trips through frame_write_header, in the fewest
 * bytes (section 5.2: "the minimal number of bytes MUST be used"). */
static void check_write_header(const struct frame_header *h) {
  uint8_t out[10];
  size_t k = frame_write_header(out, h->opcode, h->fin, h->rsv, h->length);
  size_t want = h->length < 126 ? 2 : h->length <= 0xFFFF ? 4 : 10;
  FUZZ_CHECK(k == want, "frame_write_header wrote %zu bytes for %llu",
             k, (unsigned long long)h->length);
  struct frame_header back;
  int hl = frame_parse_header(out, k, &back);
  FUZZ_CHECK(hl == (int)k && back.fin == h->fin && back.rsv == h->rsv &&
             back.opcode == h->opcode && back.length == h->length &&
             !back.masked, "a written header parses back otherwise");
}

/* ---------------------------------------------------------------------
 * The reader under test: frame_reader.c, as process_frames drives it
 * ------------------------------------------------------------------- */

struct real {
  struct frame_reader fr;
  unsigned flags;
  int stopped;
  struct trace *trace;
};

static void real_feed(struct real *rd, uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n && !rd->stopped) {
    struct frame_event ev;
    size_t used = frame_read(&rd->fr, p + i, n - i, rd->flags, &ev);
    FUZZ_CHECK(used <= n - i, "frame_read used %zu of %zu", used, n - i);
    i += used;
    if (ev.kind == FRAME_NEED_MORE) {
      FUZZ_CHECK(i == n, "more wanted with %zu bytes left", n - i);
      FUZZ_CHECK(rd->fr.hdr_len < WS_FRAME_HEADER_MAX,
                 "%u bytes are not yet a header", rd->fr.hdr_len);
      return;
    }
    if (ev.kind == FRAME_ERROR) {
      if (ev.error == FRAME_ERR_LENGTH) log_bad_length(rd->trace);
      else log_header(rd->trace, &ev.header, 1002);
      rd->stopped = 1;
      return;
    }
    FUZZ_CHECK(ev.kind == FRAME_DATA, "event %d", ev.kind);
    if (ev.begun) {
      log_header(rd->trace, &ev.header, 0);
      check_write_header(&ev.header);
    }
    FUZZ_CHECK(ev.data == p + i - ev.len, "payload not where it was read");
    FUZZ_CHECK(ev.end == !rd->fr.in_frame, "end %d in frame %d", ev.end,
               rd->fr.in_frame);
    if (ev.masked) {                  /* FRAME_LEAVE_MASKED */
      uint8_t *plain = malloc(ev.len ? ev.len : 1);
      if (!plain) abort();
      frame_unmask_copy(plain, ev.data, ev.len, ev.mask, ev.mask_off);
      log_put(&rd->trace->payload, plain, ev.len);
      free(plain);
    } else {
      log_put(&rd->trace->payload, ev.data, ev.len);
    }
  }
}

static struct ending real_ending(const struct real *rd) {
  const struct frame_reader *fr = &rd->fr;
  struct ending e = { fr->left, fr->hdr_len, fr->mask_off, fr->in_frame,
                      fr->msg_op != 0, (uint64_t)rd->stopped };
  if (!fr->in_frame) e.left = e.mask_off = 0;
  if (rd->stopped) e.hdr_len = 0;
  FUZZ_CHECK(rd->stopped || frame_reader_busy(fr) ==
             (fr->hdr_len || fr->in_frame || fr->msg_op), "busy");
  return e;
}

/* ---------------------------------------------------------------------
 * The reference: section 5.2 read byte by byte, from the whole stream
 * ------------------------------------------------------------------- */

static int ref_check(const struct frame_header *h, unsigned rsv_allowed,
                     int in_message) {
  int control = h->opcode >= 8;
  if (!h->masked) return 1002;                           /* 5.1 */
  if (h->opcode > 2 && h->opcode != 8 && h->opcode != 9 && h->opcode != 10)
    return 1002;                                         /* reserved */
  if (control)                                           /* 5.5 */
    return !h->fin || h->length > 125 || h->rsv ? 1002 : 0;
  if (h->opcode == 0)                                    /* 5.4 */
    return !in_message || h->rsv ? 1002 : 0;
  return in_message || (h->rsv & ~rsv_allowed) ? 1002 : 0;
}

static struct ending ref_read(const uint8_t *s, size_t n,
                              unsigned rsv_allowed, struct trace *t) {
  struct ending e = { 0, 0, 0, 0, 0, 0 };
  size_t i = 0;
  while (i < n) {
    size_t rest = n - i;
    if (rest < 2) {
      e.hdr_len = rest;
      break;
    }
    struct frame_header h;
    memset(&h, 0, sizeof h);
    h.fin = (s[i] & 0x80) != 0;
    h.rsv = (uint8_t)((s[i] >> 4) & 7);
    h.opcode = s[i] & 15;
    h.masked = (s[i + 1] & 0x80) != 0;
    size_t len7 = s[i + 1] & 0x7F;
    size_t extra = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    size_t size = 2 + extra + (h.masked ? 4 : 0);
    if (rest < size) {
      e.hdr_len = rest;
      break;
    }
    h.length = len7;
    if (extra) {
      h.length = 0;
      for (size_t k = 0; k < extra; k++)
        h.length = h.length * 256 + s[i + 2 + k];
    }
    if (extra == 8 && h.length >> 63) {
      log_bad_length(t);
      e.stopped = 1;
      break;
    }
    if (h.masked) memcpy(h.mask, s + i + 2 + extra, 4);
    i += size;
    int code = ref_check(&h, rsv_allowed, (int)e.in_message);
    log_header(t, &h, code);
    if (code) {
      e.stopped = 1;
      break;
    }
    if (h.opcode == WS_OP_TEXT || h.opcode == WS_OP_BINARY) e.in_message = 1;
    uint64_t k = 0;
    for (; k < h.length && i < n; k++, i++) {
      uint8_t b = s[i] ^ h.mask[k % 4];
      log_put(&t->payload, &b, 1);
    }
    if (k < h.length) {
      e.in_frame = 1;
      e.left = h.length - k;
      e.mask_off = k % 4;
      break;
    }
    if (h.opcode < 8 && h.fin) e.in_message = 0;
  }
  return e;
}

/* ---------------------------------------------------------------------
 * The three readings compared
 * ------------------------------------------------------------------- */

static int same_trace(const struct trace *a, const struct trace *b) {
  return a->events.len == b->events.len &&
         a->payload.len == b->payload.len &&
         (!a->events.len ||
          memcmp(a->events.data, b->events.data, a->events.len) == 0) &&
         (!a->payload.len ||
          memcmp(a->payload.data, b->payload.data, a->payload.len) == 0);
}

static void trace_free(struct trace *t) {
  free(t->events.data);
  free(t->payload.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FUZZ_SEED_LEN + 1) return 0;
  struct fuzz_rng rng = fuzz_rng_from(data);
  unsigned rsv_allowed = data[FUZZ_SEED_LEN] & 1 ? DEFLATE_RSV : 0;
  const uint8_t *s = data + FUZZ_SEED_LEN + 1;
  size_t n = size - FUZZ_SEED_LEN - 1;

  struct trace ref = { { 0 }, { 0 } };
  struct ending ref_end = ref_read(s, n, rsv_allowed, &ref);

  /* the whole stream in one read */
  struct trace whole = { { 0 }, { 0 } };
  struct real real = { .flags = rsv_allowed ? FRAME_RSV1 : 0,
                       .trace = &whole };
  uint8_t *buf = fuzz_copy(s, n);
  real_feed(&real, buf, n);
  free(buf);
  struct ending whole_end = real_ending(&real);

  /* random reads, each in its own exact-size buffer at a random
   * alignment, as masking works in lanes; the payload left masked and
   * unmasked while copied, as conn.c does */
  struct trace chunked = { { 0 }, { 0 } };
  memset(&real, 0, sizeof real);
  real.flags = (rsv_allowed ? FRAME_RSV1 : 0) | FRAME_LEAVE_MASKED;
  real.trace = &chunked;
  for (size_t at = 0; at < n;) {
    size_t k = fuzz_chunk(&rng, n - at);
    size_t skew = fuzz_next(&rng) & 7;
    uint8_t *block = malloc(skew + k);
    if (!block) abort();
    memcpy(block + skew, s + at, k);
    real_feed(&real, block + skew, k);
    free(block);
    at += k;
  }
  struct ending chunked_end = real_ending(&real);

  FUZZ_CHECK(same_trace(&whole, &ref),
             "read whole, the stream gives other frames than section 5.2");
  FUZZ_CHECK(memcmp(&whole_end, &ref_end, sizeof ref_end) == 0,
             "read whole, the stream ends in another state");
  FUZZ_CHECK(same_trace(&chunked, &whole),
             "read in chunks, the stream gives other frames");
  FUZZ_CHECK(memcmp(&chunked_end, &whole_end, sizeof ref_end) == 0,
             "read in chunks, the stream ends in another state");
  trace_free(&ref);
  trace_free(&whole);
  trace_free(&chunked);
  return 0;
}
