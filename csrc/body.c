/* body.c - a request's body: decoding its framing, holding what the
 * app has not taken */
#include <stdlib.h>
#include <string.h>

#include "body.h"

struct ms_body *ms_body_new(uint64_t length, int expect_continue) {
  struct ms_body *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  b->is_chunked = length == UINT64_MAX;
  b->left = b->is_chunked ? 0 : length;
  b->expect = expect_continue ? EXPECT_PENDING : EXPECT_NONE;
  return b;
}

void ms_body_free(struct ms_body *b) {
  if (!b) return;
  free(b->buf);
  free(b);
}

enum ms_body_status ms_body_decode(struct ms_body *b, uint8_t *p,
                                   size_t n, size_t trailer_max,
                                   size_t *got, size_t *used,
                                   const char **why) {
  if (!b->is_chunked) {
    size_t take = b->left < n ? (size_t)b->left : n;
    b->left -= take;
    b->total += take;
    *got = *used = take;
    return b->left ? BODY_MORE : BODY_DONE;
  }
  enum chunked_status st = chunked_decode(&b->chunked, p, n, trailer_max,
                                          got, used, why);
  b->total += *got;
  return st == CHUNKED_DONE ? BODY_DONE
         : st == CHUNKED_BAD ? BODY_INVALID : BODY_MORE;
}

int ms_body_hold(struct ms_body *b, const uint8_t *p, size_t n) {
  if (n == 0) return 0;
  if (b->start + b->len + n > b->cap && b->start) {
    memmove(b->buf, b->buf + b->start, b->len);
    b->start = 0;
  }
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    uint8_t *buf = realloc(b->buf, cap);
    if (!buf) return -1;
    b->buf = buf;
    b->cap = cap;
  }
  memcpy(b->buf + b->start + b->len, p, n);
  b->len += n;
  return 0;
}

void ms_body_taken(struct ms_body *b, size_t n) {
  b->len -= n;
  b->start = b->len ? b->start + n : 0;
  if (!b->len && b->cap > MS_BODY_HOLD) {  /* keep no large buffer idle */
    free(b->buf);
    b->buf = NULL;
    b->cap = 0;
  }
}

void ms_body_drop(struct ms_body *b) {
  free(b->buf);
  b->buf = NULL;
  b->start = b->len = b->cap = 0;
}

const char *ms_body_error_text(enum ms_body_error error) {
  switch (error) {
  case BODY_TOO_LARGE: return "request body too large";
  case BODY_BAD: return "invalid chunked request body";
  case BODY_TIMEOUT: return "timeout";
  case BODY_ANSWERED: return "the request was answered already";
  case BODY_BUSY: return "the server holds too many incomplete bytes";
  default: return "closed";
  }
}

const char *ms_body_error_code(enum ms_body_error error) {
  switch (error) {
  case BODY_TOO_LARGE: return "ETOOLARGE";
  case BODY_BAD: return "EINVAL";
  case BODY_TIMEOUT: return "ETIMEDOUT";
  case BODY_BUSY: return "EBUSY";
  default: return "ECLOSED";
  }
}
