/* deflate_test.c - TAP tests for csrc/deflate.c against zlib and Python */
#define _DEFAULT_SOURCE   /* mmap, mkdtemp, fork */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "deflate.h"

#define PYTHON "/usr/bin/python3"
#define MIB ((size_t)1 << 20)

/* ---------------------------------------------------------------------
 * TAP output, and a guard page behind parser input
 * ------------------------------------------------------------------- */

struct run {
  int count, failed;
  char *guard;        /* two pages, the second unreadable */
  size_t page;
  char dir[64];       /* scratch files shared with Python */
  uint64_t rng;
};

static void check(struct run *r, int pass, const char *fmt, ...) {
  va_list ap;
  printf("%s %d - ", pass ? "ok" : "not ok", ++r->count);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  if (!pass) r->failed++;
  fflush(stdout);
}

/* s copied to end right before an unreadable page, so a read past the
 * end faults (picohttpparser's test trick). */
static const char *guarded(struct run *r, const char *s, size_t n) {
  if (n > r->page) abort();
  char *p = r->guard + r->page - n;
  memcpy(p, s, n);
  return p;
}

static uint64_t next_random(struct run *r) {   /* xorshift64 */
  r->rng ^= r->rng << 13;
  r->rng ^= r->rng >> 7;
  r->rng ^= r->rng << 17;
  return r->rng;
}

/* ---------------------------------------------------------------------
 * Negotiation
 * ------------------------------------------------------------------- */

static struct deflate_config enabled_config(void) {
  struct deflate_config cfg = DEFLATE_CONFIG_DEFAULT;
  cfg.enabled = 1;
  return cfg;
}

static int negotiate(struct run *r, const char *header,
                     const struct deflate_config *cfg,
                     struct deflate_params *p, char *response) {
  size_t n = strlen(header);
  return deflate_negotiate(guarded(r, header, n), n, cfg, p, response,
                           DEFLATE_RESPONSE_MAX);
}

/* want: the response expected, or NULL when every offer is declined */
static void expect(struct run *r, const struct deflate_config *cfg,
                   const char *header, const char *want) {
  struct deflate_params p;
  char response[DEFLATE_RESPONSE_MAX];
  int rc = negotiate(r, header, cfg, &p, response);
  int pass = want ? rc == 1 && strcmp(response, want) == 0
                  : rc == 0 && response[0] == '\0';
  check(r, pass, "negotiate '%s' -> %s", header, want ? want : "declined");
  if (!pass) printf("# got %d '%s'\n", rc, response);
}

static void expect_params(struct run *r, const struct deflate_config *cfg,
                          const char *header, int sbits, int cbits,
                          int snct, int cnct) {
  struct deflate_params p;
  char response[DEFLATE_RESPONSE_MAX];
  int rc = negotiate(r, header, cfg, &p, response);
  check(r, rc == 1 && p.server_max_window_bits == sbits &&
        p.client_max_window_bits == cbits &&
        p.server_no_context_takeover == snct &&
        p.client_no_context_takeover == cnct,
        "params of '%s': server %d bits%s, client %d bits%s", header,
        sbits, snct ? " no takeover" : "", cbits, cnct ? " no takeover" : "");
}

static void test_negotiation(struct run *r) {
  struct deflate_config cfg = enabled_config();
  struct deflate_config c12 = cfg, all = cfg, s8 = cfg, off = cfg;
  c12.client_max_window_bits = 12;
  all.server_no_context_takeover = all.client_no_context_takeover = 1;
  all.server_max_window_bits = 10;
  all.client_max_window_bits = 9;
  s8.server_max_window_bits = 8;
  off.enabled = 0;

  /* plain offers and each parameter */
  expect(r, &cfg, "permessage-deflate", "permessage-deflate");
  expect(r, &cfg, "permessage-deflate; client_max_window_bits",
         "permessage-deflate");
  expect(r, &c12, "permessage-deflate; client_max_window_bits",
         "permessage-deflate; client_max_window_bits=12");
  expect(r, &c12, "permessage-deflate; client_max_window_bits=10",
         "permessage-deflate; client_max_window_bits=10");
  expect(r, &cfg, "permessage-deflate; client_max_window_bits=10",
         "permessage-deflate; client_max_window_bits=10");
  expect(r, &c12, "permessage-deflate",
         "permessage-deflate");   /* cannot limit a client that can't */
  expect(r, &cfg, "permessage-deflate; server_max_window_bits=10",
         "permessage-deflate; server_max_window_bits=10");
  expect(r, &cfg, "permessage-deflate; server_max_window_bits=15",
         "permessage-deflate; server_max_window_bits=15");
  expect(r, &all, "permessage-deflate; server_max_window_bits=12",
         "permessage-deflate; server_no_context_takeover; "
         "client_no_context_takeover; server_max_window_bits=10");
  expect(r, &cfg, "permessage-deflate; server_no_context_takeover",
         "permessage-deflate; server_no_context_takeover");
  expect(r, &cfg, "permessage-deflate; client_no_context_takeover",
         "permessage-deflate; client_no_context_takeover");
  expect(r, &all, "permessage-deflate; server_no_context_takeover; "
         "client_no_context_takeover; server_max_window_bits=11; "
         "client_max_window_bits",
         "permessage-deflate; server_no_context_takeover; "
         "client_no_context_takeover; server_max_window_bits=10; "
         "client_max_window_bits=9");
  expect_params(r, &cfg, "permessage-deflate", 15, 15, 0, 0);
  expect_params(r, &c12, "permessage-deflate; client_max_window_bits",
                15, 12, 0, 0);
  expect_params(r, &cfg, "permessage-deflate; server_max_window_bits=9; "
                "client_max_window_bits=8", 9, 8, 0, 0);
  expect_params(r, &cfg, "permessage-deflate; server_no_context_takeover; "
                "client_no_context_takeover", 15, 15, 1, 1);
  expect_params(r, &all, "permessage-deflate", 10, 15, 1, 1);

  /* the 8-bit window: zlib cannot compress with it (see deflate.c) */
  expect(r, &cfg, "permessage-deflate; server_max_window_bits=8", NULL);
  expect(r, &cfg, "permessage-deflate; server_max_window_bits=8, "
         "permessage-deflate; server_max_window_bits=9",
         "permessage-deflate; server_max_window_bits=9");
  expect(r, &s8, "permessage-deflate",
         "permessage-deflate; server_max_window_bits=9");
  expect(r, &s8, "permessage-deflate; server_max_window_bits=8", NULL);
  expect(r, &cfg, "permessage-deflate; client_max_window_bits=8",
         "permessage-deflate; client_max_window_bits=8");
  {
    z_stream z;
    memset(&z, 0, sizeof z);
    int zrc = deflateInit2(&z, 6, Z_DEFLATED, -8, 8, Z_DEFAULT_STRATEGY);
    check(r, zrc == Z_STREAM_ERROR,
          "zlib %s refuses raw deflate with windowBits 8", zlibVersion());
    if (zrc == Z_OK) deflateEnd(&z);
    memset(&z, 0, sizeof z);
    zrc = inflateInit2(&z, -8);
    check(r, zrc == Z_OK, "zlib accepts raw inflate with windowBits 8");
    if (zrc == Z_OK) inflateEnd(&z);
  }

  /* several offers: the first acceptable one wins */
  expect(r, &cfg, "permessage-deflate; server_max_window_bits=10, "
         "permessage-deflate; server_max_window_bits=12",
         "permessage-deflate; server_max_window_bits=10");
  expect(r, &cfg, "permessage-deflate; foo, permessage-deflate; "
         "client_no_context_takeover",
         "permessage-deflate; client_no_context_takeover");
  expect(r, &cfg, "x-webkit-deflate-frame, permessage-deflate; "
         "client_max_window_bits", "permessage-deflate");
  expect(r, &cfg, "foo; bar=\"a,b\", permessage-deflate",
         "permessage-deflate");
  expect(r, &cfg, "foo; bar=\"a\\\",b\", permessage-deflate",
         "permessage-deflate");
  expect(r, &cfg, "foo, bar; baz=1", NULL);
  expect(r, &cfg, "permessage-deflate-x, permessage-deflatex", NULL);

  /* invalid offers are declined */
  static const char *const bad[] = {
    "permessage-deflate; foo",
    "permessage-deflate; foo=1",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; server_max_window_bits=010",
    "permessage-deflate; server_max_window_bits=1a",
    "permessage-deflate; server_max_window_bits=-9",
    "permessage-deflate; server_max_window_bits=",
    "permessage-deflate; server_max_window_bits=\"\"",
    "permessage-deflate; server_max_window_bits=\"1 0\"",
    "permessage-deflate; server_max_window_bits=\"10",
    "permessage-deflate; server_max_window_bits=1000000000000010",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=0",
    "permessage-deflate; client_max_window_bits=",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; server_no_context_takeover=\"\"",
    "permessage-deflate; client_no_context_takeover=true",
    "permessage-deflate; client_no_context_takeover; "
    "client_no_context_takeover",
    "permessage-deflate; server_no_context_takeover; "
    "server_no_context_takeover",
    "permessage-deflate; server_max_window_bits=10; "
    "server_max_window_bits=10",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    "permessage-deflate;",
    "permessage-deflate; ",
    "permessage-deflate; =10",
    "permessage-deflate x",
    "permessage-deflate=1",
    "permessage-deflate; server_max_window_bits==10",
    "permessage-deflate; server_max_window_bits=10 11",
    "permessage-deflate; client_max_window_bits=\"9\"x",
    "; permessage-deflate",
    "\"permessage-deflate\"",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    expect(r, &cfg, bad[i], NULL);
  expect(r, &cfg, "permessage-deflate; foo, permessage-deflate",
         "permessage-deflate");

  /* quoted values (RFC 6455 section 9.1) */
  expect(r, &cfg, "permessage-deflate; server_max_window_bits=\"10\"",
         "permessage-deflate; server_max_window_bits=10");
  expect(r, &cfg, "permessage-deflate; server_max_window_bits=\"1\\1\"",
         "permessage-deflate; server_max_window_bits=11");
  expect(r, &c12, "permessage-deflate; client_max_window_bits=\"9\"",
         "permessage-deflate; client_max_window_bits=9");
  expect(r, &cfg, "permessage-deflate; server_max_window_bits=\"10, "
         "permessage-deflate", NULL);

  /* whitespace, case, empty elements */
  expect(r, &cfg, "  permessage-deflate ;\tclient_max_window_bits = 10 \t",
         "permessage-deflate; client_max_window_bits=10");
  expect(r, &cfg, "foo ,permessage-deflate;server_no_context_takeover",
         "permessage-deflate; server_no_context_takeover");
  expect(r, &cfg, ", ,\t, permessage-deflate ,", "permessage-deflate");
  expect(r, &cfg, "PerMessage-Deflate; Server_Max_Window_Bits=12",
         "permessage-deflate; server_max_window_bits=12");
  expect(r, &cfg, "", NULL);
  expect(r, &cfg, " \t ", NULL);
  expect(r, &cfg, ",,,", NULL);
  expect(r, &off, "permessage-deflate", NULL);
  {
    struct deflate_params p;
    char response[DEFLATE_RESPONSE_MAX];
    check(r, deflate_negotiate(NULL, 0, &cfg, &p, response,
                               sizeof response) == 0,
          "negotiate with no header declines");
    check(r, deflate_negotiate("permessage-deflate", 18, &cfg, &p, response,
                               DEFLATE_RESPONSE_MAX - 1) == -1,
          "negotiate refuses a response buffer below DEFLATE_RESPONSE_MAX");
    /* the value is value[0..len), not a C string */
    const char *h = "permessage-deflate; server_max_window_bits=10";
    check(r, deflate_negotiate(guarded(r, h, 18), 18, &cfg, &p, response,
                               sizeof response) == 1 &&
          strcmp(response, "permessage-deflate") == 0,
          "negotiate reads only len bytes");
  }

  /* configuration checks */
  {
    const char *why;
    struct deflate_config c = cfg;
    check(r, deflate_config_check(&c, &why) == 0 && why == NULL,
          "default config passes its check");
    c.server_max_window_bits = 7;
    check(r, deflate_config_check(&c, &why) == -1 &&
          strcmp(why, "server_max_window_bits must be 8..15") == 0,
          "config check names server_max_window_bits and its range");
    c = cfg;
    c.client_max_window_bits = 16;
    check(r, deflate_config_check(&c, &why) == -1 &&
          strcmp(why, "client_max_window_bits must be 8..15") == 0,
          "config check names client_max_window_bits and its range");
    c = cfg;
    c.mem_level = 10;
    check(r, deflate_config_check(&c, &why) == -1 &&
          strcmp(why, "mem_level must be 1..9") == 0,
          "config check names mem_level and its range");
    c = cfg;
    c.level = 10;
    check(r, deflate_config_check(&c, &why) == -1 &&
          strcmp(why, "level must be -1..9") == 0,
          "config check names level and its range");
  }

  /* random headers from the grammar's alphabet, behind the guard page */
  {
    static const char *const parts[] = {
      "permessage-deflate", "x", ";", ",", " ", "\t", "=", "\"", "\\",
      "server_max_window_bits", "client_max_window_bits", "10", "8", "9",
      "server_no_context_takeover", "client_no_context_takeover", "\x80",
    };
    const size_t nparts = sizeof parts / sizeof parts[0];
    int sane = 1;
    for (int i = 0; i < 20000 && sane; i++) {
      char h[512];
      size_t n = 0;
      int k = (int)(next_random(r) % 12);
      while (k-- > 0) {
        const char *s = parts[next_random(r) % nparts];
        size_t sl = strlen(s);
        if (n + sl >= sizeof h) break;
        memcpy(h + n, s, sl);
        n += sl;
      }
      struct deflate_params p;
      char response[DEFLATE_RESPONSE_MAX];
      int rc = deflate_negotiate(guarded(r, h, n), n, &cfg, &p, response,
                                 sizeof response);
      if (rc == 1)
        sane = strncmp(response, "permessage-deflate", 18) == 0 &&
               p.server_max_window_bits >= 9 &&
               p.server_max_window_bits <= 15 &&
               p.client_max_window_bits >= 8 &&
               p.client_max_window_bits <= 15;
      else
        sane = rc == 0 && response[0] == '\0';
      if (!sane) printf("# header '%.*s'\n", (int)n, h);
    }
    check(r, sane, "20000 random headers negotiate sanely, no over-read");
  }
}

/* ---------------------------------------------------------------------
 * Payloads
 * ------------------------------------------------------------------- */

static struct deflate_params make_params(int bits, int mem_level,
                                         int no_takeover) {
  struct deflate_params p = {
    .server_max_window_bits = (uint8_t)bits,
    .client_max_window_bits = (uint8_t)bits,
    .server_no_context_takeover = (uint8_t)no_takeover,
    .client_no_context_takeover = (uint8_t)no_takeover,
    .level = -1, .mem_level = (uint8_t)mem_level, .threshold = 0,
  };
  return p;
}

static void fill_text(uint8_t *b, size_t n, uint64_t seed) {
  static const char *const words[] = {
    "the ", "quick ", "brown ", "fox ", "jumps ", "over ", "a ", "lazy ",
    "dog; ", "WebSocket ", "frames ", "carry ", "messages.\n", "moon ",
  };
  size_t i = 0;
  while (i < n) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    const char *w = words[(seed >> 33) % 14];
    while (*w && i < n) b[i++] = (uint8_t)*w++;
  }
}

static void fill_random(struct run *r, uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) b[i] = (uint8_t)next_random(r);
}

/* Inflate payload[0..n) as one message fed in chunks of `chunk` bytes. */
static int inflate_message(struct deflate_state *st,
                           const struct deflate_params *p,
                           const uint8_t *payload, size_t n, size_t chunk,
                           size_t max_size, struct deflate_buf *out) {
  out->len = 0;
  if (n == 0) return deflate_inflate_chunk(st, p, NULL, 0, 1, max_size, out);
  for (size_t off = 0; off < n; off += chunk) {
    size_t k = n - off < chunk ? n - off : chunk;
    int rc = deflate_inflate_chunk(st, p, payload + off, k, off + k == n,
                                   max_size, out);
    if (rc != DEFLATE_OK) return rc;
  }
  return DEFLATE_OK;
}

/* Compress msgs with one state, inflate with another: the server's own
 * output read back as if the client had sent it (same bits, same
 * takeover), so both directions run. */
static void round_trip(struct run *r, const char *what,
                       const uint8_t *msg, size_t n, int bits,
                       int mem_level, int no_takeover, int times,
                       size_t chunk) {
  struct deflate_params p = make_params(bits, mem_level, no_takeover);
  struct deflate_state tx = { 0 }, rx = { 0 };
  struct deflate_buf z = { 0 }, out = { 0 };
  int pass = 1;
  size_t first = 0, last = 0;
  for (int i = 0; i < times && pass; i++) {
    z.len = 0;
    pass = deflate_compress(&tx, &p, msg, n, &z) == DEFLATE_OK &&
           !(z.len >= 4 && memcmp(z.data + z.len - 4,
                                  "\x00\x00\xff\xff", 4) == 0) &&
           inflate_message(&rx, &p, z.data, z.len, chunk, n, &out) ==
           DEFLATE_OK &&
           out.len == n && (n == 0 || memcmp(out.data, msg, n) == 0);
    if (i == 0) first = z.len;
    last = z.len;
  }
  check(r, pass, "round trip %s: %zu bytes x%d, %d bits, memLevel %d, %s, "
        "chunks of %zu (%zu -> %zu bytes)", what, n, times, bits, mem_level,
        no_takeover ? "no takeover" : "takeover", chunk, first, last);
  deflate_state_free(&tx);
  deflate_state_free(&rx);
  deflate_buf_free(&z);
  deflate_buf_free(&out);
}

static int hex_is(const struct deflate_buf *b, const char *hex) {
  size_t n = strlen(hex) / 2;
  if (b->len != n) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1 || b->data[i] != v) return 0;
  }
  return 1;
}

static size_t from_hex(const char *hex, uint8_t *out) {
  size_t n = 0;
  for (; hex[0] && hex[1]; hex += 2) {
    while (*hex == ' ') hex++;
    unsigned v;
    if (sscanf(hex, "%2x", &v) != 1) break;
    out[n++] = (uint8_t)v;
  }
  return n;
}

/* Inflate each hex payload in turn on one state; compare to text. */
static void rfc_vector(struct run *r, const char *what, int no_takeover,
                       const char *const *hex, size_t count,
                       const char *text, size_t chunk) {
  struct deflate_params p = make_params(15, 8, no_takeover);
  struct deflate_state st = { 0 };
  struct deflate_buf out = { 0 };
  int pass = 1;
  for (size_t i = 0; i < count && pass; i++) {
    uint8_t payload[64];
    size_t n = from_hex(hex[i], payload);
    pass = inflate_message(&st, &p, payload, n, chunk, 1024, &out) ==
           DEFLATE_OK && out.len == strlen(text) &&
           memcmp(out.data, text, out.len) == 0;
  }
  check(r, pass, "RFC 7692 %s", what);
  deflate_state_free(&st);
  deflate_buf_free(&out);
}

static void test_vectors(struct run *r) {
  /* section 7.2.3 examples, inflated */
  static const char *const one[] = { "f248cdc9c90700" };
  static const char *const shared[] = { "f248cdc9c90700", "f200110000" };
  static const char *const again[] = { "f248cdc9c90700", "f248cdc9c90700" };
  static const char *const stored[] = { "000500faff48656c6c6f00" };
  static const char *const bfinal[] = { "f348cdc9c9070000" };
  static const char *const bfinal_shared[] = { "f348cdc9c9070000",
                                               "f200110000" };
  static const char *const two[] = { "f248050000 00ffff cac9c90700" };
  static const char *const empty[] = { "00" };
  rfc_vector(r, "7.2.3.1 one compressed block", 0, one, 1, "Hello", 64);
  rfc_vector(r, "7.2.3.1 split across frames", 0, one, 1, "Hello", 3);
  rfc_vector(r, "7.2.3.2 sharing the LZ77 window", 0, shared, 2, "Hello",
             64);
  rfc_vector(r, "7.2.3.2 without sharing, no takeover", 1, again, 2,
             "Hello", 1);
  rfc_vector(r, "7.2.3.3 a stored block", 0, stored, 1, "Hello", 64);
  rfc_vector(r, "7.2.3.4 a block with BFINAL set", 0, bfinal, 1, "Hello",
             64);
  rfc_vector(r, "7.2.3.4 BFINAL, then a message sharing its window", 0,
             bfinal_shared, 2, "Hello", 1);
  rfc_vector(r, "7.2.3.5 two blocks in one message", 0, two, 1, "Hello", 64);
  rfc_vector(r, "7.2.1 empty message, sent as 00", 0, empty, 1, "",
             1);

  /* and produced: zlib writes the same bytes as the RFC */
  struct deflate_params p = make_params(15, 8, 0);
  struct deflate_state st = { 0 };
  struct deflate_buf z = { 0 };
  int rc = deflate_compress(&st, &p, (const uint8_t *)"Hello", 5, &z);
  check(r, rc == DEFLATE_OK && hex_is(&z, "f248cdc9c90700"),
        "compress 'Hello' gives 7.2.3.1's f2 48 cd c9 c9 07 00");
  z.len = 0;
  rc = deflate_compress(&st, &p, (const uint8_t *)"Hello", 5, &z);
  check(r, rc == DEFLATE_OK && hex_is(&z, "f200110000"),
        "again with takeover gives 7.2.3.2's f2 00 11 00 00");
  z.len = 0;
  rc = deflate_compress(&st, &p, (const uint8_t *)"", 0, &z);
  check(r, rc == DEFLATE_OK && hex_is(&z, "00"),
        "an empty message after a flush is 00 (7.2.1)");
  deflate_state_free(&st);
  z.len = 3;
  memcpy(z.data, "abc", 3);
  rc = deflate_compress(&st, &p, (const uint8_t *)"Hello", 5, &z);
  check(r, rc == DEFLATE_OK && z.len == 10 &&
        memcmp(z.data, "abc\xf2\x48\xcd\xc9\xc9\x07\x00", 10) == 0,
        "compress appends after out->len (room for a frame header)");
  deflate_state_free(&st);
  deflate_buf_free(&z);
}

static void test_round_trips(struct run *r) {
  uint8_t *text = malloc(MIB), *noise = malloc(MIB), *mixed = malloc(MIB);
  if (!text || !noise || !mixed) abort();
  fill_text(text, MIB, 1);
  fill_random(r, noise, MIB);
  for (size_t i = 0; i < MIB; i += 8192)   /* alternate runs of each */
    memcpy(mixed + i, (i / 8192) % 2 ? noise + i : text + i, 8192);

  round_trip(r, "empty", text, 0, 15, 8, 0, 3, 64);
  round_trip(r, "empty", text, 0, 15, 8, 1, 3, 64);
  round_trip(r, "one byte", text, 1, 15, 8, 0, 3, 64);
  round_trip(r, "text", text, 2000, 15, 8, 0, 5, 4096);
  round_trip(r, "text", text, 2000, 15, 8, 1, 5, 4096);
  round_trip(r, "text", text, 100000, 9, 1, 0, 3, 4096);
  round_trip(r, "text", text, 100000, 9, 1, 1, 3, 4096);
  round_trip(r, "random", noise, 65536, 15, 8, 0, 3, 1000);
  round_trip(r, "random", noise, 65536, 10, 2, 1, 3, 1000);
  round_trip(r, "text", text, MIB, 15, 8, 0, 2, 65536);
  round_trip(r, "text", text, MIB, 15, 8, 1, 2, 65536);
  round_trip(r, "random", noise, MIB, 15, 8, 0, 2, 65536);
  round_trip(r, "mixed", mixed, MIB, 9, 1, 0, 2, 65536);
  round_trip(r, "mixed", mixed, MIB, 12, 9, 1, 2, 65536);
  round_trip(r, "text one byte at a time", text, 100000, 15, 8, 0, 2, 1);
  round_trip(r, "random one byte at a time", noise, 20000, 9, 1, 1, 2, 1);

  /* context takeover is real: the same message again costs little */
  {
    struct deflate_params keep = make_params(15, 8, 0);
    struct deflate_params drop = make_params(15, 8, 1);
    struct deflate_state a = { 0 }, b = { 0 };
    struct deflate_buf z = { 0 };
    size_t size[2][2];
    for (int i = 0; i < 2; i++) {
      z.len = 0;
      deflate_compress(&a, &keep, noise, 4000, &z);
      size[0][i] = z.len;
      z.len = 0;
      deflate_compress(&b, &drop, noise, 4000, &z);
      size[1][i] = z.len;
    }
    check(r, size[0][1] * 20 < size[0][0],
          "with takeover a repeated message shrinks (%zu -> %zu bytes)",
          size[0][0], size[0][1]);
    check(r, size[1][1] == size[1][0] && size[1][0] > 4000,
          "without takeover it does not (%zu -> %zu bytes)", size[1][0],
          size[1][1]);
    deflate_state_free(&a);
    deflate_state_free(&b);
    deflate_buf_free(&z);
  }

  /* threshold */
  {
    struct deflate_params p = make_params(15, 8, 0);
    p.threshold = 100;
    check(r, !deflate_should_compress(&p, 99) &&
          deflate_should_compress(&p, 100) &&
          deflate_should_compress(&p, MIB),
          "should_compress follows the threshold");
  }
  free(text);
  free(noise);
  free(mixed);
}

/* ---------------------------------------------------------------------
 * Limits and bad data
 * ------------------------------------------------------------------- */

static void test_limits(struct run *r) {
  struct deflate_params p = make_params(15, 8, 0);
  size_t bomb_size = 10 * MIB;
  uint8_t *zeros = calloc(1, bomb_size);
  struct deflate_state tx = { 0 }, rx = { 0 };
  struct deflate_buf z = { 0 }, out = { 0 };
  if (!zeros) abort();
  deflate_compress(&tx, &p, zeros, bomb_size, &z);
  deflate_state_free(&tx);

  /* 10 MiB of zeros in ~10 KB, read with a 1 MiB limit */
  size_t max_size = 1000000, peak_heap = 0, fed = 0;
  int rc = DEFLATE_OK;
  for (size_t off = 0; off < z.len && rc == DEFLATE_OK; off += 512) {
    size_t k = z.len - off < 512 ? z.len - off : 512;
    rc = deflate_inflate_chunk(&rx, &p, z.data + off, k, off + k == z.len,
                               max_size, &out);
    fed = off + k;
    if (deflate_state_memory(&rx) > peak_heap)
      peak_heap = deflate_state_memory(&rx);
  }
  check(r, rc == DEFLATE_TOO_BIG && deflate_close_code(rc) == 1009,
        "a %zu-byte zip bomb of 10 MiB, limit 1 MB: DEFLATE_TOO_BIG (1009)",
        z.len);
  check(r, out.len <= max_size && out.cap <= max_size,
        "output stays within max_size: %zu bytes, capacity %zu",
        out.len, out.cap);
  check(r, fed * 5 < z.len, "it stops early: after %zu of %zu bytes", fed,
        z.len);
  check(r, peak_heap > 0 && peak_heap < 48 * 1024,
        "zlib heap peaked at %zu bytes while inflating", peak_heap);
  check(r, deflate_state_memory(&rx) == 0,
        "the failed stream is freed at once");
  printf("# zip bomb: %zu -> 10 MiB; peak %zu bytes = %zu output + %zu "
         "zlib\n", z.len, out.cap + peak_heap, out.cap, peak_heap);

  /* the limit is exact: max_size bytes pass, one more does not */
  {
    uint8_t text[5000];
    fill_text(text, sizeof text, 7);
    struct deflate_params q = make_params(15, 8, 1);
    struct deflate_state t2 = { 0 }, r2 = { 0 };
    z.len = 0;
    deflate_compress(&t2, &q, text, sizeof text, &z);
    int at = inflate_message(&r2, &q, z.data, z.len, 7, sizeof text, &out);
    int over = inflate_message(&r2, &q, z.data, z.len, 7, sizeof text - 1,
                               &out);
    check(r, at == DEFLATE_OK && out.len == sizeof text - 1 &&
          over == DEFLATE_TOO_BIG,
          "max_size of exactly the message passes, one less fails");
    deflate_buf_free(&out);
    z.len = 0;
    deflate_compress(&t2, &q, text, 0, &z);
    at = inflate_message(&r2, &q, z.data, z.len, 1, 0, &out);
    check(r, at == DEFLATE_OK && out.len == 0,
          "an empty message fits max_size 0");
    deflate_state_free(&t2);
    deflate_state_free(&r2);
  }
  deflate_state_free(&rx);
  deflate_buf_free(&z);
  deflate_buf_free(&out);
  free(zeros);
}

static void expect_bad(struct run *r, const char *hex, const char *what) {
  struct deflate_params p = make_params(15, 8, 0);
  struct deflate_state st = { 0 };
  struct deflate_buf out = { 0 };
  uint8_t payload[64];
  size_t n = from_hex(hex, payload);
  int rc = inflate_message(&st, &p, payload, n, 64, MIB, &out);
  check(r, rc == DEFLATE_BAD_DATA && deflate_close_code(rc) == 1007 &&
        deflate_state_memory(&st) == 0,
        "bad data (%s) gives DEFLATE_BAD_DATA (1007), stream freed", what);
  deflate_state_free(&st);
  deflate_buf_free(&out);
}

static void test_bad_data(struct run *r) {
  expect_bad(r, "06", "reserved block type 11");
  expect_bad(r, "ffffffff", "garbage");
  expect_bad(r, "000500000048656c6c6f", "stored block LEN/NLEN mismatch");
  {
    /* a copy from a preset dictionary the receiver never had */
    uint8_t far[64];
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    deflateSetDictionary(&z, (const Bytef *)"Hello, world", 12);
    z.next_in = (Bytef *)"Hello, world";
    z.avail_in = 12;
    z.next_out = far;
    z.avail_out = sizeof far;
    deflate(&z, Z_SYNC_FLUSH);
    size_t n = sizeof far - z.avail_out - 4;
    deflateEnd(&z);
    char hex[2 * sizeof far + 1];
    for (size_t i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", far[i]);
    expect_bad(r, hex, "a distance before the start");
  }
  expect_bad(r, "f248cdc9", "a message cut short in its block");
  expect_bad(r, "000500faff4865", "a stored block cut short");
  /* 7.2.1: the sender must remove the 00 00 ff ff; one that does not
   * leaves the stream inside a stored block, which takeover can't use */
  expect_bad(r, "f248cdc9c90700 0000ffff", "00 00 ff ff not removed");

  /* cut short anywhere: never accepted as complete, never a crash */
  struct deflate_params p = make_params(15, 8, 0);
  uint8_t text[3000];
  fill_text(text, sizeof text, 3);
  struct deflate_state st = { 0 };
  struct deflate_buf z = { 0 }, out = { 0 };
  deflate_compress(&st, &p, text, sizeof text, &z);
  deflate_state_free(&st);
  int accepted = 0;
  for (size_t cut = 1; cut < z.len; cut++) {
    if (inflate_message(&st, &p, z.data, z.len - cut, 97, MIB, &out) !=
        DEFLATE_BAD_DATA)
      accepted++;
    deflate_state_free(&st);
  }
  check(r, accepted == 0, "each of the %zu truncations of a payload gives "
        "DEFLATE_BAD_DATA", z.len - 1);

  /* random payloads: OK or BAD_DATA, nothing else, memory bounded */
  int sane = 1;
  for (int i = 0; i < 3000 && sane; i++) {
    uint8_t junk[200];
    size_t n = 1 + next_random(r) % sizeof junk;
    fill_random(r, junk, n);
    int rc = inflate_message(&st, &p, junk, n, 1 + next_random(r) % 50,
                             4096, &out);
    sane = (rc == DEFLATE_OK || rc == DEFLATE_BAD_DATA ||
            rc == DEFLATE_TOO_BIG) && out.cap <= 4096;
    deflate_state_free(&st);
  }
  check(r, sane, "3000 random payloads end in OK, BAD_DATA or TOO_BIG");

  /* a moved state keeps working: nothing points back into it */
  {
    struct deflate_state a = { 0 }, b;
    struct deflate_buf z2 = { 0 };
    deflate_compress(&a, &p, text, 100, &z2);
    memcpy(&b, &a, sizeof b);
    memset(&a, 0xA5, sizeof a);
    z2.len = 0;
    int rc = deflate_compress(&b, &p, text, 100, &z2);
    check(r, rc == DEFLATE_OK && z2.len < 20 && deflate_state_memory(&b) > 0,
          "a state moved in memory keeps its context");
    deflate_state_free(&b);
    deflate_state_free(&b);
    check(r, deflate_state_memory(&b) == 0, "deflate_state_free twice");
    deflate_buf_free(&z2);
  }
  check(r, deflate_close_code(DEFLATE_NO_MEMORY) == 1011 &&
        deflate_close_code(DEFLATE_OK) == 0, "close codes for the rest");
  deflate_buf_free(&z);
  deflate_buf_free(&out);
}

/* ---------------------------------------------------------------------
 * Window bits 8 and the size of the inflate window
 * ------------------------------------------------------------------- */

/* Whether zlib itself, with a strict windowBits-bit window and one byte
 * in and out per call, inflates payload (trailer appended). */
static int zlib_inflates(const uint8_t *payload, size_t n, int bits) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, -bits) != Z_OK) return 0;
  uint8_t *in = malloc(n + 4), one;
  memcpy(in, payload, n);
  memcpy(in + n, "\x00\x00\xff\xff", 4);
  int rc = Z_OK;
  size_t i = 0;
  while (rc == Z_OK || rc == Z_BUF_ERROR) {
    if (z.avail_in == 0 && i == n + 4) break;
    if (z.avail_in == 0) {
      z.next_in = in + i++;
      z.avail_in = 1;
    }
    z.next_out = &one;
    z.avail_out = 1;
    rc = inflate(&z, Z_SYNC_FLUSH);
  }
  inflateEnd(&z);
  free(in);
  return rc == Z_OK || rc == Z_BUF_ERROR;
}

static void test_window_bits(struct run *r) {
  /* 300 random bytes twice: the copy could refer back 300 bytes */
  uint8_t msg[600];
  fill_random(r, msg, 300);
  memcpy(msg + 300, msg, 300);
  struct deflate_params nine = make_params(9, 8, 0);
  struct deflate_params eight = make_params(8, 8, 0);
  struct deflate_params fifteen = make_params(15, 8, 0);
  struct deflate_state tx = { 0 }, rx = { 0 };
  struct deflate_buf z = { 0 }, out = { 0 };

  /* zlib's 9-bit deflate reaches back at most 512 - 262 = 250 bytes, so
   * what zlib before 1.2.9 sent when asked for 8 fits an 8-bit window */
  deflate_compress(&tx, &nine, msg, sizeof msg, &z);
  check(r, z.len > 550 && zlib_inflates(z.data, z.len, 8),
        "zlib's 9-bit output (%zu bytes, no 300-byte copy) fits 8 bits",
        z.len);
  int rc = inflate_message(&rx, &eight, z.data, z.len, 1, MIB, &out);
  check(r, rc == DEFLATE_OK && out.len == sizeof msg &&
        memcmp(out.data, msg, sizeof msg) == 0,
        "client_max_window_bits=8 inflates it, 1 byte at a time");
  deflate_state_free(&rx);
  deflate_state_free(&tx);

  /* and the 8-bit window is real: a 300-byte copy needs 9 bits */
  z.len = 0;
  deflate_compress(&tx, &fifteen, msg, sizeof msg, &z);
  check(r, z.len < 400 && !zlib_inflates(z.data, z.len, 8) &&
        zlib_inflates(z.data, z.len, 9),
        "a 15-bit stream with a 300-byte copy (%zu bytes) needs 9 bits",
        z.len);
  rc = inflate_message(&rx, &eight, z.data, z.len, 1, MIB, &out);
  check(r, rc == DEFLATE_BAD_DATA,
        "client_max_window_bits=8 rejects the 300-byte copy");
  deflate_state_free(&rx);
  rc = inflate_message(&rx, &nine, z.data, z.len, 1, MIB, &out);
  size_t with9 = deflate_state_memory(&rx);
  check(r, rc == DEFLATE_OK && out.len == sizeof msg &&
        memcmp(out.data, msg, sizeof msg) == 0,
        "client_max_window_bits=9 inflates it");
  deflate_state_free(&rx);
  deflate_state_free(&tx);

  /* a small negotiated window is the window used: a 15-bit stream that
   * reaches back 1000 bytes fails against 9 bits, fed a byte at a time */
  uint8_t far[2000];
  fill_random(r, far, 1000);
  memcpy(far + 1000, far, 1000);
  z.len = 0;
  deflate_compress(&tx, &fifteen, far, sizeof far, &z);
  rc = inflate_message(&rx, &nine, z.data, z.len, 1, MIB, &out);
  check(r, rc == DEFLATE_BAD_DATA,
        "a 9-bit inflate window rejects a 1000-byte back reference");
  deflate_state_free(&rx);
  rc = inflate_message(&rx, &fifteen, z.data, z.len, 1, MIB, &out);
  size_t with15 = deflate_state_memory(&rx);
  check(r, rc == DEFLATE_OK && out.len == sizeof far && with9 + 32000 <
        with15, "15 bits inflate it; inflate heap %zu bytes at 9 bits, "
        "%zu at 15", with9, with15);
  deflate_state_free(&rx);
  deflate_state_free(&tx);
  deflate_buf_free(&z);
  deflate_buf_free(&out);
}

/* ---------------------------------------------------------------------
 * Memory held per connection
 * ------------------------------------------------------------------- */

/* One message each way, then what the idle connection holds. */
static size_t idle_memory(int bits, int mem_level, int no_takeover) {
  struct deflate_params p = make_params(bits, mem_level, no_takeover);
  struct deflate_state tx = { 0 }, conn = { 0 };
  struct deflate_buf z = { 0 }, out = { 0 };
  uint8_t text[20000];
  fill_text(text, sizeof text, 5);
  deflate_compress(&conn, &p, text, sizeof text, &z);    /* send */
  size_t sent = deflate_state_memory(&conn);
  z.len = 0;
  deflate_compress(&tx, &p, text, sizeof text, &z);      /* the client */
  inflate_message(&conn, &p, z.data, z.len, 4096, MIB, &out);  /* receive */
  size_t held = deflate_state_memory(&conn);
  printf("# memory, %d bits, memLevel %d, %s: idle %zu bytes "
         "(compressor %zu, inflater %zu)\n", bits, mem_level,
         no_takeover ? "no takeover" : "takeover", held, sent, held - sent);
  deflate_state_free(&tx);
  deflate_state_free(&conn);
  deflate_buf_free(&z);
  deflate_buf_free(&out);
  return held;
}

static void test_memory(struct run *r) {
  struct deflate_state st = { 0 };
  check(r, deflate_state_memory(&st) == 0 && sizeof st <= 24,
        "a fresh state holds nothing and is %zu bytes", sizeof st);
  size_t none = idle_memory(15, 8, 1);
  size_t none_small = idle_memory(9, 1, 1);
  size_t full = idle_memory(15, 8, 0);
  size_t small = idle_memory(9, 1, 0);
  check(r, none == 0 && none_small == 0,
        "idle without context takeover: 0 bytes");
  check(r, full > 250000 && full < 330000,
        "idle with takeover, 15 bits, memLevel 8: %zu bytes", full);
  check(r, small > 0 && small < 20000,
        "idle with takeover, 9 bits, memLevel 1: %zu bytes", small);
}

/* ---------------------------------------------------------------------
 * Interoperability with Python's zlib, an independent user of the
 * format (the same zlib underneath, but its own flush and framing)
 * ------------------------------------------------------------------- */

static int python(const char *script, char *const *files, int nfiles) {
  char *argv[16] = { PYTHON, "-c", (char *)script };
  int argc = 3;
  for (int i = 0; i < nfiles && argc < 15; i++) argv[argc++] = files[i];
  argv[argc] = NULL;
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    execv(PYTHON, argv);
    _exit(127);
  }
  int status;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int write_file(const char *path, const uint8_t *b, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = n ? fwrite(b, 1, n, f) : 0;
  return fclose(f) == 0 && w == n ? 0 : -1;
}

static uint8_t *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  uint8_t *b = NULL;
  size_t cap = 0;
  *n = 0;
  for (;;) {
    if (*n == cap) {
      cap = cap ? cap * 2 : 65536;
      uint8_t *nb = realloc(b, cap);
      if (!nb) break;
      b = nb;
    }
    size_t k = fread(b + *n, 1, cap - *n, f);
    if (k == 0) break;
    *n += k;
  }
  fclose(f);
  return b;
}

/* Python's side: argv is the window bits, "keep" or "drop" (one
 * stream for all messages, or one per message), then the files.  Each
 * payload goes without its 00 00 ff ff, as in section 7.2.1. */
static const char py_inflate[] =
  "import sys, zlib\n"
  "bits, keep = int(sys.argv[1]), sys.argv[2] == 'keep'\n"
  "d = zlib.decompressobj(wbits=-bits)\n"
  "for f in sys.argv[3:]:\n"
  "    if not keep: d = zlib.decompressobj(wbits=-bits)\n"
  "    data = open(f, 'rb').read() + b'\\x00\\x00\\xff\\xff'\n"
  "    open(f + '.out', 'wb').write(d.decompress(data))\n";

static const char py_deflate[] =
  "import sys, zlib\n"
  "bits, keep = int(sys.argv[1]), sys.argv[2] == 'keep'\n"
  "c = zlib.compressobj(wbits=-bits)\n"
  "for f in sys.argv[3:]:\n"
  "    if not keep: c = zlib.compressobj(wbits=-bits)\n"
  "    z = c.compress(open(f, 'rb').read()) + c.flush(zlib.Z_SYNC_FLUSH)\n"
  "    assert z.endswith(b'\\x00\\x00\\xff\\xff')\n"
  "    open(f + '.z', 'wb').write(z[:-4])\n";

#define NMSG 4

static void interop(struct run *r, int bits, int no_takeover) {
  static const size_t sizes[NMSG] = { 30000, 0, 30000, 200000 };
  uint8_t *msg[NMSG];
  char path[NMSG][96], zpath[NMSG][96], opath[NMSG][96];
  char *files[NMSG + 2];
  char bits_arg[8];
  snprintf(bits_arg, sizeof bits_arg, "%d", bits);
  files[0] = bits_arg;
  files[1] = no_takeover ? "drop" : "keep";
  for (int i = 0; i < NMSG; i++) {
    msg[i] = malloc(sizes[i] + 1);
    if (i == 3) fill_random(r, msg[i], sizes[i]);
    else fill_text(msg[i], sizes[i], 11);   /* 0 and 2 are identical */
    snprintf(path[i], sizeof path[i], "%s/m%d", r->dir, i);
    snprintf(zpath[i], sizeof zpath[i], "%s/m%d.z", r->dir, i);
    snprintf(opath[i], sizeof opath[i], "%s/m%d.out", r->dir, i);
    files[i + 2] = path[i];
  }
  struct deflate_params p = make_params(bits, 8, no_takeover);
  const char *mode = no_takeover ? "no takeover" : "takeover";

  /* ours -> Python */
  struct deflate_state st = { 0 };
  struct deflate_buf z = { 0 }, out = { 0 };
  int pass = 1;
  for (int i = 0; i < NMSG; i++) {
    z.len = 0;
    pass &= deflate_compress(&st, &p, msg[i], sizes[i], &z) == DEFLATE_OK &&
            write_file(path[i], z.data, z.len) == 0;
  }
  pass &= python(py_inflate, files, NMSG + 2) == 0;
  for (int i = 0; i < NMSG && pass; i++) {
    size_t n;
    uint8_t *b = read_file(opath[i], &n);
    pass = b && n == sizes[i] && memcmp(b, msg[i], n) == 0;
    free(b);
  }
  check(r, pass, "Python's zlib inflates our %d-bit messages (%s)", bits,
        mode);
  deflate_state_free(&st);

  /* Python -> ours */
  pass = 1;
  for (int i = 0; i < NMSG; i++)
    pass &= write_file(path[i], msg[i], sizes[i]) == 0;
  pass &= python(py_deflate, files, NMSG + 2) == 0;
  for (int i = 0; i < NMSG && pass; i++) {
    size_t n;
    uint8_t *b = read_file(zpath[i], &n);
    pass = b && inflate_message(&st, &p, b, n, 1000, MIB, &out) ==
           DEFLATE_OK && out.len == sizes[i] &&
           (sizes[i] == 0 || memcmp(out.data, msg[i], sizes[i]) == 0);
    free(b);
  }
  check(r, pass, "we inflate Python's %d-bit messages (%s)", bits, mode);
  deflate_state_free(&st);
  deflate_buf_free(&z);
  deflate_buf_free(&out);
  for (int i = 0; i < NMSG; i++) {
    unlink(path[i]);
    unlink(zpath[i]);
    unlink(opath[i]);
    free(msg[i]);
  }
}

static void test_interop(struct run *r) {
  if (access(PYTHON, X_OK) != 0) {
    check(r, 0, "%s is there for the interoperability tests", PYTHON);
    return;
  }
  snprintf(r->dir, sizeof r->dir, "/tmp/deflate_test.XXXXXX");
  if (!mkdtemp(r->dir)) {
    check(r, 0, "a scratch directory");
    return;
  }
  interop(r, 15, 0);
  interop(r, 15, 1);
  interop(r, 9, 0);
  interop(r, 12, 1);
  rmdir(r->dir);
}

int main(void) {
#if defined(__SANITIZE_ADDRESS__)
  printf("# built with -fsanitize=address,undefined\n");
#endif
  struct run r = { .rng = 0x9E3779B97F4A7C15ull };
  r.page = (size_t)sysconf(_SC_PAGESIZE);
  r.guard = mmap(NULL, 2 * r.page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r.guard == MAP_FAILED || mprotect(r.guard + r.page, r.page,
                                        PROT_NONE) != 0) {
    perror("guard page");
    return 2;
  }
  test_negotiation(&r);
  test_vectors(&r);
  test_round_trips(&r);
  test_limits(&r);
  test_bad_data(&r);
  test_window_bits(&r);
  test_memory(&r);
  test_interop(&r);
  munmap(r.guard, 2 * r.page);
  printf("1..%d\n", r.count);
  printf("deflate_test: %d passed, %d failed\n", r.count - r.failed,
         r.failed);
  return r.failed ? 1 : 0;
}
