/* payload.h - what the load generator sends: the payload kinds, and the
 * bytes each message must come back with */
#ifndef BENCH_PAYLOAD_H
#define BENCH_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "prng.h"

enum payload_kind {
  PAYLOAD_RANDOM,       /* a window into a pool of random bytes */
  PAYLOAD_ZERO,         /* every byte 0 */
  PAYLOAD_REPEAT,       /* every byte 'a' */
  PAYLOAD_ADVERSARIAL,  /* 8 random bytes repeated: two equal halves */
  PAYLOAD_TEXT          /* JSON-like records: compressible ASCII */
};

/* Messages are named by a ticket; payload_bytes(p, ticket) is where the
 * size bytes of that message are, both to send and to check the echo.
 * Distinct tickets give distinct messages for the random and adversarial
 * kinds, so a server that interns strings sees new ones. */
struct payload {
  enum payload_kind kind;
  size_t size;
  uint8_t *pool;
  uint32_t tickets;     /* how many distinct messages */
};

/* text: the bytes must be UTF-8, so random bytes are printable ASCII.
 * Returns -1 when out of memory. */
int payload_init(struct payload *p, enum payload_kind kind, size_t size,
                 int text, uint64_t seed);
void payload_free(struct payload *p);
/* -1 for an unknown name */
int payload_kind_parse(const char *name);
const char *payload_kind_name(enum payload_kind kind);

static inline uint32_t payload_pick(const struct payload *p,
                                    struct prng *r) {
  return p->tickets > 1 ? (uint32_t)(prng_next(r) % p->tickets) : 0;
}

static inline const uint8_t *payload_bytes(const struct payload *p,
                                           uint32_t ticket) {
  switch (p->kind) {
  case PAYLOAD_RANDOM: case PAYLOAD_TEXT: return p->pool + ticket;
  case PAYLOAD_ADVERSARIAL: return p->pool + (size_t)ticket * p->size;
  default: return p->pool;
  }
}

#endif
