/* pmd.c - permessage-deflate (RFC 7692) for the load generator's
 * client: the server's answer read, messages compressed and inflated */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pmd.h"

/* The empty stored block a sync flush ends with (section 7.2.1). */
static const uint8_t flush_tail[4] = { 0x00, 0x00, 0xff, 0xff };

/* ======================================================================
 * The answer (section 7.1), one extension with its parameters:
 *   permessage-deflate; server_no_context_takeover; client_max_window_bits=10
 * ====================================================================== */

static void trim(const char **p, const char **end) {
  while (*p < *end && (**p == ' ' || **p == '\t')) (*p)++;
  while (*end > *p && ((*end)[-1] == ' ' || (*end)[-1] == '\t')) (*end)--;
}

static int is(const char *p, const char *end, const char *name) {
  size_t n = strlen(name);
  return (size_t)(end - p) == n && strncasecmp(p, name, n) == 0;
}

/* 8..15 in decimal without leading zeros (7.1.2), maybe quoted; else 0 */
static int window_bits(const char *v, const char *end) {
  if (end - v >= 2 && *v == '"' && end[-1] == '"') v++, end--;
  if (end - v == 1 && (*v == '8' || *v == '9')) return *v - '0';
  if (end - v == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
    return 10 + v[1] - '0';
  return 0;
}

const char *pmd_parse_response(const char *value, size_t len,
                               struct pmd_params *out) {
  const char *p = value, *end = value + len;
  unsigned seen = 0;
  memset(out, 0, sizeof *out);
  out->server_max_window_bits = out->client_max_window_bits = 15;
  if (memchr(value, ',', len)) return "more than the one extension offered";
  for (int first = 1;; first = 0) {
    const char *stop = memchr(p, ';', (size_t)(end - p));
    if (!stop) stop = end;
    const char *name = p, *name_end = stop;
    const char *eq = memchr(p, '=', (size_t)(stop - p));
    const char *v = NULL, *v_end = stop;
    if (eq) {
      name_end = eq;
      v = eq + 1;
      trim(&v, &v_end);
    }
    trim(&name, &name_end);
    int bit = 0, bits = 0;
    if (first) {
      if (eq || !is(name, name_end, "permessage-deflate"))
        return "an extension we did not offer";
    } else if (is(name, name_end, "server_no_context_takeover") && !eq) {
      bit = 1;
      out->server_no_context_takeover = 1;
    } else if (is(name, name_end, "client_no_context_takeover") && !eq) {
      bit = 2;
      out->client_no_context_takeover = 1;
    } else if (is(name, name_end, "server_max_window_bits") && eq &&
               (bits = window_bits(v, v_end))) {
      bit = 4;
      out->server_max_window_bits = (uint8_t)bits;
    } else if (is(name, name_end, "client_max_window_bits") && eq &&
               (bits = window_bits(v, v_end))) {
      bit = 8;
      out->client_max_window_bits = (uint8_t)bits;
    } else {
      return "an unknown or malformed permessage-deflate parameter";
    }
    if (seen & (unsigned)bit) return "a repeated permessage-deflate parameter";
    seen |= (unsigned)bit;
    if (stop == end) break;
    p = stop + 1;
  }
  return NULL;
}

/* ======================================================================
 * Streams
 * ====================================================================== */

struct pmd *pmd_new(const struct pmd_params *params, int level) {
  struct pmd *z = calloc(1, sizeof *z);
  if (!z) return NULL;
  z->params = *params;
  z->level = level;
  return z;
}

void pmd_free(struct pmd *z) {
  if (!z) return;
  if (z->out_ready) deflateEnd(&z->out);
  if (z->in_ready) inflateEnd(&z->in);
  free(z);
}

static int grow(uint8_t **buf, size_t *cap, size_t want) {
  if (*cap >= want) return 0;
  size_t n = *cap ? *cap : 1024;
  while (n < want) n *= 2;
  uint8_t *p = realloc(*buf, n);
  if (!p) return -1;
  *buf = p;
  *cap = n;
  return 0;
}

long pmd_compress(struct pmd *z, const uint8_t *in, size_t n,
                  uint8_t **buf, size_t *cap) {
  if (n == 0) {
    /* 7.2.3.6: an empty message may be one empty stored block, less
     * its tail: 0x00.  The stream's window is left alone. */
    if (grow(buf, cap, 1) != 0) return -1;
    (*buf)[0] = 0x00;
    return 1;
  }
  if (!z->out_ready) {
    /* zlib's raw deflate has no 8-bit window: 9 for 8, which reaches
     * back at most 250 bytes (deflate.h, MAX_DIST), so it fits */
    int bits = z->params.client_max_window_bits < 9
               ? 9 : z->params.client_max_window_bits;
    if (deflateInit2(&z->out, z->level, Z_DEFLATED, -bits, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
      return -1;
    z->out_ready = 1;
  }
  if (grow(buf, cap, deflateBound(&z->out, (uLong)n) + 64) != 0) return -1;
  size_t len = 0;
  z->out.next_in = (Bytef *)(uintptr_t)in;
  z->out.avail_in = (uInt)n;
  do {
    if (*cap - len < 64 && grow(buf, cap, *cap * 2) != 0) return -1;
    z->out.next_out = *buf + len;
    z->out.avail_out = (uInt)(*cap - len);
    int rc = deflate(&z->out, Z_SYNC_FLUSH);
    len = (size_t)(z->out.next_out - *buf);
    if (rc != Z_OK && rc != Z_BUF_ERROR) return -1;
  } while (z->out.avail_out == 0 || z->out.avail_in != 0);
  if (len < 4 || memcmp(*buf + len - 4, flush_tail, 4) != 0) return -1;
  if (z->params.client_no_context_takeover) deflateReset(&z->out);
  return (long)(len - 4);
}

int pmd_inflate(struct pmd *z, const uint8_t *in, size_t n, int last,
                uint8_t *scratch, size_t scratch_size, pmd_sink sink,
                void *arg, const char **why) {
  if (!z->in_ready) {
    /* a window as large as the server may use; 15 fits any */
    if (inflateInit2(&z->in, -15) != Z_OK) {
      *why = "inflateInit2 failed";
      return -1;
    }
    z->in_ready = 1;
  }
  for (int pass = 0; pass < 1 + last; pass++) {
    z->in.next_in = (Bytef *)(uintptr_t)(pass ? flush_tail : in);
    z->in.avail_in = (uInt)(pass ? sizeof flush_tail : n);
    do {
      z->in.next_out = scratch;
      z->in.avail_out = (uInt)scratch_size;
      int rc = inflate(&z->in, Z_SYNC_FLUSH);
      size_t made = scratch_size - z->in.avail_out;
      if (rc == Z_STREAM_END) {
        /* a final block: legal, but this client does not carry the
         * window over a stream's end; no server we measure sends one */
        *why = "a final DEFLATE block (not handled by loadgen)";
        return -1;
      }
      if (rc != Z_OK && rc != Z_BUF_ERROR) {
        *why = z->in.msg ? z->in.msg : "invalid DEFLATE data";
        return -1;
      }
      if (made) {
        int stop = sink(arg, scratch, made);
        if (stop) return stop;
      }
      if (rc == Z_BUF_ERROR && !made) break;    /* needs more input */
    } while (z->in.avail_in != 0 || z->in.avail_out == 0);
  }
  if (last && z->params.server_no_context_takeover) inflateReset(&z->in);
  return 0;
}
