/* loadgen.c - a WebSocket load generator: echo throughput and latency,
 * handshakes per second, and a server's memory per idle connection */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "payload.h"
#include "stats.h"
#include "tls.h"

#define MAX_PIDS 8

enum test { TEST_ECHO, TEST_LATENCY, TEST_HANDSHAKE, TEST_RSS };
static const char *const test_names[] = {
  "echo", "latency", "handshake", "rss"
};

enum phase { PH_SETUP, PH_WARMUP, PH_MEASURE, PH_DRAIN };

struct options {
  enum test test;
  const char *host, *path, *label;
  int port;
  long conns, depth, parallel;
  size_t size;
  enum payload_kind kind;
  int text;
  double warmup, duration, timeout;
  unsigned long long messages;  /* stop after this many echoes; 0: time */
  int pids[MAX_PIDS], npids;
  unsigned long long seed;
  int quiet;
  int tls;                      /* 0 plain, 13 TLS 1.3, 12 TLS 1.2 */
  int deflate;                  /* offer (and require) permessage-deflate */
  int deflate_level;            /* the client's zlib level */
  long each;                    /* rss: messages each connection echoes */
};

/* One measurement: the connections and what they have counted. */
struct run {
  const struct options *o;
  struct client_ctx ctx;
  struct client *clients;
  size_t nclients;
  size_t opened, failed;        /* connections, over the run */
  size_t active;                /* started and not yet done */
  size_t pending;               /* started and not yet open or done */
  enum phase phase;
  uint64_t echoes;              /* over the run */
  uint64_t cycles;              /* handshake test: complete cycles */
  uint64_t sent_total;
  int recording;
  struct histogram hist;
  size_t *restart;              /* handshake test: slots to start again
                                   (room for each twice: see loop) */
  size_t nrestart;
  uint64_t deadline;            /* the global time limit */
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
  (void)sig;
  interrupted = 1;
}

/* ======================================================================
 * The events of connections, per test
 * ====================================================================== */

static void fill_pipeline(struct run *r, struct client *c) {
  const struct options *o = r->o;
  while (c->ring_count < r->ctx.depth && c->state == CL_OPEN) {
    if (o->messages && r->sent_total >= o->messages) break;
    client_send(c, payload_pick(r->ctx.payload, &r->ctx.rng));
    r->sent_total++;
  }
}

/* rss --each: a connection is settled once it has echoed its share */
static int exchanging(const struct run *r, const struct client *c) {
  return r->o->test == TEST_RSS && c->received < (uint64_t)r->o->each;
}

static void on_open(struct client *c) {
  struct run *r = c->ctx->user;
  r->opened++;
  if (exchanging(r, c)) {
    client_send(c, payload_pick(r->ctx.payload, &r->ctx.rng));
    return;
  }
  r->pending--;
  if (r->o->test == TEST_HANDSHAKE) {
    if (r->recording) hist_add(&r->hist, now_ns() - c->started_ns);
    client_close(c);
  } else if ((r->o->test == TEST_ECHO || r->o->test == TEST_LATENCY) &&
             r->phase != PH_SETUP && r->phase != PH_DRAIN) {
    fill_pipeline(r, c);
  }
}

static void on_message(struct client *c, uint64_t rtt_ns) {
  struct run *r = c->ctx->user;
  r->echoes++;
  if (r->recording) hist_add(&r->hist, rtt_ns);
  if (r->o->test == TEST_RSS) {
    if (exchanging(r, c))
      client_send(c, payload_pick(r->ctx.payload, &r->ctx.rng));
    else if (c->received == (uint64_t)r->o->each)
      r->pending--;
    return;
  }
  if (r->phase == PH_DRAIN) {
    if (c->ring_count == 0) client_close(c);
    return;
  }
  fill_pipeline(r, c);
}

static void on_done(struct client *c, int ok) {
  struct run *r = c->ctx->user;
  if (!c->opened || exchanging(r, c))
    r->pending--;                     /* failed before it settled */
  r->active--;
  if (!ok) r->failed++;
  if (r->o->test == TEST_HANDSHAKE && ok && r->phase == PH_MEASURE)
    r->cycles++;
  if (r->o->test == TEST_HANDSHAKE && r->phase != PH_DRAIN)
    r->restart[r->nrestart++] = c->index;
}

static const struct client_events events = { on_open, on_message, on_done };

/* ======================================================================
 * The loop
 * ====================================================================== */

static void start_client(struct run *r, size_t i) {
  r->pending++;
  r->active++;
  client_start(&r->clients[i], &r->ctx);
}

/* Serve events until `until` (ns), until done(r) says so, or until the
 * global limit or a signal; returns -1 for the last two. */
static int loop(struct run *r, uint64_t until, int (*done)(struct run *)) {
  struct epoll_event evs[256];
  for (;;) {
    /* A start that fails at once queues its slot again: behind these */
    size_t again = r->phase == PH_DRAIN ? 0 : r->nrestart;
    for (size_t i = 0; i < again; i++) start_client(r, r->restart[i]);
    r->nrestart -= r->phase == PH_DRAIN ? r->nrestart : again;
    memmove(r->restart, r->restart + again, r->nrestart * sizeof *r->restart);
    if (done && done(r)) return 0;
    uint64_t now = now_ns();
    if (interrupted || now >= r->deadline) return -1;
    if (now >= until) return 0;
    uint64_t wait = (until < r->deadline ? until : r->deadline) - now;
    int ms = (int)(wait / 1000000) + 1;
    if (ms > 100) ms = 100;
    int n = epoll_wait(r->ctx.epfd, evs, 256, ms);
    if (n < 0 && errno != EINTR) {
      perror("loadgen: epoll_wait");
      return -1;
    }
    for (int i = 0; i < n; i++) client_event(evs[i].data.ptr, evs[i].events);
  }
}

static int all_settled(struct run *r) {
  return r->pending == 0;
}

static int all_done(struct run *r) {
  return r->active == 0;
}

static int limit_reached(struct run *r) {
  return r->active == 0 || r->echoes >= r->o->messages;
}

/* Close what is open, wait for the closing handshakes; connections that
 * have not finished by the limit count as timeouts. */
static void close_all(struct run *r, double seconds) {
  uint64_t until = now_ns() + (uint64_t)(seconds * 1e9);
  r->phase = PH_DRAIN;
  for (size_t i = 0; i < r->nclients; i++) {
    struct client *c = &r->clients[i];
    if (c->state == CL_OPEN && c->ring_count == 0) {
      client_close(c);
      client_flush(c);
    }
  }
  if (until > r->deadline) until = r->deadline;
  loop(r, until, all_done);
  for (size_t i = 0; i < r->nclients; i++) {
    struct client *c = &r->clients[i];
    if (c->state != CL_DONE && c->state != CL_IDLE)
      client_fail(c, ERR_TIMEOUT, "not closed in time");
  }
}

/* Start connections from..to with at most `parallel` upgrading at once,
 * and wait until each is open or failed. */
static int open_clients(struct run *r, size_t from, size_t to) {
  size_t next = from;
  while (next < to || r->pending > 0) {
    while (next < to && r->pending < (size_t)r->o->parallel)
      start_client(r, next++);
    if (loop(r, now_ns() + 50000000, all_settled) != 0) return -1;
  }
  return 0;
}

static void sleep_loop(struct run *r, double seconds) {
  loop(r, now_ns() + (uint64_t)(seconds * 1e9), NULL);
}

/* ======================================================================
 * Reports: a key=value line on stdout, a summary on stderr
 * ====================================================================== */

/* TLS and compression, when used: what was negotiated, and how much
 * smaller the data messages were on the wire, each way. */
static void print_transport(const struct run *r) {
  const struct options *o = r->o;
  const struct client_ctx *x = &r->ctx;
  char tls[sizeof x->tls_info];
  if (o->tls) {
    snprintf(tls, sizeof tls, "%s", x->tls_info[0] ? x->tls_info : "?");
    for (char *s = tls; *s; s++)
      if (*s == ' ') *s = ',';
    printf(" tls=%s", tls);
  }
  if (o->deflate) {
    double out = x->plain_sent ? (double)x->wire_sent /
                                 (double)x->plain_sent : 0;
    double in = x->plain_received ? (double)x->wire_received /
                                    (double)x->plain_received : 0;
    /* the answer without spaces, so that the line stays key=value */
    printf(" deflate=%s", x->deflate_info[0] ? "" : "none");
    for (const char *s = x->deflate_info; *s; s++)
      if (*s != ' ') putchar(*s);
    printf(" wire_ratio_sent=%.4f wire_ratio_received=%.4f", out, in);
    if (!o->quiet)
      fprintf(stderr, "  permessage-deflate: %s; on the wire %.1f%% of "
              "the payload sent, %.1f%% of that received\n",
              x->deflate_info, 100 * out, 100 * in);
  }
  if (o->tls && !o->quiet) fprintf(stderr, "  TLS: %s\n", x->tls_info);
}

static void print_common(const struct run *r, const struct cpu_sample *a,
                         const struct cpu_sample *b) {
  const struct options *o = r->o;
  print_transport(r);
  printf(" errors=%llu", (unsigned long long)client_ctx_errors(&r->ctx));
  for (int i = 0; i < ERR_KINDS; i++)
    printf(" err_%s=%llu", client_error_names[i],
           (unsigned long long)r->ctx.errors[i]);
  printf(" client_cpu=%.1f server_cpu=%.1f other_cpu=%.1f\n",
         cpu_self_pct(a, b), cpu_server_pct(a, b), cpu_other_pct(a, b));
  fflush(stdout);
  if (o->quiet) return;
  fprintf(stderr, "  loadgen CPU %.0f%%, server CPU %.0f%%%s, rest of the "
          "machine %.0f%%; errors %llu\n", cpu_self_pct(a, b),
          cpu_server_pct(a, b), o->npids ? "" : " (no --pid)",
          cpu_other_pct(a, b),
          (unsigned long long)client_ctx_errors(&r->ctx));
  if (cpu_self_pct(a, b) > 90)
    fprintf(stderr, "  (the load generator used most of its core: "
            "the figure may be its limit)\n");
}

static void print_latency(const struct histogram *h) {
  printf(" p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f",
         (double)hist_quantile(h, 0.5) / 1e3,
         (double)hist_quantile(h, 0.99) / 1e3,
         (double)hist_quantile(h, 0.999) / 1e3, (double)h->max / 1e3);
}

static void report_echo(const struct run *r, uint64_t echoes, double secs,
                        const struct cpu_sample *a,
                        const struct cpu_sample *b) {
  const struct options *o = r->o;
  double rate = secs > 0 ? (double)echoes / secs : 0;
  double mbs = rate * (double)o->size / 1e6;
  printf("test=%s label=%s conns=%ld depth=%ld size=%zu payload=%s "
         "opcode=%s seconds=%.3f messages=%llu msgs_per_s=%.1f "
         "mb_per_s=%.3f", test_names[o->test], o->label, o->conns,
         o->depth, o->size, payload_kind_name(o->kind),
         o->text ? "text" : "binary", secs, (unsigned long long)echoes,
         rate, mbs);
  print_latency(&r->hist);
  if (!o->quiet)
    fprintf(stderr, "%s %s: C=%ld D=%ld S=%zu %s %s: %.0f msg/s, "
            "%.2f MB/s; round trip p50 %.1f us, p99 %.1f us, "
            "p99.9 %.1f us\n", test_names[o->test], o->label, o->conns,
            o->depth, o->size, payload_kind_name(o->kind),
            o->text ? "text" : "binary", rate, mbs,
            (double)hist_quantile(&r->hist, 0.5) / 1e3,
            (double)hist_quantile(&r->hist, 0.99) / 1e3,
            (double)hist_quantile(&r->hist, 0.999) / 1e3);
  print_common(r, a, b);
}

/* ======================================================================
 * The tests
 * ====================================================================== */

static int run_echo(struct run *r) {
  const struct options *o = r->o;
  struct cpu_sample a, b;
  uint64_t e0, e1;
  cpu_sample(&a, o->pids, o->npids);
  b = a;
  if (open_clients(r, 0, r->nclients) != 0 || r->opened == 0) {
    fprintf(stderr, "loadgen: no measurement: %zu of %zu connections "
            "opened\n", r->opened, r->nclients);
    goto out;
  }
  r->phase = PH_WARMUP;
  for (size_t i = 0; i < r->nclients; i++) {
    fill_pipeline(r, &r->clients[i]);
    client_flush(&r->clients[i]);
  }
  if (!o->messages) sleep_loop(r, o->warmup);
  cpu_sample(&a, o->pids, o->npids);
  e0 = r->echoes;
  hist_reset(&r->hist);
  r->recording = 1;
  r->phase = PH_MEASURE;
  if (o->messages) loop(r, r->deadline, limit_reached);
  else sleep_loop(r, o->duration);
  cpu_sample(&b, o->pids, o->npids);
  e1 = r->echoes;
  r->recording = 0;
  close_all(r, 5);
  report_echo(r, e1 - e0, (double)(b.t - a.t) / 1e9, &a, &b);
  return 0;
out:
  close_all(r, 2);
  report_echo(r, 0, 0, &a, &b);   /* zeros, and the errors */
  return -1;
}

static int run_handshake(struct run *r) {
  const struct options *o = r->o;
  struct cpu_sample a, b;
  uint64_t c0, c1;
  r->phase = PH_WARMUP;
  for (size_t i = 0; i < r->nclients; i++) start_client(r, i);
  sleep_loop(r, o->warmup);
  cpu_sample(&a, o->pids, o->npids);
  c0 = r->cycles;
  hist_reset(&r->hist);
  r->recording = 1;
  r->phase = PH_MEASURE;
  sleep_loop(r, o->duration);
  cpu_sample(&b, o->pids, o->npids);
  c1 = r->cycles;
  r->recording = 0;
  close_all(r, 5);
  double secs = (double)(b.t - a.t) / 1e9;
  double rate = secs > 0 ? (double)(c1 - c0) / secs : 0;
  printf("test=handshake label=%s parallel=%ld seconds=%.3f "
         "handshakes=%llu hs_per_s=%.1f", o->label, o->conns, secs,
         (unsigned long long)(c1 - c0), rate);
  print_latency(&r->hist);
  if (!o->quiet)
    fprintf(stderr, "handshake %s: %ld in parallel: %.0f/s (connect, "
            "upgrade, close); upgrade p50 %.1f us, p99 %.1f us\n",
            o->label, o->conns, rate,
            (double)hist_quantile(&r->hist, 0.5) / 1e3,
            (double)hist_quantile(&r->hist, 0.99) / 1e3);
  print_common(r, &a, &b);
  return 0;
}

static void raise_fd_limit(size_t need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need + 16)
    fprintf(stderr, "loadgen: RLIMIT_NOFILE is %llu, below %zu "
            "connections: expect connect errors\n",
            (unsigned long long)rl.rlim_cur, need);
}

/* Open a few connections and close them, so that allocators have grown
 * to a steady state before the first reading. */
#define RSS_WARM 100

static int run_rss(struct run *r) {
  const struct options *o = r->o;
  struct cpu_sample a, b;
  int pid = o->pids[0], rc = -1;
  size_t n = r->nclients - RSS_WARM, failed0;
  long before = -1, after = -1;
  cpu_sample(&a, o->pids, o->npids);
  b = a;
  if (open_clients(r, 0, RSS_WARM) != 0) goto report;
  for (size_t i = 0; i < RSS_WARM; i++) {
    client_close(&r->clients[i]);
    client_flush(&r->clients[i]);
  }
  if (loop(r, r->deadline, all_done) != 0) goto report;
  sleep_loop(r, 0.5);
  before = pid_rss_kib(pid);
  cpu_sample(&a, o->pids, o->npids);
  failed0 = r->failed;
  if (open_clients(r, RSS_WARM, r->nclients) != 0) goto report;
  cpu_sample(&b, o->pids, o->npids);
  sleep_loop(r, 1.0);           /* let the server settle */
  after = pid_rss_kib(pid);
  if (r->failed == failed0 && before >= 0 && after >= 0) rc = 0;
report:;
  size_t open = r->opened > RSS_WARM ? r->opened - RSS_WARM : 0;
  double per = rc == 0 ? (double)(after - before) * 1024 / (double)open : 0;
  double open_secs = (double)(b.t - a.t) / 1e9;
  printf("test=rss label=%s conns=%zu open=%zu rss_before_kib=%ld "
         "rss_after_kib=%ld bytes_per_conn=%.0f open_seconds=%.3f "
         "opens_per_s=%.1f", o->label, n, open, before, after, per,
         open_secs, open_secs > 0 ? (double)open / open_secs : 0);
  if (!o->quiet)
    fprintf(stderr, "rss %s: %zu idle connections: server RSS %ld -> %ld "
            "KiB, %.0f bytes per connection (opened in %.2f s)\n",
            o->label, open, before, after, per, open_secs);
  if (rc != 0)
    fprintf(stderr, "loadgen: no measurement: %zu of %zu connections "
            "opened\n", open, n);
  close_all(r, 10);
  print_common(r, &a, &b);
  return rc;
}

/* ======================================================================
 * Command line
 * ====================================================================== */

static void usage(FILE *f) {
  fprintf(f,
    "usage: loadgen [options] echo|latency|handshake|rss\n"
    "  echo       C connections x D messages in flight x S bytes, echoed\n"
    "             and checked; messages/s, MB/s, round-trip percentiles\n"
    "  latency    echo with C=1 D=1 (the defaults of this test)\n"
    "  handshake  C connections in parallel, each looping connect,\n"
    "             upgrade (101 and Sec-WebSocket-Accept checked), close\n"
    "  rss        the server's VmRSS before and after opening N idle\n"
    "             connections (needs --pid)\n"
    "options:\n"
    "  -H, --host ADDR      numeric address (127.0.0.1)\n"
    "  -P, --port N         port (required)\n"
    "  -u, --path PATH      request target (/ws)\n"
    "  -c, --conns N        connections (echo 100, handshake 8, rss 10000)\n"
    "  -d, --depth N        messages in flight per connection (1)\n"
    "  -s, --size N         payload bytes (16)\n"
    "  -k, --payload KIND   random|zero|repeat|adversarial|text (random;\n"
    "                       text: JSON-like records, compressible)\n"
    "  -x, --text           text frames (random bytes become ASCII);\n"
    "                       binary otherwise\n"
    "  -w, --warmup SECS    before measuring (1)\n"
    "  -T, --duration SECS  measured (5)\n"
    "  -n, --messages N     echo: stop after N echoes instead of a time\n"
    "  -t, --timeout SECS   hard limit of the whole run (warmup +\n"
    "                       duration + 30; rss 300)\n"
    "  -p, --pid PID[,PID]  the server's processes: their CPU is shown\n"
    "  -j, --parallel N     upgrades in progress at once when opening (256)\n"
    "  -l, --label NAME     names the server in the report\n"
    "  -S, --seed N         payloads and masks (1)\n"
    "  -q, --quiet          only the key=value line\n"
    "      --tls            TLS 1.3 (OpenSSL; no certificate checks, no\n"
    "                       session resumption: every handshake is full)\n"
    "      --tls12          TLS 1.2 instead\n"
    "      --deflate        offer permessage-deflate (client_max_window_bits)\n"
    "                       and require it; compress every message\n"
    "      --deflate-level N  the client's zlib level, -1..9 (-1: 6)\n"
    "  -m, --each N         rss: each connection echoes N messages (-s,\n"
    "                       -k) once open, before the reading (0)\n"
    "Exit status: 0 when no error was counted, 1 otherwise, 2 for usage.\n");
}

static int parse_long(const char *s, long min, long max, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < min || v > max) return -1;
  *out = v;
  return 0;
}

/* long options without a letter */
enum { OPT_TLS = 256, OPT_TLS12, OPT_DEFLATE, OPT_DEFLATE_LEVEL };

static int parse_options(int argc, char **argv, struct options *o) {
  static const struct option longs[] = {
    { "host", 1, 0, 'H' }, { "port", 1, 0, 'P' }, { "path", 1, 0, 'u' },
    { "conns", 1, 0, 'c' }, { "depth", 1, 0, 'd' }, { "size", 1, 0, 's' },
    { "payload", 1, 0, 'k' }, { "text", 0, 0, 'x' },
    { "warmup", 1, 0, 'w' }, { "duration", 1, 0, 'T' },
    { "messages", 1, 0, 'n' }, { "timeout", 1, 0, 't' },
    { "pid", 1, 0, 'p' }, { "parallel", 1, 0, 'j' }, { "label", 1, 0, 'l' },
    { "seed", 1, 0, 'S' }, { "quiet", 0, 0, 'q' }, { "help", 0, 0, 'h' },
    { "tls", 0, 0, OPT_TLS }, { "tls12", 0, 0, OPT_TLS12 },
    { "deflate", 0, 0, OPT_DEFLATE },
    { "deflate-level", 1, 0, OPT_DEFLATE_LEVEL }, { "each", 1, 0, 'm' },
    { 0, 0, 0, 0 }
  };
  long v;
  int opt, kind;
  char *end, *tok, *save;
  memset(o, 0, sizeof *o);
  o->host = "127.0.0.1";
  o->path = "/ws";
  o->label = "server";
  o->conns = o->depth = -1;
  o->parallel = 256;
  o->size = 16;
  o->warmup = 1;
  o->duration = 5;
  o->seed = 1;
  o->deflate_level = -1;
  while ((opt = getopt_long(argc, argv,
                            "H:P:u:c:d:s:k:xw:T:n:t:p:j:l:S:qhm:", longs,
                            NULL)) != -1) {
    switch (opt) {
    case 'H': o->host = optarg; break;
    case 'u': o->path = optarg; break;
    case 'l': o->label = optarg; break;
    case 'x': o->text = 1; break;
    case 'q': o->quiet = 1; break;
    case 'h': usage(stdout); exit(0);
    case OPT_TLS: if (!o->tls) o->tls = 13; break;
    case OPT_TLS12: o->tls = 12; break;
    case OPT_DEFLATE: o->deflate = 1; break;
    case OPT_DEFLATE_LEVEL:
      if (parse_long(optarg, -1, 9, &v)) goto bad;
      o->deflate_level = (int)v;
      break;
    case 'm': if (parse_long(optarg, 0, 1000000, &o->each)) goto bad; break;
    case 'P':
      if (parse_long(optarg, 1, 65535, &v)) goto bad;
      o->port = (int)v;
      break;
    case 'c': if (parse_long(optarg, 1, 1000000, &o->conns)) goto bad; break;
    case 'd': if (parse_long(optarg, 1, 65536, &o->depth)) goto bad; break;
    case 'j':
      if (parse_long(optarg, 1, 100000, &o->parallel)) goto bad;
      break;
    case 's':
      if (parse_long(optarg, 0, 1L << 30, &v)) goto bad;
      o->size = (size_t)v;
      break;
    case 'k':
      if ((kind = payload_kind_parse(optarg)) < 0) goto bad;
      o->kind = (enum payload_kind)kind;
      break;
    case 'w': case 'T': case 't': {
      double d = strtod(optarg, &end);
      if (*end || end == optarg || d < 0 || d > 86400) goto bad;
      if (opt == 'w') o->warmup = d;
      else if (opt == 'T') o->duration = d;
      else o->timeout = d;
      break;
    }
    case 'n':
      o->messages = strtoull(optarg, &end, 10);
      if (*end || end == optarg) goto bad;
      break;
    case 'S':
      o->seed = strtoull(optarg, &end, 10);
      if (*end || end == optarg) goto bad;
      break;
    case 'p':
      for (tok = strtok_r(optarg, ",", &save); tok;
           tok = strtok_r(NULL, ",", &save)) {
        if (o->npids == MAX_PIDS || parse_long(tok, 1, 1L << 30, &v))
          goto bad;
        o->pids[o->npids++] = (int)v;
      }
      break;
    default:
      usage(stderr);
      return -1;
    }
  }
  if (optind != argc - 1) {
    usage(stderr);
    return -1;
  }
  for (int t = 0; t < 4; t++)
    if (strcmp(argv[optind], test_names[t]) == 0) o->test = (enum test)t;
  if (strcmp(argv[optind], test_names[o->test]) != 0) {
    fprintf(stderr, "loadgen: unknown test: %s\n", argv[optind]);
    return -1;
  }
  if (!o->port) {
    fprintf(stderr, "loadgen: --port is required\n");
    return -1;
  }
  if (o->test == TEST_RSS && !o->npids) {
    fprintf(stderr, "loadgen: rss needs --pid\n");
    return -1;
  }
  if (o->conns < 0)
    o->conns = o->test == TEST_LATENCY ? 1 : o->test == TEST_HANDSHAKE ? 8
               : o->test == TEST_RSS ? 10000 : 100;
  if (o->depth < 0) o->depth = 1;
  if (!o->timeout)
    o->timeout = o->test == TEST_RSS ? 300 : o->warmup + o->duration + 30;
  return 0;
bad:
  if (opt < 256)
    fprintf(stderr, "loadgen: bad value for -%c: %s\n", opt, optarg);
  else
    fprintf(stderr, "loadgen: bad value for --deflate-level: %s\n", optarg);
  return -1;
}

int main(int argc, char **argv) {
  struct options o;
  struct payload payload;
  static struct run r;          /* the histogram is large */
  int rc;

  if (parse_options(argc, argv, &o) != 0) return 2;
  /* Past its limit and a grace period, a stuck run is killed. */
  alarm((unsigned)o.timeout + 10);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);

  r.o = &o;
  r.nclients = (size_t)o.conns + (o.test == TEST_RSS ? RSS_WARM : 0);
  if (o.test == TEST_RSS) raise_fd_limit(r.nclients);
  if (payload_init(&payload, o.kind, o.size, o.text, o.seed) != 0 ||
      client_ctx_init(&r.ctx, o.host, o.port, o.path, o.deflate) != 0 ||
      (o.tls && !(r.ctx.tls = tls_ctx_new(o.tls == 12)))) {
    fprintf(stderr, "loadgen: cannot set up\n");
    return 2;
  }
  r.ctx.deflate_level = o.deflate_level;
  prng_seed(&r.ctx.rng, o.seed * 0x9e3779b97f4a7c15u + 1);
  r.ctx.payload = &payload;
  r.ctx.opcode = o.text ? 1 : 2;
  r.ctx.depth = (uint32_t)o.depth;
  r.ctx.events = &events;
  r.ctx.user = &r;
  r.ctx.epfd = epoll_create1(EPOLL_CLOEXEC);
  r.clients = calloc(r.nclients, sizeof *r.clients);
  r.restart = calloc(2 * r.nclients, sizeof *r.restart);
  if (r.ctx.epfd < 0 || !r.clients || !r.restart) {
    fprintf(stderr, "loadgen: cannot set up\n");
    return 2;
  }
  for (size_t i = 0; i < r.nclients; i++) {
    r.clients[i].index = i;
    r.clients[i].fd = -1;
  }
  r.deadline = now_ns() + (uint64_t)(o.timeout * 1e9);

  switch (o.test) {
  case TEST_HANDSHAKE: rc = run_handshake(&r); break;
  case TEST_RSS: rc = run_rss(&r); break;
  default: rc = run_echo(&r); break;
  }
  if (interrupted) fprintf(stderr, "loadgen: interrupted\n");
  else if (now_ns() >= r.deadline)
    fprintf(stderr, "loadgen: the run hit its time limit (%.0f s)\n",
            o.timeout);
  uint64_t errors = client_ctx_errors(&r.ctx);
  for (size_t i = 0; i < r.nclients; i++) client_free(&r.clients[i]);
  free(r.clients);
  free(r.restart);
  close(r.ctx.epfd);
  SSL_CTX_free(r.ctx.tls);
  client_ctx_free(&r.ctx);
  payload_free(&payload);
  return rc == 0 && errors == 0 ? 0 : 1;
}
