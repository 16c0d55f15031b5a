/* fuzz_chunked.c - a chunked body (RFC 9112 section 7.1) decoded by
 * chunked_decode in random reads, each in its own buffer, against the
 * whole body at once and against a reference that reads the grammar
 * from the whole input: all must find the same body bytes, the same
 * end (or the same refusal) and the same count of bytes used.
 * Input: FUZZ_SEED_LEN bytes for the splitter, a byte giving the
 * trailer limit (16 * (1 + b)), the stream. */
#include "chunked.h"
#include "fuzz.h"

struct outcome {
  int status;           /* enum chunked_status */
  size_t used;          /* input used, when done */
  uint8_t *body;
  size_t body_len;
};

static void append(struct outcome *o, const uint8_t *p, size_t n) {
  if (!n) return;
  o->body = realloc(o->body, o->body_len + n);
  if (!o->body) abort();
  memcpy(o->body + o->body_len, p, n);
  o->body_len += n;
}

/* ---------------------------------------------------------------------
 * The reference: the grammar read from the whole input
 * ------------------------------------------------------------------- */

struct ref {
  const uint8_t *s;
  size_t n, i;
};

static int ref_hex(uint8_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F');
}

static int ref_ctl(uint8_t c) {
  return (c < 0x20 && c != '\t') || c == 0x7F;
}

/* Up to CR (not included): MORE when the input ends first, BAD on a
 * control byte, else DONE with the index of the CR. */
static int ref_line_rest(struct ref *r, size_t *cr) {
  for (size_t j = r->i; j < r->n; j++) {
    if (r->s[j] == '\r') {
      *cr = j;
      return CHUNKED_DONE;
    }
    if (ref_ctl(r->s[j])) return CHUNKED_BAD;
  }
  return CHUNKED_MORE;
}

/* CR LF at r->i: DONE and past it, MORE, or BAD. */
static int ref_crlf(struct ref *r) {
  if (r->i >= r->n) return CHUNKED_MORE;
  if (r->s[r->i] != '\r') return CHUNKED_BAD;
  if (r->i + 1 >= r->n) return CHUNKED_MORE;
  if (r->s[r->i + 1] != '\n') return CHUNKED_BAD;
  r->i += 2;
  return CHUNKED_DONE;
}

static struct outcome ref_decode(const uint8_t *s, size_t n,
                                 size_t trailer_max) {
  struct outcome o = { CHUNKED_MORE, 0, NULL, 0 };
  struct ref r = { s, n, 0 };
  for (;;) {                                   /* chunks */
    size_t start = r.i, digits = 0;
    uint64_t size = 0;
    while (r.i < n && ref_hex(s[r.i])) {
      int v = s[r.i] <= '9' ? s[r.i] - '0' : (s[r.i] | 0x20) - 'a' + 10;
      if ((digits || v) && ++digits > 15) goto bad;
      size = size << 4 | (uint64_t)v;
      r.i++;
    }
    if (r.i == n) {
      if (r.i - start > CHUNKED_LINE_MAX) goto bad;
      return o;
    }
    if (r.i == start) goto bad;
    while (r.i < n && (s[r.i] == ' ' || s[r.i] == '\t')) r.i++;  /* BWS */
    if (r.i == n) {
      if (r.i - start > CHUNKED_LINE_MAX) goto bad;
      return o;
    }
    size_t cr = 0;
    if (s[r.i] == ';') {
      r.i++;
      int st = ref_line_rest(&r, &cr);
      /* where the line breaks, and how long it is by then */
      size_t end = st == CHUNKED_DONE ? cr : n;
      if (st == CHUNKED_BAD) {
        for (end = r.i; !ref_ctl(s[end]); end++) {}
        if (end - start >= CHUNKED_LINE_MAX) goto bad;
        goto bad;
      }
      if (end - start > CHUNKED_LINE_MAX) goto bad;
      if (st == CHUNKED_MORE) return o;
      r.i = cr;
    } else if (s[r.i] != '\r') {
      goto bad;
    }
    if (r.i - start >= CHUNKED_LINE_MAX) goto bad;  /* the CR counts */
    int st = ref_crlf(&r);
    if (st == CHUNKED_BAD) goto bad;
    if (st == CHUNKED_MORE) return o;
    if (size == 0) break;
    size_t k = n - r.i < size ? n - r.i : (size_t)size;
    append(&o, s + r.i, k);
    r.i += k;
    if (k < size) return o;
    st = ref_crlf(&r);
    if (st == CHUNKED_BAD) goto bad;
    if (st == CHUNKED_MORE) return o;
  }
  size_t trailer_start = r.i;
  for (;;) {                                   /* trailer section */
    if (r.i < n && s[r.i] == '\r') {
      if (r.i + 1 - trailer_start > trailer_max) goto bad;
      if (r.i + 1 >= n) return o;
      if (s[r.i + 1] != '\n') goto bad;
      if (r.i + 2 - trailer_start > trailer_max) goto bad;
      o.status = CHUNKED_DONE;
      o.used = r.i + 2;
      return o;
    }
    size_t cr;
    int st = ref_line_rest(&r, &cr);
    if (st == CHUNKED_BAD) {
      size_t end = r.i;
      while (!ref_ctl(s[end])) end++;
      if (end - trailer_start >= trailer_max) goto bad;
      goto bad;
    }
    if (st == CHUNKED_MORE) {
      if (n - trailer_start > trailer_max) goto bad;
      return o;
    }
    if (cr + 1 - trailer_start > trailer_max) goto bad;
    r.i = cr;
    st = ref_crlf(&r);
    if (st == CHUNKED_MORE) return o;
    if (st == CHUNKED_BAD) goto bad;
    if (r.i - trailer_start > trailer_max) goto bad;
  }
bad:
  o.status = CHUNKED_BAD;
  return o;
}

/* ---------------------------------------------------------------------
 * chunked_decode, whole and in random reads
 * ------------------------------------------------------------------- */

static struct outcome decode(const uint8_t *s, size_t n, size_t trailer_max,
                             struct fuzz_rng *rng) {
  struct outcome o = { CHUNKED_MORE, 0, NULL, 0 };
  struct chunked d = { 0 };
  for (size_t at = 0; at < n;) {
    size_t k = rng ? fuzz_chunk(rng, n - at) : n - at;
    uint8_t *block = fuzz_copy(s + at, k);
    size_t body, used;
    const char *why = NULL;
    int st = chunked_decode(&d, block, k, trailer_max, &body, &used, &why);
    FUZZ_CHECK(body <= used && used <= k, "body %zu used %zu of %zu",
               body, used, k);
    append(&o, block, body);
    free(block);
    if (st == CHUNKED_BAD) {
      FUZZ_CHECK(why != NULL, "refused without a reason");
      o.status = st;
      return o;
    }
    FUZZ_CHECK(st == CHUNKED_DONE || used == k, "more, with %zu unused",
               k - used);
    if (st == CHUNKED_DONE) {
      o.status = st;
      o.used = at + used;
      return o;
    }
    at += k;
  }
  return o;
}

static int same(const struct outcome *a, const struct outcome *b) {
  return a->status == b->status && a->used == b->used &&
         a->body_len == b->body_len &&
         (!a->body_len || memcmp(a->body, b->body, a->body_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FUZZ_SEED_LEN + 1) return 0;
  struct fuzz_rng rng = fuzz_rng_from(data);
  size_t trailer_max = 16 * (1 + (size_t)data[FUZZ_SEED_LEN]);
  const uint8_t *s = data + FUZZ_SEED_LEN + 1;
  size_t n = size - FUZZ_SEED_LEN - 1;
  struct outcome ref = ref_decode(s, n, trailer_max);
  struct outcome whole = decode(s, n, trailer_max, NULL);
  struct outcome chunked = decode(s, n, trailer_max, &rng);
  FUZZ_CHECK(same(&whole, &ref), "whole: status %d used %zu body %zu, "
             "the grammar: %d %zu %zu", whole.status, whole.used,
             whole.body_len, ref.status, ref.used, ref.body_len);
  FUZZ_CHECK(same(&chunked, &whole), "in reads: status %d used %zu body "
             "%zu, whole: %d %zu %zu", chunked.status, chunked.used,
             chunked.body_len, whole.status, whole.used, whole.body_len);
  free(ref.body);
  free(whole.body);
  free(chunked.body);
  return 0;
}
