/* fuzz_http.c - http_parse_request on random heads, read whole and fed
 * in random chunks the way conn.c feeds it; both must answer alike.
 * Input: FUZZ_SEED_LEN bytes for the splitter, then the bytes a client
 * sends (pipelined requests included). */
#include "fuzz.h"
#include "handshake.h"
#include "http.h"

/* Small limits, so that inputs of a few hundred bytes reach them. */
static const struct http_limits limits = { 512, 128, 8 };
#define MAX_HEADERS 8
#define MAX_ANSWERS 16   /* pipelined heads looked at per input */

/* One call's answer, its pointers made offsets into the stream so that
 * answers read from different buffers compare. */
struct answer {
  long r;
  size_t at;             /* the head's offset in the stream */
  size_t method, method_len, target, target_len;
  long minor_version;    /* long: the struct has no padding to compare */
  size_t nheaders;
  size_t name[MAX_HEADERS], name_len[MAX_HEADERS];
  size_t value[MAX_HEADERS], value_len[MAX_HEADERS];
};

struct answers {
  struct answer a[MAX_ANSWERS];
  size_t n;
};

static int is_tchar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
         (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The offset of field[0..len) in buf[0..n), which it must lie inside. */
static size_t offset_in(const char *buf, size_t n, const char *field,
                        size_t len, const char *what) {
  FUZZ_CHECK(field >= buf && field <= buf + n &&
             len <= (size_t)(buf + n - field),
             "%s lies outside the input", what);
  return (size_t)(field - buf);
}

/* The upgrade checks read header values in place: run them on every
 * head that parses, for their invariants. */
static void check_handshake(const struct http_request *req) {
  char *accept = malloc(WS_ACCEPT_LEN + 1);    /* exact size, for ASan */
  if (!accept) abort();
  accept[0] = '\0';
  const char *why = NULL;
  (void)handshake_wanted(req);
  int status = handshake_check(req, accept, &why);
  FUZZ_CHECK(status == 0 || status == 400 || status == 426,
             "handshake_check returned %d", status);
  if (status == 0) {
    FUZZ_CHECK(strlen(accept) == WS_ACCEPT_LEN,
               "accept key of %zu chars", strlen(accept));
  } else {
    FUZZ_CHECK(why != NULL, "status %d without a reason", status);
  }
  free(accept);
}

/* Parse the head at stream[at..at+n) from an exact-size copy, with
 * scanned as the core passes it, and record the answer. */
static long parse_at(const char *stream, size_t at, size_t n,
                     size_t scanned, struct answer *ans) {
  char *buf = (char *)fuzz_copy(stream + at, n);
  struct http_header *headers = malloc(MAX_HEADERS * sizeof *headers);
  if (!headers) abort();
  struct http_request req;
  memset(&req, 0, sizeof req);
  req.headers = headers;
  long r = http_parse_request(buf, n, scanned, &limits, &req);
  memset(ans, 0, sizeof *ans);
  ans->r = r;
  ans->at = at;
  FUZZ_CHECK(r == 0 || r == -400 || r == -414 || r == -431 || r == -505 ||
             (r > 0 && (size_t)r <= n), "http_parse_request returned %ld",
             r);
  if (r > 0) {
    size_t head = (size_t)r;
    FUZZ_CHECK(head >= 4 && memcmp(buf + head - 4, "\r\n\r\n", 4) == 0,
               "a head of %zu bytes that does not end in CRLF CRLF", head);
    FUZZ_CHECK(req.head_len == head, "head_len %zu, returned %zu",
               req.head_len, head);
    FUZZ_CHECK(req.method == buf && req.method_len > 0,
               "the method does not open the head");
    ans->method = at;
    ans->method_len = req.method_len;
    ans->target = at + offset_in(buf, head, req.target, req.target_len,
                                 "the target");
    ans->target_len = req.target_len;
    FUZZ_CHECK(req.target_len > 0, "an empty target");
    FUZZ_CHECK(req.path >= req.target && req.path_len <= req.target_len &&
               req.path + req.path_len == req.target + req.target_len,
               "the path does not end the target");
    FUZZ_CHECK(!req.authority || (req.authority > req.target &&
               req.authority_len > 0 &&
               req.authority + req.authority_len == req.path),
               "the authority is not before the path");
    FUZZ_CHECK(req.minor_version >= 0 && req.minor_version <= 9,
               "minor version %d", req.minor_version);
    ans->minor_version = req.minor_version;
    FUZZ_CHECK(req.nheaders <= MAX_HEADERS, "%zu headers", req.nheaders);
    ans->nheaders = req.nheaders;
    for (size_t i = 0; i < req.nheaders; i++) {
      const struct http_header *h = &headers[i];
      ans->name[i] = at + offset_in(buf, head, h->name, h->name_len,
                                    "a header name");
      ans->value[i] = at + offset_in(buf, head, h->value, h->value_len,
                                     "a header value");
      ans->name_len[i] = h->name_len;
      ans->value_len[i] = h->value_len;
      FUZZ_CHECK(h->name_len > 0, "an empty header name");
      for (size_t k = 0; k < h->name_len; k++)
        FUZZ_CHECK(is_tchar((unsigned char)h->name[k]),
                   "byte %02x in a header name", (unsigned char)h->name[k]);
      for (size_t k = 0; k < h->value_len; k++) {
        unsigned char c = (unsigned char)h->value[k];
        FUZZ_CHECK(c == '\t' || (c >= 0x20 && c != 0x7F),
                   "byte %02x in a header value", c);
      }
      if (h->value_len) {
        unsigned char first = (unsigned char)h->value[0];
        unsigned char last = (unsigned char)h->value[h->value_len - 1];
        FUZZ_CHECK(first != ' ' && first != '\t' && last != ' ' &&
                   last != '\t', "a header value keeps its spaces");
      }
    }
    check_handshake(&req);
  }
  free(headers);
  free(buf);
  return r;
}

/* The whole stream at once: one head after another until one is
 * incomplete or refused. */
static void parse_whole(const char *s, size_t n, struct answers *out) {
  size_t at = 0;
  out->n = 0;
  while (out->n < MAX_ANSWERS) {
    long r = parse_at(s, at, n - at, 0, &out->a[out->n++]);
    if (r <= 0) break;
    at += (size_t)r;
  }
}

/* As conn.c's feed and process do: bytes arrive in chunks; what is not
 * used yet is kept, and a head still incomplete is searched again from
 * where the last call stopped (scanned).  A second head in the same
 * arrival starts with scanned 0, as process passes it. */
static void parse_chunked(const char *s, size_t n, struct fuzz_rng *rng,
                          struct answers *out) {
  size_t at = 0, got = 0, seen = 0;
  out->n = 0;
  while (got < n) {
    got += fuzz_chunk(rng, n - got);
    size_t scanned = seen;
    while (at < got) {
      long r = parse_at(s, at, got - at, scanned, &out->a[out->n]);
      scanned = 0;
      if (r == 0) {
        seen = got - at;
        break;
      }
      out->n++;
      if (r < 0 || out->n == MAX_ANSWERS) return;
      at += (size_t)r;
      seen = 0;
    }
  }
  /* the stream is over: the head it still waits for is incomplete */
  memset(&out->a[out->n], 0, sizeof out->a[0]);
  out->a[out->n++].at = at;
}

/* "r@offset" for each answer, for the failure message */
static const char *describe(const struct answers *as, char *buf,
                            size_t size) {
  size_t k = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < as->n && k < size; i++)
    k += (size_t)snprintf(buf + k, size - k, " %ld@%zu", as->a[i].r,
                          as->a[i].at);
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FUZZ_SEED_LEN) return 0;
  struct fuzz_rng rng = fuzz_rng_from(data);
  const char *s = (const char *)data + FUZZ_SEED_LEN;
  size_t n = size - FUZZ_SEED_LEN;

  static struct answers whole, chunked;
  parse_whole(s, n, &whole);
  parse_chunked(s, n, &rng, &chunked);
  int same = whole.n == chunked.n;
  for (size_t i = 0; same && i < whole.n; i++)
    same = memcmp(&whole.a[i], &chunked.a[i], sizeof whole.a[i]) == 0;
  char a[256], b[256];
  FUZZ_CHECK(same, "fed in chunks, the parser answers otherwise "
             "(result@offset per head)\n  whole:  %s\n  chunked:%s",
             describe(&whole, a, sizeof a), describe(&chunked, b, sizeof b));
  return 0;
}
