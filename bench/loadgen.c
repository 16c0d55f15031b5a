/* loadgen.c - a WebSocket load generator: echo throughput and latency,
 * handshakes per second, a server's memory per idle connection,
 * connection churn with the server's memory over time, and fan-out
 * from one publisher to many subscribers (fanout.c), and clients
 * recovering what they missed while a publisher runs (recover.c) */
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
#include "fanout.h"
#include "payload.h"
#include "recover.h"
#include "stats.h"
#include "tls.h"

#define MAX_PIDS 8

enum test { TEST_ECHO, TEST_LATENCY, TEST_HANDSHAKE, TEST_RSS, TEST_CHURN,
            TEST_FANOUT, TEST_RECOVER };
static const char *const test_names[] = {
  "echo", "latency", "handshake", "rss", "churn", "fanout", "recover"
};
#define NTESTS (sizeof test_names / sizeof test_names[0])

/* PH_SETTLE: churn holds each connection open once it has echoed */
enum phase { PH_SETUP, PH_WARMUP, PH_MEASURE, PH_SETTLE, PH_DRAIN };
static const char *const phase_names[] = {
  "setup", "warmup", "measure", "settle", "drain"
};

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
  long each;                    /* rss, churn: messages each connection
                                   echoes (churn: then it closes) */
  double hold;                  /* churn: seconds a connection pauses in
                                   all, spread before each step */
  const char *rss_log;          /* churn: a line per second to this file */
  long rounds;                  /* recover: times every client drops */
  long lead;                    /* recover: the publisher's lead over a
                                   client coming back (-1: depth) */
  double rate;                  /* recover: publishes a second, 0: all
                                   it may */
  long burst;                   /* recover: publishes at once at each
                                   drop */
};

/* churn: what the run knows of each slot of connections */
struct slot {
  uint32_t gen;                 /* connections started in it */
  uint8_t settled;              /* has echoed its share and paused */
  uint8_t holding;              /* held open: PH_SETUP, PH_SETTLE */
};

/* churn: a step after a pause, in a min-heap by due time */
struct wait {
  uint64_t due;
  size_t index;
  uint32_t gen;                 /* stale once the slot has started anew */
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
  /* churn */
  struct slot *slots;
  size_t held;                  /* slots holding */
  struct wait *waits;           /* a min-heap on due */
  size_t wait_count, wait_cap;
  uint64_t pause_ns;            /* the mean; each is 0.5 to 1.5 times */
  uint64_t t0, next_sample;     /* next_sample 0: no sampling */
  long rss_peak, rss_peak_measure;
  size_t open_min;              /* fewest open WebSockets, measured */
  double open_sum;
  unsigned open_samples;
  FILE *log;
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

/* rss --each, churn: a connection is settled once it has echoed its
 * share */
static int exchanging(const struct run *r, const struct client *c) {
  return (r->o->test == TEST_RSS || r->o->test == TEST_CHURN) &&
         c->received < (uint64_t)r->o->each;
}

/* churn: a settled connection closes (and is replaced when done), or,
 * while the run opens or settles, stays open */
static void churn_settled(struct run *r, struct client *c) {
  struct slot *s = &r->slots[c->index];
  s->settled = 1;
  r->pending--;
  if (r->phase == PH_SETUP || r->phase == PH_SETTLE) {
    s->holding = 1;
    r->held++;
  } else {
    client_close(c);
  }
}

/* churn: the next step of an open connection: an echo, or settling */
static void churn_act(struct run *r, struct client *c) {
  if (r->phase == PH_DRAIN)
    client_close(c);                  /* one echo at a time: none left */
  else if (exchanging(r, c))
    client_send(c, payload_pick(r->ctx.payload, &r->ctx.rng));
  else if (r->slots[c->index].settled)
    client_close(c);                  /* was held: see churn_resume */
  else
    churn_settled(r, c);
}

static void wait_push(struct run *r, struct client *c, uint64_t due) {
  size_t i = r->wait_count++;
  struct wait w = { due, c->index, r->slots[c->index].gen };
  while (i > 0 && r->waits[(i - 1) / 2].due > due) {
    r->waits[i] = r->waits[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  r->waits[i] = w;
}

static struct wait wait_pop(struct run *r) {
  struct wait top = r->waits[0], last = r->waits[--r->wait_count];
  size_t i = 0, n = r->wait_count;
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && r->waits[child + 1].due < r->waits[child].due)
      child++;
    if (r->waits[child].due >= last.due) break;
    r->waits[i] = r->waits[child];
    i = child;
  }
  if (n) r->waits[i] = last;
  return top;
}

/* A random share of `span` ns, from lo/8 to hi/8 of it. */
static uint64_t jitter(struct run *r, uint64_t span, unsigned lo,
                       unsigned hi) {
  uint64_t x = prng_next(&r->ctx.rng) % 1024;
  return span / 8 * lo + (span / 8 * (hi - lo)) / 1024 * x;
}

/* ... now, or after a pause: --hold spread over each + 1 pauses, each
 * 0.5 to 1.5 times the mean so that the connections drift apart.  The
 * first opening goes straight through; settling keeps the pace, so
 * that it adds no burst of its own to the reading that follows. */
static void churn_step(struct run *r, struct client *c) {
  if (!r->pause_ns || r->phase == PH_SETUP || r->phase == PH_DRAIN ||
      r->wait_count == r->wait_cap) {
    churn_act(r, c);
    return;
  }
  wait_push(r, c, now_ns() + jitter(r, r->pause_ns, 4, 12));
}

/* churn: the steps whose pause is over (all of them when draining) */
static void churn_due(struct run *r, uint64_t now) {
  while (r->wait_count) {
    if (r->waits[0].due > now && r->phase != PH_DRAIN) break;
    struct wait w = wait_pop(r);
    struct client *c = &r->clients[w.index];
    if (r->slots[w.index].gen != w.gen || c->state != CL_OPEN) continue;
    churn_act(r, c);
    client_flush(c);
  }
}

static void on_open(struct client *c) {
  struct run *r = c->ctx->user;
  r->opened++;
  if (r->o->test == TEST_CHURN) {
    churn_step(r, c);
    return;
  }
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
  if (r->o->test == TEST_CHURN) {
    churn_step(r, c);
    return;
  }
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
  r->active--;
  if (!ok) r->failed++;
  if (r->o->test == TEST_CHURN) {
    struct slot *s = &r->slots[c->index];
    if (!s->settled) r->pending--;
    if (s->holding) {                 /* lost while held open */
      s->holding = 0;
      r->held--;
    }
    if (ok) r->cycles++;
    if (r->phase != PH_DRAIN) r->restart[r->nrestart++] = c->index;
    return;
  }
  if (!c->opened || exchanging(r, c))
    r->pending--;                     /* failed before it settled */
  if (r->o->test == TEST_HANDSHAKE && ok && r->phase == PH_MEASURE)
    r->cycles++;
  if (r->o->test == TEST_HANDSHAKE && r->phase != PH_DRAIN)
    r->restart[r->nrestart++] = c->index;
}

static const struct client_events events = {
  on_open, on_message, on_done, NULL
};

/* ======================================================================
 * The loop
 * ====================================================================== */

static void start_client(struct run *r, size_t i) {
  r->pending++;
  r->active++;
  if (r->slots) {
    r->slots[i].gen++;
    r->slots[i].settled = 0;
  }
  client_start(&r->clients[i], &r->ctx);
}

static void churn_sample(struct run *r, uint64_t now);

/* Serve events until `until` (ns), until done(r) says so, or until the
 * global limit or a signal; returns -1 for the last two. */
static int loop(struct run *r, uint64_t until, int (*done)(struct run *)) {
  struct epoll_event evs[256];
  for (;;) {
    if (r->next_sample && now_ns() >= r->next_sample)
      churn_sample(r, now_ns());
    if (r->wait_count) churn_due(r, now_ns());
    /* A start that fails at once queues its slot again: behind these */
    size_t again = r->phase == PH_DRAIN ? 0 : r->nrestart;
    for (size_t i = 0; i < again; i++) start_client(r, r->restart[i]);
    r->nrestart -= r->phase == PH_DRAIN ? r->nrestart : again;
    memmove(r->restart, r->restart + again, r->nrestart * sizeof *r->restart);
    if (done && done(r)) return 0;
    uint64_t now = now_ns();
    if (interrupted || now >= r->deadline) return -1;
    if (now >= until) return 0;
    uint64_t wake = until < r->deadline ? until : r->deadline;
    if (r->wait_count && r->waits[0].due < wake)
      wake = r->waits[0].due > now ? r->waits[0].due : now;
    uint64_t wait = wake - now;
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

/* churn: the server's RSS, and how many of ours are open, once a
 * second; a line to --rss-log each time */
static void churn_sample(struct run *r, uint64_t now) {
  long kib = pid_rss_kib(r->o->pids[0]);
  size_t open = 0;
  for (size_t i = 0; i < r->nclients; i++)
    if (r->clients[i].state == CL_OPEN) open++;
  r->next_sample += 1000000000;
  if (r->next_sample <= now) r->next_sample = now + 1000000000;
  if (kib > r->rss_peak) r->rss_peak = kib;
  if (r->phase == PH_MEASURE) {
    if (kib > r->rss_peak_measure) r->rss_peak_measure = kib;
    if (!r->open_samples || open < r->open_min) r->open_min = open;
    r->open_sum += (double)open;
    r->open_samples++;
  }
  if (r->log) {
    fprintf(r->log, "%.1f %s %ld %zu %zu %llu %llu\n",
            (double)(now - r->t0) / 1e9, phase_names[r->phase], kib, open,
            r->active, (unsigned long long)r->cycles,
            (unsigned long long)client_ctx_errors(&r->ctx));
    fflush(r->log);
  }
}

static int all_held(struct run *r) {
  return r->held == r->nclients;
}

/* Let every connection finish its cycle and open again, then hold them
 * all open and echoed: the same state at each reading. */
static int churn_settle(struct run *r, double seconds) {
  r->phase = PH_SETTLE;
  if (loop(r, now_ns() + (uint64_t)(seconds * 1e9), all_held) != 0 ||
      !all_held(r)) {
    fprintf(stderr, "loadgen: churn: %zu of %zu connections open and "
            "echoed after %.0f s\n", r->held, r->nclients, seconds);
    return -1;
  }
  return 0;
}

/* Close what is held open, at random times over one --hold so that
 * the connections start out of step: each is replaced once its close
 * is done. */
static void churn_resume(struct run *r, enum phase phase) {
  uint64_t now = now_ns();
  r->phase = phase;
  for (size_t i = 0; i < r->nclients; i++) {
    struct client *c = &r->clients[i];
    if (!r->slots[i].holding) continue;
    r->slots[i].holding = 0;
    r->held--;
    if (r->pause_ns && r->wait_count < r->wait_cap) {
      wait_push(r, c, now + jitter(r, r->pause_ns * (uint64_t)(r->o->each
                                                               + 1), 0, 8));
    } else {
      client_close(c);
      client_flush(c);
    }
  }
}

#define SETTLE_LIMIT 60         /* seconds for every connection to open */

/* N connections, each: connect, upgrade, M echoes, closing handshake,
 * then a new one in its place.  RSS readings with all N open and held:
 * after the first opening, after the warm-up (the baseline) and after
 * the measured churn; then once all are closed. */
static int run_churn(struct run *r) {
  const struct options *o = r->o;
  struct cpu_sample a, b;
  int pid = o->pids[0], rc = -1;
  long start = pid_rss_kib(pid), first = -1, base = -1, end = -1, closed;
  uint64_t c0 = 0, c1 = 0, e0 = 0, e1 = 0;
  size_t opened0 = 0, opened1 = 0;
  if (o->rss_log && !(r->log = fopen(o->rss_log, "w")))
    perror(o->rss_log);
  if (r->log)
    fprintf(r->log, "# seconds phase rss_kib open sockets cycles errors\n");
  r->t0 = r->next_sample = now_ns();
  cpu_sample(&a, o->pids, o->npids);
  b = a;
  if (open_clients(r, 0, r->nclients) != 0 ||
      churn_settle(r, SETTLE_LIMIT) != 0)
    goto report;
  first = pid_rss_kib(pid);
  churn_resume(r, PH_WARMUP);
  sleep_loop(r, o->warmup);
  if (churn_settle(r, SETTLE_LIMIT) != 0) goto report;
  sleep_loop(r, 0.5);           /* let the server settle */
  base = pid_rss_kib(pid);
  cpu_sample(&a, o->pids, o->npids);
  b = a;
  c0 = r->cycles;
  e0 = r->echoes;
  opened0 = r->opened;
  churn_resume(r, PH_MEASURE);
  if (loop(r, now_ns() + (uint64_t)(o->duration * 1e9), NULL) != 0)
    goto report;
  cpu_sample(&b, o->pids, o->npids);
  c1 = r->cycles;
  e1 = r->echoes;
  opened1 = r->opened;
  if (churn_settle(r, SETTLE_LIMIT) != 0) goto report;
  sleep_loop(r, 0.5);
  end = pid_rss_kib(pid);
  rc = 0;
report:;
  uint64_t cycles = c1 - c0;
  double secs = (double)(b.t - a.t) / 1e9;
  double rate = secs > 0 ? (double)cycles / secs : 0;
  close_all(r, 30);
  sleep_loop(r, 0.5);
  closed = pid_rss_kib(pid);
  r->next_sample = 0;
  printf("test=churn label=%s conns=%zu each=%ld hold=%.3f size=%zu "
         "seconds=%.3f "
         "cycles=%llu cycles_per_s=%.1f opened_measured=%zu "
         "opened_total=%zu echoes_measured=%llu open_min=%zu "
         "open_avg=%.0f rss_start_kib=%ld rss_first_kib=%ld "
         "rss_base_kib=%ld rss_peak_kib=%ld rss_peak_measure_kib=%ld "
         "rss_end_kib=%ld rss_closed_kib=%ld", o->label, r->nclients,
         o->each, o->hold, o->size, secs, (unsigned long long)cycles, rate,
         opened1 - opened0, r->opened, (unsigned long long)(e1 - e0),
         r->open_min, r->open_samples ? r->open_sum / r->open_samples : 0,
         start, first, base, r->rss_peak, r->rss_peak_measure, end, closed);
  if (!o->quiet)
    fprintf(stderr, "churn %s: %zu connections, %ld echoes each: %.0f "
            "cycles/s over %.1f s (%zu opened in all); open WebSockets "
            "min %zu, mean %.0f; server RSS %ld KiB empty, %ld with all "
            "open after the warm-up, peak %ld, %ld at the end, %ld "
            "after closing\n", o->label, r->nclients, o->each, rate, secs,
            r->opened, r->open_min,
            r->open_samples ? r->open_sum / r->open_samples : 0, start,
            base, r->rss_peak, end, closed);
  print_common(r, &a, &b);
  if (r->log) fclose(r->log);
  r->log = NULL;
  return rc;
}

/* C subscribers of one topic and a publisher (fanout.c); the figures
 * beside it as for the others */
static int run_fanout(struct run *r) {
  const struct options *o = r->o;
  struct fanout_params p = {
    .ctx = &r->ctx, .subs = r->clients, .nsubs = r->nclients,
    .label = o->label, .depth = o->depth, .parallel = o->parallel,
    .size = o->size, .warmup = o->warmup, .duration = o->duration,
    .messages = o->messages, .pids = o->pids, .npids = o->npids,
    .deadline = r->deadline, .interrupted = &interrupted,
    .hist = &r->hist, .quiet = o->quiet,
  };
  int rc = fanout_run(&p);
  print_common(r, &p.a, &p.b);
  return rc;
}

/* C clients drop and recover while a publisher runs (recover.c); the
 * CPU figures are over the recovery, from the first drop until the last
 * client is back the last time */
static int run_recover(struct run *r) {
  const struct options *o = r->o;
  struct recover_params p = {
    .ctx = &r->ctx, .subs = r->clients, .nsubs = r->nclients,
    .label = o->label, .window = o->depth, .lead = o->lead,
    .parallel = o->parallel, .rate = o->rate, .burst = o->burst,
    .rounds = o->rounds,
    .tail = o->messages, .pids = o->pids, .npids = o->npids,
    .deadline = r->deadline, .interrupted = &interrupted,
    .hist = &r->hist, .quiet = o->quiet,
  };
  int rc = recover_run(&p);
  print_common(r, &p.a, &p.b);
  return rc;
}

/* ======================================================================
 * Command line
 * ====================================================================== */

static void usage(FILE *f) {
  fprintf(f,
    "usage: loadgen [options] echo|latency|handshake|rss|churn|fanout|\n"
    "                         recover\n"
    "  echo       C connections x D messages in flight x S bytes, echoed\n"
    "             and checked; messages/s, MB/s, round-trip percentiles\n"
    "  latency    echo with C=1 D=1 (the defaults of this test)\n"
    "  handshake  C connections in parallel, each looping connect,\n"
    "             upgrade (101 and Sec-WebSocket-Accept checked), close\n"
    "  rss        the server's VmRSS before and after opening N idle\n"
    "             connections (needs --pid)\n"
    "  churn      C connections (10000), each: upgrade, M echoes (-m, 3),\n"
    "             closing handshake, replaced by a new one; the -T window\n"
    "             after -w of warm-up; the server's VmRSS with all open\n"
    "             before and after, and once a second (needs --pid)\n"
    "  fanout     C subscribers (10000) of one topic and a publisher with\n"
    "             D publishes (-d) of S bytes (8 or more) in flight, each\n"
    "             until every subscriber has it; deliveries/s, every one\n"
    "             checked: bytes, once, in order (against the app\n"
    "             bench/apps/fanout.lua); -n: a fixed number of publishes\n"
    "  recover    C clients (1000) of a topic with history get D live\n"
    "             messages (-d, 100), all drop and come back at once\n"
    "             with their positions while a publisher goes on (never\n"
    "             more than D ahead of the slowest live client, nor\n"
    "             --lead ahead of one coming back), then -n more (100);\n"
    "             every offset checked (bench/apps/recovery.lua at -u)\n"
    "options:\n"
    "  -H, --host ADDR      numeric address (127.0.0.1)\n"
    "  -P, --port N         port (required)\n"
    "  -u, --path PATH      request target (/ws)\n"
    "  -c, --conns N        connections (echo 100, handshake 8, rss,\n"
    "                       churn and fanout 10000)\n"
    "  -d, --depth N        messages in flight per connection (1;\n"
    "                       recover: how far the publisher may be ahead\n"
    "                       of the slowest live client, 100)\n"
    "  -s, --size N         payload bytes (16)\n"
    "  -k, --payload KIND   random|zero|repeat|adversarial|text (random;\n"
    "                       text: JSON-like records, compressible)\n"
    "  -x, --text           text frames (random bytes become ASCII);\n"
    "                       binary otherwise\n"
    "  -w, --warmup SECS    before measuring (1)\n"
    "  -T, --duration SECS  measured (5)\n"
    "  -n, --messages N     echo: stop after N echoes instead of a time;\n"
    "                       fanout: after N publishes; recover: after\n"
    "                       every client is back\n"
    "  -t, --timeout SECS   hard limit of the whole run (warmup +\n"
    "                       duration + 30; rss 300; churn + 300;\n"
    "                       fanout + 120)\n"
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
    "                       -k) once open, before the reading (0);\n"
    "                       churn: before it closes (3)\n"
    "      --hold SECS      churn: each connection pauses this long in\n"
    "                       all, in M + 1 equal pauses: after opening and\n"
    "                       after each echo (0)\n"
    "      --rss-log FILE   churn: a line per second (time, phase, server\n"
    "                       RSS KiB, open WebSockets, sockets, cycles,\n"
    "                       errors)\n"
    "      --rounds N       recover: drop and come back N times, each once\n"
    "                       every client has had D live messages (1)\n"
    "      --lead N         recover: how far the publisher may be ahead of\n"
    "                       the position a client comes back with, at most\n"
    "                       what the server keeps (D)\n"
    "      --rate N         recover: publishes a second, steadily (0: as\n"
    "                       many as the server answers and D and --lead\n"
    "                       allow)\n"
    "      --burst N        recover: N publishes at once when the clients\n"
    "                       drop, besides D and --rate (0)\n"
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
enum { OPT_TLS = 256, OPT_TLS12, OPT_DEFLATE, OPT_DEFLATE_LEVEL,
       OPT_RSS_LOG, OPT_HOLD, OPT_ROUNDS, OPT_LEAD, OPT_RATE, OPT_BURST };

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
    { "rss-log", 1, 0, OPT_RSS_LOG }, { "hold", 1, 0, OPT_HOLD },
    { "rounds", 1, 0, OPT_ROUNDS }, { "lead", 1, 0, OPT_LEAD },
    { "rate", 1, 0, OPT_RATE }, { "burst", 1, 0, OPT_BURST },
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
  o->each = -1;
  o->rounds = 1;
  o->lead = -1;
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
    case OPT_RSS_LOG: o->rss_log = optarg; break;
    case OPT_ROUNDS:
      if (parse_long(optarg, 1, 1000000, &o->rounds)) goto bad;
      break;
    case OPT_LEAD:
      if (parse_long(optarg, 1, 1L << 24, &o->lead)) goto bad;
      break;
    case OPT_BURST:
      if (parse_long(optarg, 0, 1L << 24, &o->burst)) goto bad;
      break;
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
    case 'w': case 'T': case 't': case OPT_HOLD: case OPT_RATE: {
      double d = strtod(optarg, &end);
      if (*end || end == optarg || d < 0 || d > 86400) goto bad;
      if (opt == 'w') o->warmup = d;
      else if (opt == 'T') o->duration = d;
      else if (opt == 't') o->timeout = d;
      else if (opt == OPT_RATE) o->rate = d;
      else o->hold = d;
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
  for (size_t t = 0; t < NTESTS; t++)
    if (strcmp(argv[optind], test_names[t]) == 0) o->test = (enum test)t;
  if (strcmp(argv[optind], test_names[o->test]) != 0) {
    fprintf(stderr, "loadgen: unknown test: %s\n", argv[optind]);
    return -1;
  }
  if (!o->port) {
    fprintf(stderr, "loadgen: --port is required\n");
    return -1;
  }
  if ((o->test == TEST_RSS || o->test == TEST_CHURN) && !o->npids) {
    fprintf(stderr, "loadgen: %s needs --pid\n", test_names[o->test]);
    return -1;
  }
  if (o->test == TEST_FANOUT && o->size < FANOUT_SEQ_DIGITS) {
    fprintf(stderr, "loadgen: fanout needs -s %d or more\n",
            FANOUT_SEQ_DIGITS);
    return -1;
  }
  if (o->conns < 0)
    o->conns = o->test == TEST_LATENCY ? 1 : o->test == TEST_HANDSHAKE ? 8
               : o->test == TEST_RSS || o->test == TEST_CHURN ||
                 o->test == TEST_FANOUT ? 10000
               : o->test == TEST_RECOVER ? 1000 : 100;
  if (o->depth < 0) o->depth = o->test == TEST_RECOVER ? 100 : 1;
  if (o->test == TEST_RECOVER && !o->messages) o->messages = 100;
  if (o->lead < 0) o->lead = o->depth;
  if (o->each < 0) o->each = o->test == TEST_CHURN ? 3 : 0;
  if (!o->timeout)
    o->timeout = o->test == TEST_RSS ? 300
                 : o->test == TEST_CHURN ? o->warmup + o->duration + 300
                 : o->test == TEST_FANOUT || o->test == TEST_RECOVER
                 ? o->warmup + o->duration + 120
                 : o->warmup + o->duration + 30;
  return 0;
bad:
  if (opt < 256)
    fprintf(stderr, "loadgen: bad value for -%c: %s\n", opt, optarg);
  else
    fprintf(stderr, "loadgen: bad value for --%s: %s\n",
            opt == OPT_HOLD ? "hold" : opt == OPT_ROUNDS ? "rounds"
            : opt == OPT_LEAD ? "lead" : opt == OPT_RATE ? "rate"
            : opt == OPT_BURST ? "burst" : "deflate-level", optarg);
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
  if (o.test == TEST_RSS || o.test == TEST_CHURN || o.test == TEST_FANOUT ||
      o.test == TEST_RECOVER)
    raise_fd_limit(r.nclients + 1);
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
  if (o.test == TEST_CHURN) {
    r.wait_cap = 2 * r.nclients;  /* room for stale entries */
    r.slots = calloc(r.nclients, sizeof *r.slots);
    r.waits = calloc(r.wait_cap, sizeof *r.waits);
    r.pause_ns = (uint64_t)(o.hold / (double)(o.each + 1) * 1e9);
  }
  if (r.ctx.epfd < 0 || !r.clients || !r.restart ||
      (o.test == TEST_CHURN && (!r.slots || !r.waits))) {
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
  case TEST_CHURN: rc = run_churn(&r); break;
  case TEST_FANOUT: rc = run_fanout(&r); break;
  case TEST_RECOVER: rc = run_recover(&r); break;
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
  free(r.slots);
  free(r.waits);
  close(r.ctx.epfd);
  SSL_CTX_free(r.ctx.tls);
  client_ctx_free(&r.ctx);
  payload_free(&payload);
  return rc == 0 && errors == 0 ? 0 : 1;
}
