/* fanout.c - the load generator's fan-out test: C subscribers of one
 * topic and a publisher whose messages the server relays to them all;
 * every delivery checked byte for byte, once each and in order */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fanout.h"
#include "payload.h"

/* The protocol of bench/apps/fanout.lua, in text messages:
 *   "sub TOPIC"  -> "ok"    this socket subscribes to TOPIC
 *   "pub TOPIC"  -> "ok N"  every message this socket sends from now on
 *                           goes to TOPIC's subscribers (N of them)
 * Publish number SEQ is FANOUT_SEQ_DIGITS lowercase hex digits of SEQ
 * (mod 2^32), then size - FANOUT_SEQ_DIGITS bytes of the payload (-k):
 * the window of the pool that SEQ names, so that consecutive messages
 * differ.  A subscriber's k-th message after "ok" must be publish k. */
#define TOPIC "fanout"
#define STALL_LIMIT 10          /* seconds without a delivery: give up */
#define CLOSE_LIMIT 10          /* seconds for every closing handshake */
#define REPLY_MAX 32

enum fanout_phase {
  FP_OPEN,                      /* connecting and subscribing */
  FP_PUBLISH,
  FP_DRAIN,                     /* no new publishes: the last arrive */
  FP_CLOSE
};

/* A publish in flight, at seq % depth */
struct in_flight_publish {
  uint64_t sent_ns;
  size_t delivered;             /* subscribers who have it */
};

struct fanout {
  struct fanout_params *p;
  struct client pub;            /* the publisher */
  struct in_flight_publish *ring;
  uint8_t *msg;                 /* the message being published */
  enum fanout_phase phase;
  size_t pending;               /* started, not yet subscribed or done */
  size_t active;                /* started, not yet done */
  size_t subscribed;            /* subscribers that were answered "ok" */
  size_t live;                  /* ... and have not failed since: a
                                   publish is complete when this many
                                   have it */
  uint64_t published, completed, deliveries;
  uint64_t limit;               /* publishes to make */
  uint64_t progress_ns;         /* the last delivery (stall check) */
  int recording;
  int pub_ready;                /* the publisher was answered "ok N" */
  long server_count;            /* N, or -1 */
  char reply[REPLY_MAX];        /* the publisher's answer, read so far */
};

/* ======================================================================
 * Messages
 * ====================================================================== */

static void seq_digits(char out[FANOUT_SEQ_DIGITS], uint64_t seq) {
  static const char hex[] = "0123456789abcdef";
  for (int i = FANOUT_SEQ_DIGITS - 1; i >= 0; i--, seq >>= 4)
    out[i] = hex[seq & 15];
}

/* Publish seq's bytes after its number */
static const uint8_t *body(const struct fanout *f, uint64_t seq) {
  const struct payload *pl = f->p->ctx->payload;
  return payload_bytes(pl, (uint32_t)(seq % pl->tickets));
}

static void compose(struct fanout *f, uint64_t seq) {
  seq_digits((char *)f->msg, seq);
  memcpy(f->msg + FANOUT_SEQ_DIGITS, body(f, seq),
         f->p->size - FANOUT_SEQ_DIGITS);
}

static void send_command(struct client *c, const char *verb) {
  char line[64];
  int n = snprintf(line, sizeof line, "%s " TOPIC, verb);
  client_send_bytes(c, 1, (const uint8_t *)line, (size_t)n);
}

/* ======================================================================
 * Publishing, and counting deliveries
 * ====================================================================== */

/* Publishes are complete in order: each subscriber reads them in order,
 * so one that has seq has every earlier one. */
static void advance(struct fanout *f) {
  uint64_t d = (uint64_t)f->p->depth;
  while (f->completed < f->published &&
         f->ring[f->completed % d].delivered >= f->live)
    f->completed++;
}

/* Keep depth publishes in flight (counted by deliveries). */
static void publish_more(struct fanout *f) {
  struct client *c = &f->pub;
  uint64_t d = (uint64_t)f->p->depth;
  int any = 0;
  if (f->phase != FP_PUBLISH) return;
  while (c->state == CL_OPEN && f->published < f->limit &&
         f->published - f->completed < d) {
    uint64_t seq = f->published++;
    struct in_flight_publish *slot = &f->ring[seq % d];
    compose(f, seq);
    slot->delivered = 0;
    slot->sent_ns = now_ns();
    client_send_bytes(c, f->p->ctx->opcode, f->msg, f->p->size);
    any = 1;
  }
  if (any) client_flush(c);
}

/* ======================================================================
 * The events of connections
 * ====================================================================== */

static int refuse(struct client *c, enum client_error kind,
                  const char *what) {
  client_fail(c, kind, what);
  return -1;
}

/* A subscriber's first message must be "ok"; then publish k is its
 * k-th message after that, byte for byte. */
static int sub_data(struct fanout *f, struct client *c, const uint8_t *p,
                    size_t n) {
  size_t pos = c->msg_pos, size = f->p->size;
  if (c->received == 0) {
    if (c->msg_op != 1 || pos + n > 2 || memcmp("ok" + pos, p, n) != 0)
      return refuse(c, ERR_PROTOCOL, "answer to sub is not \"ok\"");
    return 0;
  }
  uint64_t seq = c->received - 1;
  if (c->msg_op != f->p->ctx->opcode)
    return refuse(c, ERR_VERIFY, "a delivery of another opcode");
  if (pos + n > size)
    return refuse(c, ERR_VERIFY, "delivery longer than published");
  if (pos < FANOUT_SEQ_DIGITS) {
    char want[FANOUT_SEQ_DIGITS], why[96];
    size_t k = FANOUT_SEQ_DIGITS - pos < n ? FANOUT_SEQ_DIGITS - pos : n;
    seq_digits(want, seq);
    if (memcmp(want + pos, p, k) != 0) {
      snprintf(why, sizeof why, "lost, repeated or reordered: publish "
               "%.8s expected, got %.*s", want, (int)k, (const char *)p);
      return refuse(c, ERR_VERIFY, why);
    }
    pos += k;
    p += k;
    n -= k;
  }
  if (seq >= f->published)
    return refuse(c, ERR_VERIFY, "a delivery nobody published yet");
  if (n && memcmp(body(f, seq) + pos - FANOUT_SEQ_DIGITS, p, n) != 0)
    return refuse(c, ERR_VERIFY, "delivery differs from published");
  return 0;
}

static int on_data(struct client *c, const uint8_t *p, size_t n) {
  struct fanout *f = c->ctx->user;
  if (c != &f->pub) return sub_data(f, c, p, n);
  if (f->pub_ready)
    return refuse(c, ERR_VERIFY, "a message to the publisher");
  if (c->msg_pos + n >= REPLY_MAX)
    return refuse(c, ERR_PROTOCOL, "answer to pub too long");
  memcpy(f->reply + c->msg_pos, p, n);
  return 0;
}

static void pub_answered(struct fanout *f, struct client *c) {
  char *end;
  f->reply[c->msg_pos] = '\0';
  if (c->msg_op != 1 || strncmp(f->reply, "ok ", 3) != 0 ||
      (f->server_count = strtol(f->reply + 3, &end, 10)) < 0 || *end) {
    client_fail(c, ERR_PROTOCOL, "answer to pub is not \"ok N\"");
    return;
  }
  f->pub_ready = 1;
  f->pending--;
}

static void on_message(struct client *c, uint64_t rtt_ns) {
  struct fanout *f = c->ctx->user;
  (void)rtt_ns;
  if (c == &f->pub) {
    pub_answered(f, c);
    return;
  }
  if (c->received == 1) {       /* "ok" */
    if (c->msg_pos != 2) {
      client_fail(c, ERR_PROTOCOL, "answer to sub is not \"ok\"");
      return;
    }
    f->subscribed++;
    f->live++;
    f->pending--;
    return;
  }
  if (c->msg_pos != f->p->size) {
    client_fail(c, ERR_VERIFY, "delivery shorter than published");
    return;
  }
  uint64_t seq = c->received - 2, now = now_ns();
  struct in_flight_publish *slot = &f->ring[seq % (uint64_t)f->p->depth];
  slot->delivered++;
  f->deliveries++;
  f->progress_ns = now;
  if (f->recording) hist_add(f->p->hist, now - slot->sent_ns);
  if (seq == f->completed) {
    advance(f);
    publish_more(f);
  }
}

static void on_open(struct client *c) {
  struct fanout *f = c->ctx->user;
  send_command(c, c == &f->pub ? "pub" : "sub");
}

static void on_done(struct client *c, int ok) {
  struct fanout *f = c->ctx->user;
  (void)ok;
  f->active--;
  if (c == &f->pub) {
    if (!f->pub_ready) f->pending--;
  } else if (c->received == 0) {
    f->pending--;               /* failed before it subscribed */
  } else if (f->phase != FP_CLOSE) {
    f->live--;                  /* lost: the rest go on without it */
    advance(f);
    publish_more(f);
  }
}

static const struct client_events events = {
  on_open, on_message, on_done, on_data
};

/* ======================================================================
 * The loop
 * ====================================================================== */

static void start(struct fanout *f, struct client *c) {
  f->pending++;
  f->active++;
  client_start(c, f->p->ctx);
}

/* Deliveries have stopped with publishes in flight: say which. */
static int stalled(struct fanout *f, uint64_t now) {
  if ((f->phase != FP_PUBLISH && f->phase != FP_DRAIN) ||
      f->completed == f->published ||
      now - f->progress_ns < (uint64_t)STALL_LIMIT * 1000000000u)
    return 0;
  f->p->ctx->errors[ERR_TIMEOUT]++;
  fprintf(stderr, "loadgen: fanout: publish %llu has reached %zu of %zu "
          "subscribers, and nothing was delivered for %d s\n",
          (unsigned long long)f->completed,
          f->ring[f->completed % (uint64_t)f->p->depth].delivered,
          f->live, STALL_LIMIT);
  return 1;
}

/* Serve events until `until` (ns) or until done(f) says so; -1 at the
 * run's limit, on a signal or when deliveries have stalled. */
static int serve(struct fanout *f, uint64_t until,
                 int (*done)(const struct fanout *)) {
  const struct fanout_params *p = f->p;
  for (;;) {
    if (done && done(f)) return 0;
    uint64_t now = now_ns();
    if (*p->interrupted || now >= p->deadline || stalled(f, now))
      return -1;
    if (now >= until) return 0;
    uint64_t wake = until < p->deadline ? until : p->deadline;
    int ms = (int)((wake - now) / 1000000) + 1;
    if (ms > 100) ms = 100;
    if (clients_wait(p->ctx, ms) != 0) return -1;
  }
}

static int settled(const struct fanout *f) {
  return f->pending == 0;
}

static int all_done(const struct fanout *f) {
  return f->active == 0;
}

/* publishing by count: all made and all delivered; by time: never
 * (unless the publisher or every subscriber is gone) */
static int finished(const struct fanout *f) {
  return f->pub.state != CL_OPEN || f->live == 0 ||
         (f->published == f->limit && f->completed == f->limit);
}

static int delivered(const struct fanout *f) {
  return f->pub.state != CL_OPEN || f->live == 0 ||
         f->completed == f->published;
}

/* Every subscriber upgraded and subscribed (or failed), `parallel` of
 * them under way at a time. */
static int open_subscribers(struct fanout *f) {
  const struct fanout_params *p = f->p;
  size_t next = 0;
  while (next < p->nsubs || f->pending > 0) {
    while (next < p->nsubs && f->pending < (size_t)p->parallel)
      start(f, &p->subs[next++]);
    if (serve(f, now_ns() + 50000000, settled) != 0) return -1;
  }
  return 0;
}

/* A subscriber still open must have had every publish. */
static void check_counts(struct fanout *f) {
  char why[96];
  for (size_t i = 0; i < f->p->nsubs; i++) {
    struct client *c = &f->p->subs[i];
    if (c->state != CL_OPEN || c->received == 0 ||
        c->received - 1 == f->published)
      continue;
    snprintf(why, sizeof why, "received %llu of %llu publishes",
             (unsigned long long)(c->received - 1),
             (unsigned long long)f->published);
    client_fail(c, ERR_VERIFY, why);
  }
}

static void close_all(struct fanout *f) {
  const struct fanout_params *p = f->p;
  f->phase = FP_CLOSE;
  clients_close(p->subs, p->nsubs, &f->pub);
  serve(f, now_ns() + (uint64_t)CLOSE_LIMIT * 1000000000u, all_done);
  clients_fail_unclosed(p->subs, p->nsubs, &f->pub);
}

/* ======================================================================
 * The test
 * ====================================================================== */

static void report(const struct fanout *f, uint64_t deliveries,
                   uint64_t publishes, double secs) {
  const struct fanout_params *p = f->p;
  const struct histogram *h = p->hist;
  double rate = secs > 0 ? (double)deliveries / secs : 0;
  double pubs = secs > 0 ? (double)publishes / secs : 0;
  double mbs = rate * (double)p->size / 1e6;
  const char *kind = payload_kind_name(p->ctx->payload->kind);
  const char *op = p->ctx->opcode == 1 ? "text" : "binary";
  printf("test=fanout label=%s subscribers=%zu depth=%ld size=%zu "
         "payload=%s opcode=%s server_subscribers=%ld seconds=%.3f "
         "publishes=%llu deliveries=%llu publishes_per_s=%.1f "
         "deliveries_per_s=%.1f mb_per_s=%.3f publishes_total=%llu "
         "deliveries_total=%llu p50_us=%.1f p99_us=%.1f p999_us=%.1f "
         "max_us=%.1f", p->label, f->subscribed, p->depth, p->size, kind,
         op, f->server_count, secs, (unsigned long long)publishes,
         (unsigned long long)deliveries, pubs, rate, mbs,
         (unsigned long long)f->published,
         (unsigned long long)f->deliveries,
         (double)hist_quantile(h, 0.5) / 1e3,
         (double)hist_quantile(h, 0.99) / 1e3,
         (double)hist_quantile(h, 0.999) / 1e3, (double)h->max / 1e3);
  if (p->quiet) return;
  fprintf(stderr, "fanout %s: 1 publisher -> %zu subscribers, D=%ld "
          "S=%zu %s %s: %.0f deliveries/s (%.0f publishes/s, %.2f MB/s "
          "delivered); publish to delivery p50 %.1f us, p99 %.1f us\n",
          p->label, f->subscribed, p->depth, p->size, kind, op, rate, pubs,
          mbs, (double)hist_quantile(h, 0.5) / 1e3,
          (double)hist_quantile(h, 0.99) / 1e3);
}

int fanout_run(struct fanout_params *p) {
  struct fanout f;
  uint64_t d0 = 0, d1 = 0, c0 = 0, c1 = 0;
  int rc = -1, measured;
  memset(&f, 0, sizeof f);
  f.p = p;
  f.server_count = -1;
  f.limit = p->messages ? p->messages : UINT64_MAX;
  f.pub.index = p->nsubs;
  f.pub.fd = -1;
  f.ring = calloc((size_t)p->depth, sizeof *f.ring);
  f.msg = malloc(p->size);
  p->ctx->events = &events;
  p->ctx->user = &f;
  p->ctx->depth = 1;            /* nothing is echoed: no rings */
  hist_reset(p->hist);
  cpu_sample(&p->a, p->pids, p->npids);
  p->b = p->a;
  if (!f.ring || !f.msg) {
    fprintf(stderr, "loadgen: fanout: out of memory\n");
    goto out;
  }
  if (open_subscribers(&f) != 0 || f.subscribed == 0) {
    fprintf(stderr, "loadgen: no measurement: %zu of %zu subscribers "
            "subscribed\n", f.subscribed, p->nsubs);
    goto out;
  }
  start(&f, &f.pub);
  if (serve(&f, p->deadline, settled) != 0 || !f.pub_ready) {
    fprintf(stderr, "loadgen: no measurement: the publisher did not "
            "start\n");
    goto out;
  }
  if ((size_t)f.server_count != f.subscribed)
    fprintf(stderr, "loadgen: fanout: the server counts %ld subscribers "
            "of %zu\n", f.server_count, f.subscribed);

  f.phase = FP_PUBLISH;
  f.progress_ns = now_ns();
  publish_more(&f);
  if (!p->messages &&
      serve(&f, now_ns() + (uint64_t)(p->warmup * 1e9), finished) != 0)
    goto out;
  cpu_sample(&p->a, p->pids, p->npids);
  hist_reset(p->hist);
  d0 = f.deliveries;
  c0 = f.completed;
  f.recording = 1;
  measured = p->messages
      ? serve(&f, p->deadline, finished)
      : serve(&f, now_ns() + (uint64_t)(p->duration * 1e9), finished);
  cpu_sample(&p->b, p->pids, p->npids);
  d1 = f.deliveries;
  c1 = f.completed;
  f.recording = 0;
  f.phase = FP_DRAIN;           /* what is in flight arrives */
  if (measured != 0 || serve(&f, p->deadline, delivered) != 0 ||
      f.pub.state != CL_OPEN || f.live == 0)
    goto out;
  rc = 0;
out:
  if (f.phase != FP_OPEN) check_counts(&f);
  close_all(&f);
  report(&f, d1 - d0, c1 - c0, (double)(p->b.t - p->a.t) / 1e9);
  client_free(&f.pub);
  free(f.ring);
  free(f.msg);
  return rc;
}
