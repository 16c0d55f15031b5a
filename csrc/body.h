/* body.h - a request's body as the connection reads it: its framing
 * (RFC 9112 section 6), decoding, and the bytes held for the app */
#ifndef MS_BODY_H
#define MS_BODY_H

#include <stddef.h>
#include <stdint.h>

#include "chunked.h"

/* Held bytes beyond which reading pauses until the app takes some,
 * unless it asked for the whole body (req:body()). */
#define MS_BODY_HOLD (64u << 10)

enum ms_body_expect { EXPECT_NONE, EXPECT_PENDING, EXPECT_SENT };
enum ms_body_want { WANT_NONE, WANT_SOME, WANT_ALL };
/* Why a body can no longer be read, as the app is told. */
enum ms_body_error { BODY_OK, BODY_TOO_LARGE, BODY_BAD, BODY_TIMEOUT,
                     BODY_CLOSED, BODY_ANSWERED, BODY_BUSY };

struct ms_body {
  uint8_t *buf;                /* decoded: buf[start..start+len) is not
                                  yet taken by the app */
  size_t start, len, cap;
  uint64_t left;               /* Content-Length bytes still to come */
  uint64_t total;              /* decoded so far */
  double deadline;             /* body_timeout while reading, or 0 */
  uint32_t serial;             /* which request's: its server's count */
  struct chunked chunked;      /* the decoder, for a chunked body */
  uint8_t is_chunked;
  uint8_t done;                /* every byte of it read */
  uint8_t discard;             /* answered: what comes is dropped */
  uint8_t expect;              /* enum ms_body_expect */
  uint8_t want;                /* enum ms_body_want: the app waits */
  uint8_t error;               /* enum ms_body_error */
};

enum ms_body_status { BODY_MORE, BODY_DONE, BODY_INVALID };

/* A body of length bytes, or chunked when length is UINT64_MAX; NULL
 * when memory ran out. */
struct ms_body *ms_body_new(uint64_t length, int expect_continue);
void ms_body_free(struct ms_body *b);
/* Decode the framing of p[0..n), in place: the body bytes found move to
 * p[0..*got).  *used is the input consumed (with BODY_DONE, what
 * follows is the next request's).  BODY_INVALID sets *why. */
enum ms_body_status ms_body_decode(struct ms_body *b, uint8_t *p,
                                   size_t n, size_t trailer_max,
                                   size_t *got, size_t *used,
                                   const char **why);
/* Hold p[0..n) for the app; -1 when memory ran out. */
int ms_body_hold(struct ms_body *b, const uint8_t *p, size_t n);
/* The app took the first n held bytes (at buf + start). */
void ms_body_taken(struct ms_body *b, size_t n);
/* Drop what is held (a body answered without being read). */
void ms_body_drop(struct ms_body *b);
/* The message the app is told for error. */
const char *ms_body_error_text(enum ms_body_error error);
/* Its code: ETOOLARGE, EINVAL, ETIMEDOUT, ECLOSED. */
const char *ms_body_error_code(enum ms_body_error error);

#endif
