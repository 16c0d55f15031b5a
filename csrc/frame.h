/* frame.h - RFC 6455 section 5.2 frame headers and masking, without I/O */
#ifndef MS_FRAME_H
#define MS_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
  WS_OP_CONT = 0x0, WS_OP_TEXT = 0x1, WS_OP_BINARY = 0x2,
  WS_OP_CLOSE = 0x8, WS_OP_PING = 0x9, WS_OP_PONG = 0xA
};

#define WS_FRAME_HEADER_MAX 14   /* 2 + 8 (64-bit length) + 4 (mask) */
#define WS_CONTROL_MAX      125  /* section 5.5 */

struct frame_header {
  uint64_t length;    /* payload length */
  uint8_t mask[4];
  uint8_t opcode;
  uint8_t fin;
  uint8_t rsv;        /* RSV1..3 as the three low bits, RSV1 highest */
  uint8_t masked;
};

/* Parse the header at p[0..n).  Returns the header's size when it is
 * complete, 0 when more bytes are needed, -1 when the 64-bit length has
 * its most significant bit set (section 5.2). */
int frame_parse_header(const uint8_t *p, size_t n, struct frame_header *h);

/* The close code that a frame from a client earns, or 0 when the header
 * is acceptable.  rsv_allowed holds the RSV bits that extensions have
 * negotiated; in_message tells whether a fragmented message is open. */
int frame_check(const struct frame_header *h, unsigned rsv_allowed,
                int in_message);

/* The same for a frame a client received from a server, which must not
 * be masked (section 5.1). */
int frame_check_from_server(const struct frame_header *h,
                            unsigned rsv_allowed, int in_message);

/* XOR p[0..n) with the masking key, starting at key byte offset & 3. */
void frame_unmask(uint8_t *p, size_t n, const uint8_t key[4], size_t offset);

/* Copy src[0..n) to dst unmasked, in one pass, as frame_unmask. */
void frame_unmask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                       const uint8_t key[4], size_t offset);

/* Copy src[0..n) to dst masked with key (a client's frame, section
 * 5.3), in 16-byte lanes. */
void frame_mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                     const uint8_t key[4]);

/* The size of a server frame header for a payload of length bytes. */
static inline size_t frame_header_size(uint64_t length) {
  return length < 126 ? 2 : length < 65536 ? 4 : 10;
}

/* Write an unmasked server frame header into out; returns its size. */
size_t frame_write_header(uint8_t out[10], unsigned opcode, int fin,
                          unsigned rsv, uint64_t length);

#endif
