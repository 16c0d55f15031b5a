/* frame.c - RFC 6455 frame headers and masking, pure functions */
#include <string.h>

#include "frame.h"

int frame_parse_header(const uint8_t *p, size_t n, struct frame_header *h) {
  size_t need = 2;
  if (n < need) return 0;
  h->fin = p[0] >> 7;
  h->rsv = (p[0] >> 4) & 7;
  h->opcode = p[0] & 0x0F;
  h->masked = p[1] >> 7;
  uint64_t len = p[1] & 0x7F;
  if (len == 126) need += 2;
  else if (len == 127) need += 8;
  if (h->masked) need += 4;
  if (n < need) return 0;
  const uint8_t *q = p + 2;
  if (len == 126) {
    len = (uint64_t)q[0] << 8 | q[1];
    q += 2;
  } else if (len == 127) {
    if (q[0] & 0x80) return -1;
    len = 0;
    for (int i = 0; i < 8; i++) len = len << 8 | q[i];
    q += 8;
  }
  h->length = len;
  if (h->masked) memcpy(h->mask, q, 4);
  else memset(h->mask, 0, 4);          /* unmasking is then a no-op */
  return (int)need;
}

/* The checks shared by both directions. */
static int check_frame(const struct frame_header *h, unsigned rsv_allowed,
                       int in_message) {
  switch (h->opcode) {
  case WS_OP_CONT:
    if (!in_message) return 1002;                /* section 5.4 */
    if (h->rsv) return 1002;            /* RSV1 marks a message's start */
    return 0;
  case WS_OP_TEXT: case WS_OP_BINARY:
    if (in_message) return 1002;
    break;
  case WS_OP_CLOSE: case WS_OP_PING: case WS_OP_PONG:
    if (!h->fin || h->length > WS_CONTROL_MAX) return 1002;  /* 5.5 */
    if (h->rsv) return 1002;
    return 0;
  default:
    return 1002;                                  /* reserved opcode */
  }
  if (h->rsv & ~rsv_allowed) return 1002;          /* section 5.2 */
  return 0;
}

int frame_check(const struct frame_header *h, unsigned rsv_allowed,
                int in_message) {
  if (!h->masked) return 1002;                   /* section 5.1 */
  return check_frame(h, rsv_allowed, in_message);
}

int frame_check_from_server(const struct frame_header *h,
                            unsigned rsv_allowed, int in_message) {
  if (h->masked) return 1002;                    /* section 5.1 */
  return check_frame(h, rsv_allowed, in_message);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define MASK_AVX2 256           /* from this many bytes, where there */
typedef uint64_t lane32 __attribute__((vector_size(32)));

/* mask_copy's bulk in 32-byte lanes, 128 bytes a turn, for a CPU with
 * AVX2 (most x86-64 since 2013; x86-64's baseline is SSE2's 16): half
 * the instructions per byte.  Returns the bytes done, a multiple of 32;
 * kw is the key as a word. */
__attribute__((target("avx2")))
static size_t mask_avx2(uint8_t *dst, const uint8_t *src, size_t n,
                        uint64_t kw) {
  lane32 kv = { kw, kw, kw, kw };
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    lane32 a, b, c, d;
    memcpy(&a, src + i, 32);
    memcpy(&b, src + i + 32, 32);
    memcpy(&c, src + i + 64, 32);
    memcpy(&d, src + i + 96, 32);
    a ^= kv;
    b ^= kv;
    c ^= kv;
    d ^= kv;
    memcpy(dst + i, &a, 32);
    memcpy(dst + i + 32, &b, 32);
    memcpy(dst + i + 64, &c, 32);
    memcpy(dst + i + 96, &d, 32);
  }
  for (; i + 32 <= n; i += 32) {
    lane32 a;
    memcpy(&a, src + i, 32);
    a ^= kv;
    memcpy(dst + i, &a, 32);
  }
  return i;
}
#endif

/* XOR src[0..n) with the key from key byte offset & 3 into dst, which
 * may be src.  Large spans in 32-byte lanes where the CPU has AVX2;
 * else 64 bytes a turn in four 16-byte lanes where GCC's vector types
 * are there (SSE2 on x86-64, NEON on arm64), then 16, then words, then
 * bytes: masking is a plain XOR, so the lanes need no alignment, and
 * memcpy keeps the unaligned loads and stores legal. */
static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                      const uint8_t key[4], size_t offset) {
  /* the key as it falls from offset on: a 4-byte pattern, the same in
   * either byte order once repeated */
  uint8_t turned[4];
  const uint8_t *k = key;           /* from byte 0 (a whole frame): as is */
  if (offset & 3) {
    for (int j = 0; j < 4; j++) turned[j] = key[(offset + j) & 3];
    k = turned;
  }
  uint32_t k32;
  memcpy(&k32, k, 4);
  uint64_t kw = (uint64_t)k32 << 32 | k32;
  size_t i = 0;
#ifdef MASK_AVX2
  if (n >= MASK_AVX2 && __builtin_cpu_supports("avx2"))
    i = mask_avx2(dst, src, n, kw);
#endif
#if defined(__GNUC__)
  typedef uint64_t lane __attribute__((vector_size(16)));
  lane kv = { kw, kw };
  for (; i + 64 <= n; i += 64) {
    lane a, b, c, d;
    memcpy(&a, src + i, 16);
    memcpy(&b, src + i + 16, 16);
    memcpy(&c, src + i + 32, 16);
    memcpy(&d, src + i + 48, 16);
    a ^= kv;
    b ^= kv;
    c ^= kv;
    d ^= kv;
    memcpy(dst + i, &a, 16);
    memcpy(dst + i + 16, &b, 16);
    memcpy(dst + i + 32, &c, 16);
    memcpy(dst + i + 48, &d, 16);
  }
  for (; i + 16 <= n; i += 16) {
    lane a;
    memcpy(&a, src + i, 16);
    a ^= kv;
    memcpy(dst + i, &a, 16);
  }
#endif
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, src + i, 8);
    w ^= kw;
    memcpy(dst + i, &w, 8);
  }
  for (; i < n; i++) dst[i] = src[i] ^ k[i & 3];
}

void frame_unmask(uint8_t *p, size_t n, const uint8_t key[4], size_t offset) {
  mask_copy(p, p, n, key, offset);
}

void frame_unmask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                       const uint8_t key[4], size_t offset) {
  mask_copy(dst, src, n, key, offset);
}

void frame_mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                     const uint8_t key[4]) {
  mask_copy(dst, src, n, key, 0);
}

size_t frame_write_header(uint8_t out[10], unsigned opcode, int fin,
                          unsigned rsv, uint64_t length) {
  out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 7) << 4 | (opcode & 0x0F));
  if (length < 126) {
    out[1] = (uint8_t)length;
    return 2;
  }
  if (length <= 0xFFFF) {
    out[1] = 126;
    out[2] = (uint8_t)(length >> 8);
    out[3] = (uint8_t)length;
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(length >> (56 - 8 * i));
  return 10;
}
