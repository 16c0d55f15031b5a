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

void frame_unmask(uint8_t *p, size_t n, const uint8_t key[4], size_t offset) {
  /* a word at a time from the start: unaligned words cost nothing on
   * the machines moonsocket runs on, and memcpy keeps them legal */
  uint8_t k[8];
  for (int j = 0; j < 8; j++) k[j] = key[(offset + (size_t)j) & 3];
  uint64_t kw;
  memcpy(&kw, k, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    w ^= kw;
    memcpy(p + i, &w, 8);
  }
  for (; i < n; i++) p[i] ^= k[i & 7];
}

void frame_mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                     const uint8_t key[4]) {
  /* a word at a time; the key repeats every 4 bytes, so from dst's
   * start the 8-byte pattern is the key twice */
  uint8_t k[8] = { key[0], key[1], key[2], key[3],
                   key[0], key[1], key[2], key[3] };
  uint64_t kw;
  memcpy(&kw, k, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, src + i, 8);
    w ^= kw;
    memcpy(dst + i, &w, 8);
  }
  for (; i < n; i++) dst[i] = src[i] ^ key[i & 3];
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
