/* frame_reader.h - an incremental RFC 6455 frame reader: bytes in,
 * events out, in a few bytes of state; no I/O, no allocation */
#ifndef MS_FRAME_READER_H
#define MS_FRAME_READER_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

/* Between reads: all zero is a reader at the start of a frame with no
 * message open. */
struct frame_reader {
  uint64_t left;                    /* payload bytes still to come */
  uint8_t mask[4];
  uint8_t hdr[WS_FRAME_HEADER_MAX]; /* a header split over reads */
  uint8_t hdr_len;
  uint8_t mask_off;                 /* key byte of the next payload byte */
  uint8_t opcode;                   /* the frame's */
  uint8_t fin, masked, in_frame;
  uint8_t msg_op;                   /* the open message's, or 0 */
};

/* How to read: what a peer may send. */
enum {
  FRAME_RSV1 = 1 << 0,        /* RSV1 on a message's first frame (RFC
                                 7692, permessage-deflate negotiated) */
  FRAME_FROM_SERVER = 1 << 1, /* a client reads: frames unmasked */
  FRAME_LEAVE_MASKED = 1 << 2, /* payload spans are left masked, for the
                                  caller to unmask where it copies them
                                  (ev->masked, ev->mask, ev->mask_off) */
};

enum frame_event_kind {
  FRAME_NEED_MORE,      /* every byte was used; the frame goes on */
  FRAME_DATA,           /* a frame began and/or payload bytes came */
  FRAME_ERROR,          /* the stream breaks section 5: fail it 1002 */
};

enum frame_error {
  FRAME_ERR_LENGTH = 1, /* a 64-bit length with its top bit set (5.2) */
  FRAME_ERR_UNMASKED,   /* a client's frame without a mask (5.1) */
  FRAME_ERR_MASKED,     /* a server's frame with a mask (5.1) */
  FRAME_ERR_PROTOCOL,   /* RSV bits, an opcode, a fragmented or long
                           control frame, a continuation error (5.2,
                           5.4, 5.5) */
};

struct frame_event {
  enum frame_event_kind kind;
  enum frame_error error;           /* FRAME_ERROR: which */
  struct frame_header header;       /* begun: the frame's header */
  uint8_t *data;                    /* FRAME_DATA: payload bytes, */
  size_t len;                       /* unmasked in place (unless
                                       FRAME_LEAVE_MASKED) */
  uint8_t mask[4];                  /* FRAME_LEAVE_MASKED: data is still */
  uint8_t masked;                   /* masked (1) with mask, from its */
  uint8_t mask_off;                 /* byte mask_off */
  uint8_t begun;                    /* a frame began: header holds it */
  uint8_t end;                      /* the frame's last payload byte */
  uint8_t message_end;              /* ...and its message's last */
  uint8_t opcode;                   /* the frame's */
  uint8_t msg_op;                   /* a data frame's message's */
};

/* Read p[0..n) (n > 0) up to the next event; payload bytes are
 * unmasked in place, or left masked with FRAME_LEAVE_MASKED.  Returns
 * the bytes used: all of them with FRAME_NEED_MORE (a header split over
 * reads is kept), as many as the event covers with FRAME_DATA, and with
 * FRAME_ERROR a count not to be relied on: the stream is then beyond
 * repair. */
size_t frame_read(struct frame_reader *r, uint8_t *p, size_t n,
                  unsigned flags, struct frame_event *ev);

/* Whether a frame or a message is under way (bytes of it are awaited). */
static inline int frame_reader_busy(const struct frame_reader *r) {
  return r->hdr_len || r->in_frame || r->msg_op;
}

#endif
