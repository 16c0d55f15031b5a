/* deflate.c - permessage-deflate (RFC 7692) over zlib, one connection */
#define ZLIB_CONST
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "deflate.h"

/* The empty stored block a sync flush ends with (section 7.2.1). */
static const uint8_t flush_tail[4] = { 0x00, 0x00, 0xff, 0xff };

/* zlib counts bytes in uInt: hand it at most this much at a time. */
#define ZCHUNK ((size_t)1 << 30)

/* ---------------------------------------------------------------------
 * Heap accounting.  Each stream counts what zlib holds for it, so that
 * deflate_state_memory can say what a connection costs.
 * ------------------------------------------------------------------- */

struct deflate_stream {
  z_stream z;
  size_t heap;   /* bytes held, this struct included */
};

union block_head {   /* a block's size, in front of it, aligned as malloc */
  max_align_t align;
  size_t size;
};

static void *stream_alloc(struct deflate_stream *s, size_t size) {
  if (size > SIZE_MAX - sizeof(union block_head)) return NULL;
  union block_head *h = malloc(sizeof *h + size);
  if (!h) return NULL;
  h->size = sizeof *h + size;
  s->heap += h->size;
  return h + 1;
}

static void stream_release(struct deflate_stream *s, void *p) {
  if (!p) return;
  union block_head *h = (union block_head *)p - 1;
  s->heap -= h->size;
  free(h);
}

static voidpf zalloc_counted(voidpf opaque, uInt items, uInt size) {
  if (size && items > SIZE_MAX / size) return Z_NULL;
  return stream_alloc(opaque, (size_t)items * size);
}

static void zfree_counted(voidpf opaque, voidpf p) {
  stream_release(opaque, p);
}

/* A stream whose zlib allocations go to its own count.  The count lives
 * in the stream, not the state, so the state may move. */
static struct deflate_stream *stream_new(void) {
  struct deflate_stream *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->heap = sizeof *s;
  s->z.zalloc = zalloc_counted;
  s->z.zfree = zfree_counted;
  s->z.opaque = s;
  return s;
}

size_t deflate_state_memory(const struct deflate_state *st) {
  return (st->compress ? st->compress->heap : 0) +
         (st->decompress ? st->decompress->heap : 0);
}

/* ---------------------------------------------------------------------
 * Output buffers
 * ------------------------------------------------------------------- */

/* Make room for want more bytes, doubling so appends stay linear, but
 * never past limit bytes of capacity (less room is then made). */
static int buf_reserve(struct deflate_buf *b, size_t want, size_t limit) {
  if (b->cap - b->len >= want) return 0;
  if (want > SIZE_MAX - b->len) return -1;
  size_t cap = b->cap > SIZE_MAX / 2 ? SIZE_MAX : b->cap * 2;
  if (cap < b->len + want) cap = b->len + want;
  if (cap > limit) cap = limit;
  if (cap <= b->cap) return 0;
  uint8_t *data = realloc(b->data, cap);
  if (!data) return -1;
  b->data = data;
  b->cap = cap;
  return 0;
}

void deflate_buf_free(struct deflate_buf *buf) {
  free(buf->data);
  buf->data = NULL;
  buf->len = buf->cap = 0;
}

/* ---------------------------------------------------------------------
 * Negotiation: the Sec-WebSocket-Extensions grammar of RFC 6455 section
 * 9.1 (tokens and quoted-strings as in RFC 7230 section 3.2.6), then the
 * parameters of RFC 7692 section 7.1.
 * ------------------------------------------------------------------- */

struct cursor {
  const char *p, *end;
};

enum { P_SERVER_NCT, P_CLIENT_NCT, P_SERVER_BITS, P_CLIENT_BITS, NPARAM };

static const char *const param_names[NPARAM] = {
  "server_no_context_takeover", "client_no_context_takeover",
  "server_max_window_bits", "client_max_window_bits"
};

struct offer {
  unsigned seen;     /* a bit per parameter, to spot repeats */
  int server_bits;   /* server_max_window_bits, when seen */
  int client_bits;   /* client_max_window_bits; 15 when it had no value */
};

static int is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z'))
    return 1;
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_ows(struct cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) c->p++;
}

/* The length of the token at the cursor, which moves past it. */
static size_t take_token(struct cursor *c) {
  const char *start = c->p;
  while (c->p < c->end && is_tchar((unsigned char)*c->p)) c->p++;
  return (size_t)(c->p - start);
}

/* A quoted-string at the cursor whose unescaped content must be a token
 * (RFC 6455 section 9.1).  Copies up to cap bytes of the content to buf
 * and sets *len to its whole length.  Returns -1, not moving the cursor,
 * when it is malformed. */
static int take_quoted(struct cursor *c, char *buf, size_t cap,
                       size_t *len) {
  const char *p = c->p + 1;
  size_t n = 0;
  for (;;) {
    if (p == c->end) return -1;
    unsigned char ch = (unsigned char)*p++;
    if (ch == '"') break;
    if (ch == '\\') {                 /* quoted-pair */
      if (p == c->end) return -1;
      ch = (unsigned char)*p++;
    }
    if (!is_tchar(ch)) return -1;
    if (n < cap) buf[n] = (char)ch;
    n++;
  }
  if (n == 0) return -1;
  c->p = p;
  *len = n;
  return 0;
}

/* Move past the next ',' outside a quoted-string, or to the end. */
static void skip_offer(struct cursor *c) {
  int quoted = 0;
  while (c->p < c->end) {
    char ch = *c->p++;
    if (quoted) {
      if (ch == '\\' && c->p < c->end) c->p++;
      else if (ch == '"') quoted = 0;
    } else if (ch == '"') {
      quoted = 1;
    } else if (ch == ',') {
      return;
    }
  }
}

/* ASCII case-insensitive: t[0..n) equals the lower-case name. */
static int token_is(const char *t, size_t n, const char *name) {
  size_t i;
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)t[i];
    if (ch >= 'A' && ch <= 'Z') ch = (unsigned char)(ch - 'A' + 'a');
    if (name[i] == '\0' || ch != (unsigned char)name[i]) return 0;
  }
  return name[i] == '\0';
}

/* 8..15 written in decimal without leading zeros (section 7.1.2.1),
 * else 0.  n is the value's whole length; v holds at least 2 bytes. */
static int window_bits(const char *v, size_t n) {
  if (n == 1 && (v[0] == '8' || v[0] == '9')) return v[0] - '0';
  if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
    return 10 + (v[1] - '0');
  return 0;
}

/* Record one parameter of a permessage-deflate offer.  Returns -1 when
 * it makes the offer invalid: unknown, repeated, or with a bad value
 * (section 7, the server "MUST decline" such offers). */
static int offer_param(struct offer *o, const char *name, size_t nlen,
                       int has_value, const char *val, size_t vlen) {
  int i = 0;
  while (i < NPARAM && !token_is(name, nlen, param_names[i])) i++;
  if (i == NPARAM || (o->seen & 1u << i)) return -1;
  o->seen |= 1u << i;
  switch (i) {
  case P_SERVER_NCT: case P_CLIENT_NCT:         /* 7.1.1: no value */
    return has_value ? -1 : 0;
  case P_SERVER_BITS:                           /* 7.1.2.1: a value */
    o->server_bits = has_value ? window_bits(val, vlen) : 0;
    return o->server_bits ? 0 : -1;
  default:                                      /* 7.1.2.2: optional */
    o->client_bits = has_value ? window_bits(val, vlen) : 15;
    return o->client_bits ? 0 : -1;
  }
}

/* Read one element of the list and move past its ','.  Returns 1 when
 * it is a well-formed permessage-deflate offer with valid parameters. */
static int read_offer(struct cursor *c, struct offer *o) {
  memset(o, 0, sizeof *o);
  skip_ows(c);
  if (c->p < c->end && *c->p == ',') {   /* an empty list element */
    c->p++;
    return 0;
  }
  const char *name = c->p;
  size_t nlen = take_token(c);
  int ours = token_is(name, nlen, "permessage-deflate");
  if (nlen == 0) goto invalid;
  for (;;) {
    skip_ows(c);
    if (c->p == c->end) return ours;
    if (*c->p == ',') {
      c->p++;
      return ours;
    }
    if (*c->p != ';') goto invalid;
    c->p++;
    skip_ows(c);
    const char *pname = c->p;
    size_t plen = take_token(c);
    if (plen == 0) goto invalid;
    skip_ows(c);
    char val[4] = "";
    size_t vlen = 0;
    int has_value = c->p < c->end && *c->p == '=';
    if (has_value) {
      c->p++;
      skip_ows(c);
      if (c->p < c->end && *c->p == '"') {
        if (take_quoted(c, val, sizeof val, &vlen) < 0) goto invalid;
      } else {
        const char *v = c->p;
        vlen = take_token(c);
        if (vlen == 0) goto invalid;
        memcpy(val, v, vlen < sizeof val ? vlen : sizeof val);
      }
    }
    if (ours && offer_param(o, pname, plen, has_value, val, vlen) < 0)
      goto invalid;
  }
invalid:
  skip_offer(c);
  return 0;
}

/* Settle an offer against the configuration (section 7.1) and write the
 * response.  Returns 0 when it cannot be served. */
static int accept_offer(const struct offer *o,
                        const struct deflate_config *cfg,
                        struct deflate_params *p, char *response) {
  /* zlib's raw deflate has no 256-byte window (zlib.h, deflateInit2):
   * asked for 8 it fails; before 1.2.9 it used 9.  So a configured 8
   * means 9, and an offer that demands 8 is declined, as we may not
   * answer with more than it allows (7.1.2.1).  (zlib's 9-bit deflate
   * happens to reach back only 250 bytes, but its API promises nothing
   * of the kind.) */
  int server_bits = cfg->server_max_window_bits;
  if (server_bits < 9) server_bits = 9;
  int offered_server_bits = (o->seen & 1u << P_SERVER_BITS) != 0;
  if (offered_server_bits) {
    if (o->server_bits == 8) return 0;
    if (o->server_bits < server_bits) server_bits = o->server_bits;
  }
  /* Only a client that offered client_max_window_bits can be limited
   * (7.1.2.2); any other may use 15 bits, so we inflate with 15. */
  int client_bits = 15;
  int offered_client_bits = (o->seen & 1u << P_CLIENT_BITS) != 0;
  if (offered_client_bits) {
    client_bits = cfg->client_max_window_bits;
    if (o->client_bits < client_bits) client_bits = o->client_bits;
  }
  /* A client asking for no takeover must get it (7.1.1.1); one that
   * offers to give it up lets us free its stream between messages. */
  int server_nct = (o->seen & 1u << P_SERVER_NCT) ||
                   cfg->server_no_context_takeover;
  int client_nct = (o->seen & 1u << P_CLIENT_NCT) ||
                   cfg->client_no_context_takeover;

  p->server_max_window_bits = (uint8_t)server_bits;
  p->client_max_window_bits = (uint8_t)client_bits;
  p->server_no_context_takeover = (uint8_t)server_nct;
  p->client_no_context_takeover = (uint8_t)client_nct;
  p->level = (int8_t)cfg->level;
  p->mem_level = (uint8_t)cfg->mem_level;
  p->threshold = cfg->threshold;

  size_t k = (size_t)snprintf(response, DEFLATE_RESPONSE_MAX,
                              "permessage-deflate%s%s",
                              server_nct ? "; server_no_context_takeover" : "",
                              client_nct ? "; client_no_context_takeover" : "");
  /* an offered server_max_window_bits must be answered (7.1.2.1) */
  if (offered_server_bits || server_bits < 15)
    k += (size_t)snprintf(response + k, DEFLATE_RESPONSE_MAX - k,
                          "; server_max_window_bits=%d", server_bits);
  if (offered_client_bits && client_bits < 15)
    snprintf(response + k, DEFLATE_RESPONSE_MAX - k,
             "; client_max_window_bits=%d", client_bits);
  return 1;
}

int deflate_accept_response(const char *value, size_t len,
                            const struct deflate_config *cfg,
                            struct deflate_params *out) {
  struct cursor c = { value, value + len };
  struct offer o;
  /* one element, ours, with valid parameters (section 5 and 7.1) */
  if (!read_offer(&c, &o)) return 0;
  skip_ows(&c);
  if (c.p != c.end) return 0;
  /* Our compressor is the "client" of the response and deflate.c's
   * compressor reads the server_* fields: swap the directions.  Any
   * window from the server inflates with 15 bits.  zlib cannot deflate
   * with 8 bits (see accept_offer): then nothing is compressed, which
   * section 6 allows. */
  int client_bits = o.seen & 1u << P_CLIENT_BITS ? o.client_bits : 15;
  out->server_max_window_bits = (uint8_t)(client_bits < 9 ? 9
                                                          : client_bits);
  out->client_max_window_bits = 15;
  out->server_no_context_takeover = (uint8_t)(
      (o.seen & 1u << P_CLIENT_NCT) != 0 || cfg->client_no_context_takeover);
  out->client_no_context_takeover = (o.seen & 1u << P_SERVER_NCT) != 0;
  out->level = (int8_t)cfg->level;
  out->mem_level = (uint8_t)cfg->mem_level;
  out->threshold = client_bits < 9 ? SIZE_MAX : cfg->threshold;
  return 1;
}

int deflate_negotiate(const char *value, size_t len,
                      const struct deflate_config *cfg,
                      struct deflate_params *out,
                      char *response, size_t response_size) {
  if (response_size < DEFLATE_RESPONSE_MAX) return -1;
  response[0] = '\0';
  if (!cfg->enabled || value == NULL) return 0;
  struct cursor c = { value, value + len };
  struct offer o;
  while (c.p < c.end)     /* section 5: offers come in order of preference */
    if (read_offer(&c, &o) && accept_offer(&o, cfg, out, response))
      return 1;
  return 0;
}

int deflate_config_check(const struct deflate_config *cfg,
                         const char **why) {
  *why = NULL;
  if (cfg->server_max_window_bits < 8 || cfg->server_max_window_bits > 15)
    *why = "server_max_window_bits must be 8..15";
  else if (cfg->client_max_window_bits < 8 ||
           cfg->client_max_window_bits > 15)
    *why = "client_max_window_bits must be 8..15";
  else if (cfg->mem_level < 1 || cfg->mem_level > 9)
    *why = "mem_level must be 1..9";
  else if (cfg->level < -1 || cfg->level > 9)
    *why = "level must be -1..9";
  return *why ? -1 : 0;
}

/* ---------------------------------------------------------------------
 * Compression, section 7.2.1
 * ------------------------------------------------------------------- */

int deflate_should_compress(const struct deflate_params *params,
                            size_t len) {
  return len >= params->threshold;
}

static void compressor_close(struct deflate_state *st) {
  if (!st->compress) return;
  deflateEnd(&st->compress->z);
  free(st->compress);
  st->compress = NULL;
}

static int compressor_open(struct deflate_state *st,
                           const struct deflate_params *p) {
  if (st->compress) return DEFLATE_OK;
  struct deflate_stream *s = stream_new();
  if (!s) return DEFLATE_NO_MEMORY;
  /* negative window bits: raw DEFLATE, no zlib header or trailer */
  int rc = deflateInit2(&s->z, p->level, Z_DEFLATED,
                        -(int)p->server_max_window_bits, p->mem_level,
                        Z_DEFAULT_STRATEGY);
  if (rc != Z_OK) {
    free(s);
    return rc == Z_MEM_ERROR ? DEFLATE_NO_MEMORY : DEFLATE_BAD_PARAMS;
  }
  st->compress = s;
  return DEFLATE_OK;
}

int deflate_compress(struct deflate_state *st,
                     const struct deflate_params *params,
                     const uint8_t *in, size_t n, struct deflate_buf *out) {
  if (n == 0) {
    /* 7.2.1 turns no data into an empty stored block less its last 4
     * bytes: 0x00.  zlib would write nothing right after a flush, and
     * the byte needs no stream: it leaves the peer's window alone. */
    if (buf_reserve(out, 1, SIZE_MAX) < 0) return DEFLATE_NO_MEMORY;
    out->data[out->len++] = 0x00;
    return DEFLATE_OK;
  }
  int rc = compressor_open(st, params);
  if (rc != DEFLATE_OK) return rc;
  z_stream *z = &st->compress->z;
  size_t start = out->len;
  /* First guess: zlib's bound for small messages, an eighth plus a
   * little for big ones (so text does not reserve its own size). */
  size_t guess = n / 8 + 4096;
  if (n < guess) guess = deflateBound(z, (uLong)n) + 16;
  rc = DEFLATE_NO_MEMORY;
  if (buf_reserve(out, guess, SIZE_MAX) < 0) goto fail;
  const uint8_t *next = in;
  size_t left = n;
  z->avail_in = 0;
  for (;;) {
    if (z->avail_in == 0 && left) {
      size_t k = left < ZCHUNK ? left : ZCHUNK;
      z->next_in = next;
      z->avail_in = (uInt)k;
      next += k;
      left -= k;
    }
    /* more than 6 bytes free, or zlib may repeat the flush marker */
    if (buf_reserve(out, 64, SIZE_MAX) < 0) goto fail;
    size_t room = out->cap - out->len;
    if (room > ZCHUNK) room = ZCHUNK;
    z->next_out = out->data + out->len;
    z->avail_out = (uInt)room;
    int zrc = deflate(z, left ? Z_NO_FLUSH : Z_SYNC_FLUSH);
    out->len += room - z->avail_out;
    if (zrc == Z_STREAM_ERROR) {
      rc = DEFLATE_BAD_PARAMS;
      goto fail;
    }
    if (!left && z->avail_in == 0 &&
        (z->avail_out != 0 || zrc == Z_BUF_ERROR))
      break;
  }
  /* Z_SYNC_FLUSH ends on 00 00 ff ff, which section 7.2.1 removes */
  if (out->len - start < 4 ||
      memcmp(out->data + out->len - 4, flush_tail, 4) != 0) {
    rc = DEFLATE_BAD_PARAMS;
    goto fail;
  }
  out->len -= 4;
  if (params->server_no_context_takeover) compressor_close(st);
  return DEFLATE_OK;
fail:
  /* The stream has eaten part of a message the peer never sees; a new
   * one is always safe, as it refers to nothing the peer lacks. */
  out->len = start;
  compressor_close(st);
  return rc;
}

/* ---------------------------------------------------------------------
 * Decompression, section 7.2.2
 * ------------------------------------------------------------------- */

static void decompressor_close(struct deflate_state *st) {
  if (!st->decompress) return;
  inflateEnd(&st->decompress->z);
  free(st->decompress);
  st->decompress = NULL;
}

static int decompressor_open(struct deflate_state *st,
                             const struct deflate_params *p) {
  if (st->decompress) return DEFLATE_OK;
  struct deflate_stream *s = stream_new();
  if (!s) return DEFLATE_NO_MEMORY;
  /* The window the client agreed to, 8 included: raw inflate takes 8
   * (zlib.h, inflateInit2).  Senders whose zlib turns 8 into 9 still
   * fit, as zlib's deflate reaches back at most the window less 262
   * bytes (deflate.h, MAX_DIST): 250 for 9. */
  int rc = inflateInit2(&s->z, -(int)p->client_max_window_bits);
  if (rc != Z_OK) {
    free(s);
    return rc == Z_MEM_ERROR ? DEFLATE_NO_MEMORY : DEFLATE_BAD_PARAMS;
  }
  st->decompress = s;
  return DEFLATE_OK;
}

/* Inflate in[0..n), appending to out while it stays within max_size. */
static int inflate_run(struct deflate_state *st, const uint8_t *in,
                       size_t n, size_t max_size, struct deflate_buf *out) {
  z_stream *z = &st->decompress->z;
  z->avail_in = 0;
  for (;;) {
    if (z->avail_in == 0 && n) {
      size_t k = n < ZCHUNK ? n : ZCHUNK;
      z->next_in = in;
      z->avail_in = (uInt)k;
      in += k;
      n -= k;
    }
    uint8_t probe;
    size_t room;
    int full = out->len >= max_size;
    if (!full) {
      if (buf_reserve(out, 1024, max_size) < 0) return DEFLATE_NO_MEMORY;
      room = (out->cap < max_size ? out->cap : max_size) - out->len;
      if (room > ZCHUNK) room = ZCHUNK;
      z->next_out = out->data + out->len;
    } else {
      /* at the limit: one spare byte tells whether the message goes on */
      room = 1;
      z->next_out = &probe;
    }
    z->avail_out = (uInt)room;
    uInt had = z->avail_in;
    int zrc = inflate(z, Z_SYNC_FLUSH);
    size_t made = room - z->avail_out;
    if (full && made) return DEFLATE_TOO_BIG;
    if (!full) out->len += made;
    switch (zrc) {
    case Z_OK:
      break;
    case Z_STREAM_END:
      /* a final block (7.2.3.4): what follows it cannot be DEFLATE data
       * of this message, so it is ignored */
      st->ended = 1;
      return DEFLATE_OK;
    case Z_BUF_ERROR:               /* no progress: only without input */
      if (made || had != z->avail_in) break;
      if (z->avail_in == 0 && n == 0) return DEFLATE_OK;
      return DEFLATE_BAD_DATA;
    case Z_MEM_ERROR:
      return DEFLATE_NO_MEMORY;
    default:                        /* Z_DATA_ERROR, Z_NEED_DICT */
      return DEFLATE_BAD_DATA;
    }
    if (z->avail_in == 0 && n == 0 && z->avail_out != 0) return DEFLATE_OK;
  }
}

/* After a final block the stream is over, but with context takeover the
 * next message may refer to this one's data: restart it with the old
 * window as its dictionary (raw inflate takes one at any time). */
static int inflate_restart(struct deflate_stream *s) {
  uInt have = 0;
  inflateGetDictionary(&s->z, Z_NULL, &have);
  uint8_t *dict = NULL;
  if (have) {
    dict = stream_alloc(s, have);
    if (!dict) return DEFLATE_NO_MEMORY;
    inflateGetDictionary(&s->z, dict, &have);
  }
  int rc = inflateReset(&s->z);
  if (rc == Z_OK && have) rc = inflateSetDictionary(&s->z, dict, have);
  stream_release(s, dict);
  return rc == Z_OK ? DEFLATE_OK : DEFLATE_BAD_DATA;
}

static int inflate_finish(struct deflate_state *st,
                          const struct deflate_params *p, size_t max_size,
                          struct deflate_buf *out) {
  int rc = DEFLATE_OK;
  /* An empty payload is an empty message; anything else gets back the
   * 00 00 ff ff its sender removed (7.2.2) and must then end on a block
   * boundary (zlib.h: data_type has 128), or it was cut short. */
  if (st->got_input && !st->ended) {
    rc = inflate_run(st, flush_tail, sizeof flush_tail, max_size, out);
    if (rc == DEFLATE_OK && !st->ended &&
        !(st->decompress->z.data_type & 128))
      rc = DEFLATE_BAD_DATA;
  }
  if (rc == DEFLATE_OK && st->ended && !p->client_no_context_takeover)
    rc = inflate_restart(st->decompress);
  if (p->client_no_context_takeover) decompressor_close(st);
  return rc;
}

int deflate_inflate_chunk(struct deflate_state *st,
                          const struct deflate_params *params,
                          const uint8_t *in, size_t n, int last,
                          size_t max_size, struct deflate_buf *out) {
  int rc = DEFLATE_OK;
  if (n && !st->ended) {
    rc = decompressor_open(st, params);
    if (rc == DEFLATE_OK) {
      st->got_input = 1;
      rc = inflate_run(st, in, n, max_size, out);
    }
  }
  if (rc == DEFLATE_OK && last) rc = inflate_finish(st, params, max_size,
                                                   out);
  if (rc != DEFLATE_OK) decompressor_close(st);
  if (rc != DEFLATE_OK || last) st->got_input = st->ended = 0;
  return rc;
}

int deflate_close_code(int err) {
  switch (err) {
  case DEFLATE_OK: return 0;
  case DEFLATE_TOO_BIG: return 1009;    /* message too big */
  case DEFLATE_BAD_DATA: return 1007;   /* inconsistent data */
  default: return 1011;                 /* internal error */
  }
}

void deflate_state_free(struct deflate_state *st) {
  compressor_close(st);
  decompressor_close(st);
  st->got_input = st->ended = 0;
}
