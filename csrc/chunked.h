/* chunked.h - an incremental decoder of the chunked transfer coding
 * (RFC 9112 section 7.1), in place; no I/O, no allocation */
#ifndef MS_CHUNKED_H
#define MS_CHUNKED_H

#include <stddef.h>
#include <stdint.h>

#define CHUNKED_LINE_MAX 4096   /* a chunk-size line, extensions included */

/* Between calls; all zero is a decoder before the first chunk. */
struct chunked {
  uint64_t left;          /* data bytes of the current chunk to come */
  size_t line;            /* bytes of the current line so far */
  size_t trailer;         /* bytes of the trailer section so far */
  uint8_t state;
  uint8_t digits;         /* hex digits of the size read */
};

enum chunked_status {
  CHUNKED_MORE,           /* every byte used; the body goes on */
  CHUNKED_DONE,           /* the last chunk and its trailer are read */
  CHUNKED_BAD,            /* not the chunked coding: answer 400 */
};

/* Decode p[0..n) in place: the body bytes found in it move to
 * p[0..*body).  *used is the input consumed: n, or with CHUNKED_DONE
 * the end of the trailer section (what follows, p[*used..n), is the
 * next request's).  Chunk extensions and trailer fields are read and
 * discarded; the trailer section may hold at most trailer_max bytes.
 * With CHUNKED_BAD, *why says what was wrong. */
enum chunked_status chunked_decode(struct chunked *d, uint8_t *p, size_t n,
                                   size_t trailer_max, size_t *body,
                                   size_t *used, const char **why);

#endif
