/* chunked.c - the chunked transfer coding (RFC 9112 section 7.1),
 * decoded in place, a byte of state at a time */
#include <string.h>

#include "chunked.h"

/* chunked-body   = *chunk last-chunk trailer-section CRLF
 * chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 * last-chunk     = 1*("0") [ chunk-ext ] CRLF
 * Lines end in CRLF alone: a bare LF or CR is refused, as a proxy
 * that took it otherwise could be made to see another request. */
enum {
  S_SIZE,             /* hex digits of a chunk size */
  S_SIZE_WS,          /* BWS after them: ";" or CR must follow */
  S_EXT,              /* a chunk extension, up to CR */
  S_SIZE_LF,          /* the LF of the size line */
  S_DATA,             /* chunk data */
  S_DATA_CR,          /* the CRLF after chunk data */
  S_DATA_LF,
  S_TRAILER,          /* the start of a trailer line, or the last CRLF */
  S_FIELD,            /* a trailer field, up to CR */
  S_FIELD_LF,
  S_END_LF,           /* the LF of the empty line that ends the body */
  S_DONE
};

static int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Control bytes other than HTAB may not stand in an extension or a
 * field (RFC 9110 section 5.5). */
static int is_ctl(uint8_t c) {
  return (c < 0x20 && c != '\t') || c == 0x7F;
}

#define BAD(reason)                                                   \
  do {                                                                \
    *why = (reason);                                                  \
    *body = out;                                                      \
    *used = i;                                                        \
    return CHUNKED_BAD;                                               \
  } while (0)

enum chunked_status chunked_decode(struct chunked *d, uint8_t *p, size_t n,
                                   size_t trailer_max, size_t *body,
                                   size_t *used, const char **why) {
  size_t i = 0, out = 0;
  while (i < n) {
    uint8_t c = p[i];
    switch (d->state) {
    case S_SIZE: {
      int v = hex_value(c);
      if (v >= 0) {
        if ((d->digits || v) && ++d->digits > 15)   /* leading 0s: none */
          BAD("chunk size too large");
        d->left = d->left << 4 | (uint64_t)v;
        break;
      }
      if (d->line == 0) BAD("chunk size expected");
      if (c == '\r') d->state = S_SIZE_LF;
      else if (c == ';') d->state = S_EXT;
      else if (c == ' ' || c == '\t') d->state = S_SIZE_WS;
      else BAD("invalid chunk size");
      break;
    }
    case S_SIZE_WS:   /* chunk-ext = *( BWS ";" BWS chunk-ext-name ... ) */
      if (c == '\r') d->state = S_SIZE_LF;
      else if (c == ';') d->state = S_EXT;
      else if (c != ' ' && c != '\t') BAD("invalid chunk extension");
      break;
    case S_EXT:
      if (c == '\r') d->state = S_SIZE_LF;
      else if (is_ctl(c)) BAD("invalid chunk extension");
      break;
    case S_SIZE_LF:
      if (c != '\n') BAD("chunk size line not ended by CRLF");
      d->line = 0;
      d->digits = 0;
      d->state = d->left ? S_DATA : S_TRAILER;
      i++;
      continue;
    case S_DATA: {
      size_t k = n - i;
      if (k > d->left) k = (size_t)d->left;
      if (out != i) memmove(p + out, p + i, k);
      out += k;
      i += k;
      d->left -= k;
      if (d->left == 0) d->state = S_DATA_CR;
      continue;
    }
    case S_DATA_CR:
      if (c != '\r') BAD("chunk data not followed by CRLF");
      d->state = S_DATA_LF;
      break;
    case S_DATA_LF:
      if (c != '\n') BAD("chunk data not followed by CRLF");
      d->state = S_SIZE;
      d->line = 0;
      i++;
      continue;
    case S_TRAILER:
      if (c == '\r') {
        d->state = S_END_LF;
        break;
      }
      d->state = S_FIELD;
      /* fall through */
    case S_FIELD:
      if (c == '\r') d->state = S_FIELD_LF;
      else if (is_ctl(c)) BAD("invalid trailer field");
      break;
    case S_FIELD_LF:
      if (c != '\n') BAD("trailer field not ended by CRLF");
      d->state = S_TRAILER;
      break;
    case S_END_LF:
      if (c != '\n') BAD("chunked body not ended by CRLF");
      if (++d->trailer > trailer_max) BAD("trailer section too large");
      d->state = S_DONE;
      *body = out;
      *used = i + 1;
      return CHUNKED_DONE;
    default:              /* S_DONE: nothing more belongs to it */
      *body = out;
      *used = i;
      return CHUNKED_DONE;
    }
    /* a byte of a line: the lines are bounded */
    if (d->state <= S_SIZE_LF && ++d->line > CHUNKED_LINE_MAX)
      BAD("chunk size line too long");
    if (d->state >= S_TRAILER && d->state <= S_END_LF &&
        ++d->trailer > trailer_max)
      BAD("trailer section too large");
    i++;
  }
  *body = out;
  *used = n;
  return d->state == S_DONE ? CHUNKED_DONE : CHUNKED_MORE;
}
