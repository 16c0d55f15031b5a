/* fuzz_utf8.c - utf8_validate against a reference that decodes code
 * points by RFC 3629's rules, over the whole text and fed in random
 * splits (the state carries across calls): after every call the state
 * must say what the reference says of that prefix.
 * Input: FUZZ_SEED_LEN bytes for the splitter, a flags byte (bit 0: pad
 * the text with ASCII runs, so the word-at-a-time skip meets every
 * other byte at every offset), the text. */
#include "fuzz.h"
#include "utf8.h"

#define MAX_TEXT (64 * 1024)

/* What a prefix is: whole characters, hopeless, or inside one. */
enum { REF_ACCEPT, REF_REJECT, REF_INSIDE };

/* RFC 3629 section 3: the fewest code point each length may encode. */
static const uint32_t min_for_length[5] = { 0, 0, 0x80, 0x800, 0x10000 };

/* Whether some valid code point's m-byte encoding starts with the k
 * bytes whose payload bits are cp: the completions span an interval,
 * which must meet [min, U+10FFFF] outside the surrogates D800-DFFF. */
static int can_complete(uint32_t cp, int k, int m) {
  int rest = 6 * (m - k);
  uint32_t lo = cp << rest, hi = lo | ((1u << rest) - 1);
  if (lo < min_for_length[m]) lo = min_for_length[m];
  if (hi > 0x10FFFF) hi = 0x10FFFF;
  if (lo > hi) return 0;
  return !(lo >= 0xD800 && hi <= 0xDFFF);
}

/* The class of every prefix s[0..i), i = 0..n, into out[0..n]. */
static void ref_classify(const uint8_t *s, size_t n, uint8_t *out) {
  int status = REF_ACCEPT, k = 0, m = 0;
  uint32_t cp = 0;
  out[0] = REF_ACCEPT;
  for (size_t i = 0; i < n; i++) {
    uint8_t b = s[i];
    if (status == REF_REJECT) {
      /* stays rejected */
    } else if (k == 0) {                  /* a character starts */
      if (b < 0x80) {
        status = REF_ACCEPT;
      } else {
        if (b >= 0xC0 && b < 0xE0) m = 2, cp = b & 0x1F;
        else if (b >= 0xE0 && b < 0xF0) m = 3, cp = b & 0x0F;
        else if (b >= 0xF0 && b < 0xF8) m = 4, cp = b & 0x07;
        else m = 0;                       /* 80-BF alone, F8-FF */
        k = 1;
        status = m && can_complete(cp, 1, m) ? REF_INSIDE : REF_REJECT;
      }
    } else if ((b & 0xC0) != 0x80) {      /* not a continuation */
      status = REF_REJECT;
    } else {
      cp = cp << 6 | (b & 0x3F);
      k++;
      status = can_complete(cp, k, m) ? REF_INSIDE : REF_REJECT;
      if (status == REF_INSIDE && k == m) {
        status = REF_ACCEPT;
        k = 0;
      }
    }
    out[i + 1] = (uint8_t)status;
  }
}

static int class_of(uint32_t state) {
  return state == UTF8_ACCEPT ? REF_ACCEPT
         : state == UTF8_REJECT ? REF_REJECT : REF_INSIDE;
}

/* The text, with ASCII runs put before some bytes when asked. */
static size_t make_text(const uint8_t *s, size_t n, int pad,
                        struct fuzz_rng *rng, uint8_t *out) {
  size_t len = 0;
  for (size_t i = 0; i < n && len < MAX_TEXT; i++) {
    uint32_t x = fuzz_next(rng);
    if (pad && (x & 3) == 0) {
      size_t run = 1 + (x >> 2) % 80;
      for (size_t k = 0; k < run && len < MAX_TEXT - 1; k++, len++)
        out[len] = (uint8_t)(' ' + len % 95);
    }
    out[len++] = s[i];
  }
  return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FUZZ_SEED_LEN + 1) return 0;
  struct fuzz_rng rng = fuzz_rng_from(data);
  int pad = data[FUZZ_SEED_LEN] & 1;
  const uint8_t *s = data + FUZZ_SEED_LEN + 1;
  size_t n = size - FUZZ_SEED_LEN - 1;
  if (n > MAX_TEXT) n = MAX_TEXT;

  static uint8_t text[MAX_TEXT], ref[MAX_TEXT + 1];
  size_t len = make_text(s, n, pad, &rng, text);
  ref_classify(text, len, ref);

  /* whole, from an exact-size block at a random alignment */
  size_t skew = fuzz_next(&rng) & 7;
  uint8_t *block = malloc(skew + len ? skew + len : 1);
  if (!block) abort();
  memcpy(block + skew, text, len);
  uint32_t state = utf8_validate(UTF8_ACCEPT, block + skew, len);
  free(block);
  FUZZ_CHECK(class_of(state) == ref[len],
             "whole text of %zu bytes: state %u, the reference says %d",
             len, (unsigned)state, ref[len]);

  /* in splits, empty ones included */
  state = UTF8_ACCEPT;
  for (size_t at = 0; at < len;) {
    size_t k = fuzz_next(&rng) % 8 == 0 ? 0 : fuzz_chunk(&rng, len - at);
    skew = fuzz_next(&rng) & 7;
    block = malloc(skew + k ? skew + k : 1);
    if (!block) abort();
    memcpy(block + skew, text + at, k);
    uint32_t next = utf8_validate(state, block + skew, k);
    free(block);
    FUZZ_CHECK(k || next == state, "an empty call changed the state");
    at += k;
    FUZZ_CHECK(class_of(next) == ref[at],
               "after %zu bytes: state %u, the reference says %d", at,
               (unsigned)next, ref[at]);
    state = next;
  }
  return 0;
}
