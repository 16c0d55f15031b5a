/* payload.c - the payload kinds: pools of message bytes built once */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payload.h"

static const char *const kind_names[] = {
  "random", "zero", "repeat", "adversarial", "text"
};
#define KINDS (sizeof kind_names / sizeof kind_names[0])

/* Random and text windows start anywhere in the first RANDOM_SPAN
 * bytes: about a million distinct messages of any size. */
#define RANDOM_SPAN (1u << 20)
/* Adversarial messages are stored whole: at most this many bytes. */
#define ADVERSARIAL_POOL (64u << 20)

static uint8_t random_byte(struct prng *r, int text) {
  uint8_t b = (uint8_t)(prng_next(r) >> 56);
  return text ? (uint8_t)(0x20 + b % 95) : b;   /* printable ASCII */
}

/* What a chat or feed sends: the same keys every time, a few names and
 * phrases, numbers that vary.  Deflate finds the repeats within one
 * message and, with context takeover, across messages. */
static void fill_text(uint8_t *pool, size_t size, struct prng *r) {
  static const char *const users[] = { "alice", "bob", "carol", "dave" };
  static const char *const msgs[] = {
    "hello world", "see you at noon", "ok", "running late, start without me"
  };
  char rec[128];
  size_t at = 0;
  unsigned seq = 10000;
  while (at < size) {
    uint64_t x = prng_next(r);
    seq += 1 + (unsigned)(x % 7);
    int n = snprintf(rec, sizeof rec, "{\"user\":\"%s\",\"seq\":%u,"
                     "\"msg\":\"%s\"},", users[(x >> 8) & 3], seq,
                     msgs[(x >> 16) & 3]);
    size_t k = (size_t)n < size - at ? (size_t)n : size - at;
    memcpy(pool + at, rec, k);
    at += k;
  }
}

int payload_init(struct payload *p, enum payload_kind kind, size_t size,
                 int text, uint64_t seed) {
  struct prng r;
  size_t pool_size;
  prng_seed(&r, seed);
  p->kind = kind;
  p->size = size;
  p->tickets = 1;
  switch (kind) {
  case PAYLOAD_RANDOM: case PAYLOAD_TEXT:
    p->tickets = RANDOM_SPAN;
    pool_size = RANDOM_SPAN + size;
    break;
  case PAYLOAD_ADVERSARIAL:
    p->tickets = size ? (uint32_t)(ADVERSARIAL_POOL / size) : 1;
    if (p->tickets > 65536) p->tickets = 65536;
    if (p->tickets == 0) p->tickets = 1;
    pool_size = (size_t)p->tickets * size;
    break;
  default:
    pool_size = size;
  }
  p->pool = malloc(pool_size ? pool_size : 1);
  if (!p->pool) return -1;
  if (kind == PAYLOAD_RANDOM) {
    for (size_t i = 0; i < pool_size; i++) p->pool[i] = random_byte(&r, text);
  } else if (kind == PAYLOAD_TEXT) {
    fill_text(p->pool, pool_size, &r);
  } else if (kind == PAYLOAD_ADVERSARIAL) {
    /* Equal 8-byte halves: OpenResty's LuaJIT hashes a 16-byte string
     * as crc32(crc32(len, first half) ^ crc32(0, second half)); CRC is
     * linear, so equal halves cancel, every such string lands in one
     * chain of the intern table and each new one walks all of it. */
    for (uint32_t t = 0; t < p->tickets; t++) {
      uint8_t half[8];
      uint8_t *m = p->pool + (size_t)t * size;
      for (int i = 0; i < 8; i++) half[i] = random_byte(&r, text);
      for (size_t i = 0; i < size; i++) m[i] = half[i % 8];
    }
  } else {
    memset(p->pool, kind == PAYLOAD_ZERO ? 0 : 'a', pool_size);
  }
  return 0;
}

void payload_free(struct payload *p) {
  free(p->pool);
  p->pool = NULL;
}

int payload_kind_parse(const char *name) {
  for (size_t i = 0; i < KINDS; i++)
    if (strcmp(name, kind_names[i]) == 0) return (int)i;
  return -1;
}

const char *payload_kind_name(enum payload_kind kind) {
  return kind_names[kind];
}
