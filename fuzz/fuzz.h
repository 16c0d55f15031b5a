/* fuzz.h - what the fuzz targets share: a PRNG seeded by the input, the
 * chunk sizes drawn from it, exact-size copies, and checks that stop
 * libFuzzer with a message (it then saves the input as a crash). */
#ifndef MS_FUZZ_H
#define MS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Inputs open with this many bytes that seed the splitter, so libFuzzer
 * mutates where a stream is cut as well as the stream itself. */
#define FUZZ_SEED_LEN 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_rng {
  uint32_t s;
};

static inline struct fuzz_rng fuzz_rng_from(const uint8_t *p) {
  struct fuzz_rng r = { (uint32_t)p[0] | (uint32_t)p[1] << 8 |
                        (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24 };
  return r;
}

/* splitmix32-like: any seed, zero included, gives a usable sequence */
static inline uint32_t fuzz_next(struct fuzz_rng *r) {
  uint32_t z = (r->s += 0x9E3779B9u);
  z = (z ^ (z >> 16)) * 0x85EBCA6Bu;
  z = (z ^ (z >> 13)) * 0xC2B2AE35u;
  return z ^ (z >> 16);
}

/* The size of the next chunk of a stream with left bytes to go (1 at
 * least): single bytes and short reads are common, as they put a cut
 * inside every field; sometimes the rest comes at once. */
static inline size_t fuzz_chunk(struct fuzz_rng *r, size_t left) {
  uint32_t x = fuzz_next(r);
  size_t k;
  switch (x & 3) {
  case 0: k = 1; break;
  case 1: k = 1 + (x >> 2) % 16; break;
  case 2: k = 1 + (x >> 2) % 512; break;
  default: k = left; break;
  }
  return k < left ? k : left;
}

/* An exact-size heap copy, so that ASan sees a read past its end. */
static inline uint8_t *fuzz_copy(const void *p, size_t n) {
  uint8_t *q = malloc(n ? n : 1);
  if (!q) abort();
  if (n) memcpy(q, p, n);
  return q;
}

/* Check a property; on failure say which, then abort (a crash). */
#define FUZZ_CHECK(cond, ...)                                         \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: check failed: %s\n  ", __FILE__,        \
              __LINE__, #cond);                                       \
      fprintf(stderr, __VA_ARGS__);                                   \
      fputc('\n', stderr);                                            \
      abort();                                                        \
    }                                                                 \
  } while (0)

#endif
