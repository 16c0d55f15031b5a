/* frame_reader.c - an incremental RFC 6455 frame reader (section 5) */
#include <string.h>

#include "frame_reader.h"

/* The header's fault, or 0: section 5.1 by direction, then frame_check's
 * rules of sections 5.2, 5.4 and 5.5. */
static enum frame_error header_error(const struct frame_reader *r,
                                     const struct frame_header *h,
                                     unsigned flags) {
  unsigned rsv = flags & FRAME_RSV1 ? 4 : 0;
  if (flags & FRAME_FROM_SERVER) {
    if (h->masked) return FRAME_ERR_MASKED;
    return frame_check_from_server(h, rsv, r->msg_op != 0)
           ? FRAME_ERR_PROTOCOL : 0;
  }
  if (!h->masked) return FRAME_ERR_UNMASKED;
  return frame_check(h, rsv, r->msg_op != 0) ? FRAME_ERR_PROTOCOL : 0;
}

/* Parse the next header, split over reads or not.  Returns the bytes
 * used, with ev->kind FRAME_NEED_MORE (all kept) or FRAME_ERROR, or
 * with the frame begun. */
static size_t read_header(struct frame_reader *r, const uint8_t *p,
                          size_t n, unsigned flags,
                          struct frame_event *ev) {
  struct frame_header *h = &ev->header;
  size_t used;
  int hl;
  if (r->hdr_len) {
    size_t take = WS_FRAME_HEADER_MAX - r->hdr_len;
    if (take > n) take = n;
    memcpy(r->hdr + r->hdr_len, p, take);
    hl = frame_parse_header(r->hdr, r->hdr_len + take, h);
    if (hl == 0) {
      r->hdr_len = (uint8_t)(r->hdr_len + take);
      ev->kind = FRAME_NEED_MORE;
      return n;
    }
    used = hl > 0 ? (size_t)hl - r->hdr_len : n;
    r->hdr_len = 0;
  } else {
    hl = frame_parse_header(p, n, h);
    if (hl == 0) {
      memcpy(r->hdr, p, n);
      r->hdr_len = (uint8_t)n;
      ev->kind = FRAME_NEED_MORE;
      return n;
    }
    used = hl > 0 ? (size_t)hl : n;
  }
  ev->error = hl < 0 ? FRAME_ERR_LENGTH : header_error(r, h, flags);
  if (ev->error) {
    ev->kind = FRAME_ERROR;
    return used;
  }
  r->left = h->length;
  memcpy(r->mask, h->mask, 4);
  r->mask_off = 0;
  r->opcode = h->opcode;
  r->fin = h->fin;
  r->masked = h->masked;
  r->in_frame = 1;
  if (h->opcode == WS_OP_TEXT || h->opcode == WS_OP_BINARY)
    r->msg_op = h->opcode;
  ev->begun = 1;
  return used;
}

/* A client's whole message at p[0..hl + len): one final text or binary
 * frame (0x81, 0x82: no RSV bit), masked, with a 7- or 16-bit length,
 * no message open, its payload all there.  It is what the general way
 * below would make of it, with the reader left as it was (between
 * frames, no message open), in one step. */
static size_t read_whole(uint8_t *p, size_t hl, size_t len, unsigned flags,
                         struct frame_event *ev) {
  struct frame_header *h = &ev->header;
  h->length = len;
  memcpy(h->mask, p + hl - 4, 4);
  h->opcode = p[0] & 0x0F;
  h->fin = 1;
  h->rsv = 0;
  h->masked = 1;
  ev->kind = FRAME_DATA;
  ev->begun = 1;
  ev->data = p + hl;
  ev->len = len;
  ev->opcode = ev->msg_op = h->opcode;
  ev->end = ev->message_end = 1;
  if (flags & FRAME_LEAVE_MASKED) {
    ev->masked = 1;
    memcpy(ev->mask, h->mask, 4);
    ev->mask_off = 0;
  } else {
    ev->masked = 0;
    frame_unmask(ev->data, len, h->mask, 0);
  }
  return hl + len;
}

/* The header's size when p[0..n) begins with what read_whole takes
 * (its payload's length in *len), else 0. */
static inline size_t whole_header(const struct frame_reader *r,
                                  const uint8_t *p, size_t n,
                                  unsigned flags, size_t *len) {
  if (n < 6 || (p[0] != 0x81 && p[0] != 0x82) || !(p[1] & 0x80) ||
      r->hdr_len || r->msg_op || (flags & FRAME_FROM_SERVER))
    return 0;
  size_t hl = 6, l = p[1] & 0x7F;
  if (l == 126) {
    if (n < 8) return 0;
    hl = 8;
    l = (size_t)p[2] << 8 | p[3];
  } else if (l == 127) {
    return 0;
  }
  if (n - hl < l) return 0;
  *len = l;
  return hl;
}

size_t frame_read(struct frame_reader *r, uint8_t *p, size_t n,
                  unsigned flags, struct frame_event *ev) {
  size_t i = 0;
  ev->begun = 0;
  if (!r->in_frame) {
    size_t len, hl = whole_header(r, p, n, flags, &len);
    if (hl) return read_whole(p, hl, len, flags, ev);
    i = read_header(r, p, n, flags, ev);
    if (!ev->begun) return i;
  }
  size_t avail = n - i;
  if (avail > r->left) avail = (size_t)r->left;
  ev->masked = 0;
  if (r->masked) {
    if (flags & FRAME_LEAVE_MASKED) {
      ev->masked = 1;
      memcpy(ev->mask, r->mask, 4);
      ev->mask_off = r->mask_off;
    } else {
      frame_unmask(p + i, avail, r->mask, r->mask_off);
    }
    r->mask_off = (uint8_t)((r->mask_off + avail) & 3);
  }
  r->left -= avail;
  ev->kind = FRAME_DATA;
  ev->data = p + i;
  ev->len = avail;
  ev->opcode = r->opcode;
  ev->msg_op = r->msg_op;
  ev->end = r->left == 0;
  ev->message_end = 0;
  if (ev->end) {
    r->in_frame = 0;
    if (r->opcode < 8 && r->fin) {
      ev->message_end = 1;
      r->msg_op = 0;
    }
  }
  return i + avail;
}
