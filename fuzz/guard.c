/* guard.c - every parser over inputs placed right before an unreadable
 * page, so that a read past the end faults (picohttpparser's test
 * trick), and again right after one, for reads before the start.  The
 * inputs are the seed corpus, every prefix of each file, and mutated
 * copies.  Built without ASan, which would catch a small over-read in
 * its own way: here the real code meets the real page.  Prints TAP, one
 * line per parser, and exits non-zero on a fault.
 * Usage: guard CORPUS_DIR [FIRST_TEST_NUMBER] */
#define _DEFAULT_SOURCE   /* mmap, scandir, sigsetjmp */
#define ZLIB_CONST
#include <dirent.h>
#include <malloc.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "chunked.h"
#include "deflate.h"
#include "frame.h"
#include "frame_reader.h"
#include "fuzz.h"
#include "handshake.h"
#include "http.h"
#include "utf8.h"

#define ROOM (64 * 1024)   /* readable bytes between the guard pages */
#define MUTANTS 32         /* mutated copies of each corpus file */

/* ---------------------------------------------------------------------
 * Guarded memory, and faults turned into test failures
 * ------------------------------------------------------------------- */

struct guard {
  uint8_t *room;      /* ROOM bytes, an unreadable page on either side */
  int at_start;       /* place inputs after the lower page, not before
                         the upper one */
};

static void guard_open(struct guard *g) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t room = (ROOM + page - 1) / page * page;
  uint8_t *m = mmap(NULL, room + 2 * page, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED || mprotect(m, page, PROT_NONE) != 0 ||
      mprotect(m + page + room, page, PROT_NONE) != 0) {
    perror("guard: mmap");
    exit(2);
  }
  g->room = m + page + room - ROOM;   /* ROOM ends at the upper page */
  g->at_start = 0;
}

/* Copy p[0..n) against one of the unreadable pages; returns the copy. */
static uint8_t *guarded(const struct guard *g, const void *p, size_t n) {
  if (n > ROOM) {
    fprintf(stderr, "guard: an input of %zu bytes\n", n);
    exit(2);
  }
  uint8_t *q = g->at_start ? g->room : g->room + ROOM - n;
  if (n) memcpy(q, p, n);
  return q;
}

/* Where a fault returns to.  A test program's global: the handler has
 * no other way back. */
static sigjmp_buf on_fault;

static void fault(int sig) {
  siglongjmp(on_fault, sig);
}

/* ---------------------------------------------------------------------
 * The parsers, each over one input as the core would call it
 * ------------------------------------------------------------------- */

struct input {
  const uint8_t *head;   /* the fuzzer's settings before the data */
  size_t head_len;
};

static void guard_http(const struct guard *g, const struct input *in,
                       const uint8_t *s, size_t n) {
  (void)in;
  static const struct http_limits limits[2] = {
    { 512, 128, 8 }, { ROOM, ROOM, 64 }       /* fuzz_http's, and roomy */
  };
  struct http_header headers[64];
  for (int l = 0; l < 2; l++) {
    /* from the start, and resuming half-way as after an earlier read */
    for (size_t scanned = 0; scanned <= n / 2; scanned += n / 2 + 1) {
      const char *p = (const char *)guarded(g, s, n);
      struct http_request req;
      req.headers = headers;
      long r = http_parse_request(p, n, scanned, &limits[l], &req);
      if (r > 0) {
        char accept[WS_ACCEPT_LEN + 1];
        const char *why;
        (void)handshake_wanted(&req);
        (void)handshake_check(&req, accept, &why);
      }
    }
  }
}

/* A stream of frames as one read, by frame_reader: headers, checks,
 * unmasked payloads. */
static void guard_frame(const struct guard *g, const struct input *in,
                        const uint8_t *s, size_t n) {
  uint8_t *p = guarded(g, s, n);
  unsigned flags = in->head[FUZZ_SEED_LEN] & 1 ? FRAME_RSV1 : 0;
  struct frame_reader fr = { 0 };
  size_t i = 0;
  while (i < n) {
    struct frame_event ev;
    i += frame_read(&fr, p + i, n - i, flags, &ev);
    if (ev.kind != FRAME_DATA) break;
    if (ev.begun && ev.len >= 2 && ev.opcode == WS_OP_CLOSE)
      (void)utf8_validate(UTF8_ACCEPT, ev.data + 2, ev.len - 2);
  }
}

static void guard_utf8(const struct guard *g, const struct input *in,
                       const uint8_t *s, size_t n) {
  (void)in;
  (void)utf8_validate(UTF8_ACCEPT, guarded(g, s, n), n);
}

/* The value, and the response written against an unwritable page. */
static void guard_negotiate(const struct guard *g, const struct input *in,
                            const uint8_t *s, size_t n) {
  static struct guard out;
  if (!out.room) guard_open(&out);
  struct deflate_config cfg = DEFLATE_CONFIG_DEFAULT;
  const uint8_t *b = in->head;
  cfg.enabled = !(b[1] & 1);               /* as fuzz_negotiate reads it */
  cfg.server_max_window_bits = 8 + (b[0] & 7);
  cfg.client_max_window_bits = 8 + (b[0] >> 3 & 7);
  cfg.server_no_context_takeover = b[0] >> 6 & 1;
  cfg.client_no_context_takeover = b[0] >> 7 & 1;
  struct deflate_params params;
  char *response = (char *)out.room + ROOM - DEFLATE_RESPONSE_MAX;
  (void)deflate_negotiate((const char *)guarded(g, s, n), n, &cfg, &params,
                          response, DEFLATE_RESPONSE_MAX);
}

/* Raw DEFLATE from the input, or (valid mode) compressed from it first;
 * each message as one frame. */
static void guard_inflate(const struct guard *g, const struct input *in,
                          const uint8_t *s, size_t n) {
  uint8_t mode = in->head[FUZZ_SEED_LEN];
  int bits = 8 + (mode >> 1 & 7);
  struct deflate_params p = { 15, (uint8_t)bits, 0, mode >> 4 & 1, -1, 8,
                              0 };
  struct deflate_state st = { 0 };
  struct deflate_buf out = { 0 };
  static uint8_t wire[2 * ROOM];
  while (n >= 2) {
    size_t len = (size_t)s[0] << 8 | s[1];
    s += 2;
    n -= 2;
    if (len > n) len = n;
    const uint8_t *payload = s;
    size_t payload_len = len;
    if (mode & 1) {
      z_stream z;
      memset(&z, 0, sizeof z);
      if (deflateInit2(&z, 6, Z_DEFLATED, bits < 9 ? -9 : -bits, 8,
                       Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
      z.next_in = s;
      z.avail_in = (uInt)len;
      z.next_out = wire;
      z.avail_out = sizeof wire;
      if (deflate(&z, Z_SYNC_FLUSH) != Z_OK) abort();
      payload = wire;
      payload_len = sizeof wire - z.avail_out;
      if (payload_len < 4) abort();
      payload_len -= 4;                          /* less 00 00 ff ff */
      deflateEnd(&z);
    }
    s += len;
    n -= len;
    out.len = 0;
    if (deflate_inflate_chunk(&st, &p, guarded(g, payload, payload_len),
                              payload_len, 1, 64 * 1024, &out) != DEFLATE_OK)
      break;
  }
  deflate_state_free(&st);
  deflate_buf_free(&out);
}

/* A chunked body as one read, decoded in place. */
static void guard_chunked(const struct guard *g, const struct input *in,
                          const uint8_t *s, size_t n) {
  struct chunked d = { 0 };
  size_t body, used;
  const char *why;
  (void)chunked_decode(&d, guarded(g, s, n), n,
                       16 * (1 + (size_t)in->head[FUZZ_SEED_LEN]), &body,
                       &used, &why);
}

/* ---------------------------------------------------------------------
 * Inputs: corpus files, their prefixes, mutants
 * ------------------------------------------------------------------- */

struct parser {
  const char *name;     /* the corpus directory too */
  size_t head_len;      /* settings bytes before the data */
  void (*run)(const struct guard *g, const struct input *in,
              const uint8_t *s, size_t n);
};

static const struct parser parsers[] = {
  { "http", FUZZ_SEED_LEN, guard_http },
  { "frame", FUZZ_SEED_LEN + 1, guard_frame },
  { "utf8", FUZZ_SEED_LEN + 1, guard_utf8 },
  { "negotiate", 2, guard_negotiate },
  { "inflate", FUZZ_SEED_LEN + 1, guard_inflate },
  { "chunked", FUZZ_SEED_LEN + 1, guard_chunked },
};

struct result {
  size_t inputs;
  char failure[256];    /* empty while all is well */
};

static int read_file(const char *path, uint8_t **data, size_t *len) {
  FILE *f = fopen(path, "rb");
  *data = NULL;
  if (!f) return -1;
  *data = malloc(ROOM + 1);
  if (!*data) abort();
  *len = fread(*data, 1, ROOM + 1, f);
  fclose(f);
  return *len <= ROOM ? 0 : -1;
}

static uint64_t next_random(uint64_t *x) {   /* xorshift64 */
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

/* A few bytes changed, often to one a parser cares about. */
static void mutate(uint8_t *d, size_t len, uint64_t *rng) {
  static const uint8_t special[] = "\r\n\0\xff\x80\x7f :;=,\"\\";
  int edits = 1 + (int)(next_random(rng) % 4);
  for (int e = 0; e < edits && len; e++) {
    uint64_t x = next_random(rng);
    size_t at = (size_t)(x % len);
    d[at] = x & 0x100 ? special[(x >> 9) % (sizeof special - 1)]
                      : (uint8_t)(x >> 9);
  }
}

/* Prefixes to try: every one of a short input; of a long one, those
 * within PREFIX_ENDS bytes of either end and every 16th between. */
#define PREFIX_ENDS 256
static size_t next_prefix(size_t k, size_t len) {
  if (len <= 4 * PREFIX_ENDS || k < PREFIX_ENDS || k >= len - PREFIX_ENDS)
    return k + 1;
  return k + 16 < len - PREFIX_ENDS ? k + 16 : len - PREFIX_ENDS;
}

/* Run the parser on prefixes of the data, placed at both ends. */
static int run_prefixes(const struct parser *ps, struct guard *g,
                        const struct input *in, const uint8_t *d,
                        size_t len, const char *file, const char *what,
                        struct result *res) {
  volatile size_t k = 0;    /* volatile: read again after a fault */
  int sig = sigsetjmp(on_fault, 1);
  if (sig) {
    snprintf(res->failure, sizeof res->failure,
             "signal %d on %s (%s), its first %zu bytes placed %s", sig,
             file, what, (size_t)k, g->at_start
             ? "after an unreadable page" : "before an unreadable page");
    return -1;
  }
  for (g->at_start = 0; g->at_start < 2; g->at_start++) {
    for (k = 0; k <= len; k = next_prefix(k, len)) {
      ps->run(g, in, d, k);
      res->inputs++;
    }
  }
  return 0;
}

static void run_parser(const struct parser *ps, const char *corpus,
                       struct guard *g, struct result *res) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/%s", corpus, ps->name);
  struct dirent **names;
  int count = scandir(dir, &names, NULL, alphasort);
  if (count < 0) {
    snprintf(res->failure, sizeof res->failure, "no corpus in %s", dir);
    return;
  }
  uint64_t rng = 0x6455;
  for (int i = 0; i < count; i++) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
    uint8_t *data = NULL;
    size_t len = 0;
    if (names[i]->d_name[0] == '.' || read_file(path, &data, &len) < 0 ||
        len < ps->head_len) {
      free(data);
      free(names[i]);
      continue;
    }
    struct input in = { data, ps->head_len };
    const uint8_t *d = data + ps->head_len;
    size_t dlen = len - ps->head_len;
    int failed = run_prefixes(ps, g, &in, d, dlen, path, "as it is", res);
    uint8_t *copy = malloc(dlen + 1);
    if (!copy) abort();
    for (int m = 0; m < MUTANTS && !failed; m++) {
      memcpy(copy, d, dlen);
      mutate(copy, dlen, &rng);
      char what[32];
      snprintf(what, sizeof what, "mutant %d", m);
      failed = run_prefixes(ps, g, &in, copy, dlen, path, what, res);
    }
    free(copy);
    free(data);
    free(names[i]);
    if (failed) {
      for (i++; i < count; i++) free(names[i]);
      break;
    }
  }
  free(names);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: guard CORPUS_DIR [FIRST_TEST_NUMBER]\n");
    return 2;
  }
  int first = argc > 2 ? atoi(argv[2]) : 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fault;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);

#ifdef M_TRIM_THRESHOLD
  /* zlib's windows come and go with every input: keep the heap, or
   * glibc hands it back to the kernel each time (most of the run) */
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
  struct guard g;
  guard_open(&g);
  size_t nparsers = sizeof parsers / sizeof parsers[0];
  if (argc <= 2) printf("1..%zu\n", nparsers);
  int failed = 0;
  for (size_t i = 0; i < nparsers; i++) {
    struct result res = { 0, "" };
    run_parser(&parsers[i], argv[1], &g, &res);
    if (res.failure[0]) {
      failed++;
      printf("not ok %zu - guard %s: %s\n", first + i, parsers[i].name,
             res.failure);
    } else {
      printf("ok %zu - guard %s: %zu inputs against the guard pages\n",
             first + i, parsers[i].name, res.inputs);
    }
    fflush(stdout);
  }
  return failed ? 1 : 0;
}
