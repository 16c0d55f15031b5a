/* prng.h - the load generator's pseudo-random numbers (xorshift64*) */
#ifndef BENCH_PRNG_H
#define BENCH_PRNG_H

#include <stdint.h>

/* Not cryptographic.  RFC 6455 10.3 asks for unpredictable masking keys
 * so that a hostile page cannot steer the bytes a proxy sees; a load
 * generator talking to a server on loopback has no such attacker, and a
 * key per frame from a strong source would cost more than the echo. */
struct prng {
  uint64_t state;               /* never 0 */
};

static inline void prng_seed(struct prng *r, uint64_t seed) {
  r->state = seed ? seed : 0x9e3779b97f4a7c15u;
}

static inline uint64_t prng_next(struct prng *r) {
  uint64_t x = r->state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  r->state = x;
  return x * 0x2545f4914f6cdd1du;
}

#endif
