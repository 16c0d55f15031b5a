/* recover.c - the load generator's recovery test: C clients of a topic
 * with history drop at once and come back with the positions they last
 * saw while a publisher goes on; each checks that its offsets run on
 * exactly from its position, through the missed messages and the live
 * ones to the last published: no gap, no duplicate, one epoch */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recover.h"

/* The protocol of bench/apps/recovery.lua at /ws, in text messages:
 *   "since -"    -> "welcome <recovered> <epoch>:<offset>": subscribed
 *                   to the room, which is at that position
 *   "since E:O"  -> the room's messages after O, then the welcome
 *   "pub N"      -> "pub E:O": N messages published, O the last one's
 * A message of the room is "<epoch>:<offset> " (16 hex digits) and then
 * BODY_SIZE bytes of 'x'.  Nothing else publishes to the room. */
#define EPOCH_DIGITS 16
#define BODY_SIZE 64
#define MSG_MAX 128             /* longer messages are refused */
#define PUB_DEPTH 16            /* "pub" commands in flight */
#define PUB_BATCH 4             /* messages per "pub" command, at most */
#define STALL_LIMIT 10          /* seconds without progress: give up */
#define CLOSE_LIMIT 10          /* seconds for every closing handshake */

enum recover_phase {
  RP_OPEN,                      /* the publisher, then every client */
  RP_PUBLISH,                   /* until each has `window` live messages */
  RP_RECOVER,                   /* all dropped and coming back */
  RP_TAIL,                      /* all back the last time: `tail` more
                                   publishes */
  RP_DRAIN,                     /* no more: the last ones arrive */
  RP_CLOSE
};

/* What one client has seen. */
enum watch_state {
  WS_FIRST,                     /* first connection, before its welcome */
  WS_LIVE,                      /* subscribed, receiving */
  WS_BACK,                      /* reconnected with since: the missed
                                   messages, then the welcome */
  WS_RECOVERED,                 /* welcomed back, recovered = true */
  WS_FAILED
};

static const char *const state_names[] = {
  "first", "live", "back", "recovered", "failed"
};

struct watch {
  uint64_t last;                /* the offset it has got to */
  uint64_t since;               /* the position it came back with */
  uint8_t state;
  uint8_t counted;              /* in at[] by last (live), or in away[]
                                   by since (back): it holds the
                                   publisher back */
  char msg[MSG_MAX];            /* the message being read */
};

struct recover {
  struct recover_params *p;
  struct client pub;            /* the publisher */
  struct watch *w;              /* one per client */
  enum recover_phase phase;
  char epoch[EPOCH_DIGITS + 1];
  int have_epoch;
  int drained;                  /* every client had the last message */
  char first_failure[256];
  /* the clients */
  size_t pending;               /* first opening: started, not welcomed */
  size_t active;                /* started, not yet done */
  size_t back;                  /* dropped, not yet welcomed back */
  size_t failed;
  int drop_due;                 /* drop all once the events are served */
  int dropping;                 /* the drops are deliberate */
  size_t next_back;             /* the next client to start again */
  size_t returning;             /* started again, not yet welcomed */
  /* what holds the publisher back */
  uint32_t *at;                 /* live clients whose last is offset o,
                                   at o & mask */
  uint32_t *away;               /* clients coming back with since o */
  uint64_t mask;
  size_t live, away_count;      /* clients in at[], in away[] */
  uint64_t floor;               /* no live client is before it */
  uint64_t away_floor;          /* no client coming back has a since
                                   before it */
  double credit;                /* --rate: messages it may publish now */
  uint64_t burst_left;          /* of a drop's burst, still to ask for */
  uint64_t credit_ns;           /* when credit was last added to */
  /* the publisher */
  uint64_t base;                /* the room's offset before the round */
  uint64_t asked;               /* the last offset asked for */
  uint64_t made;                /* the last offset the publisher was
                                   answered */
  uint64_t limit;               /* ask no further than this */
  uint64_t cmd_last[PUB_DEPTH]; /* each command's last offset, FIFO */
  unsigned cmd_head, cmd_count;
  char reply[MSG_MAX];          /* the publisher's answer */
  /* the figures */
  long round;                   /* drops so far */
  uint64_t made_at_drop, during;  /* publishes while clients were away */
  uint64_t drop_ns, back_ns, progress_ns;  /* back_ns: the rounds' sum */
  uint64_t deliveries, missed_sum, missed_max;
  size_t overlapped;            /* recoveries of messages published
                                   after the drop */
  size_t amid;                  /* welcomes read while publishes were
                                   under way */
};

/* ======================================================================
 * Failures
 * ====================================================================== */

static size_t index_of(const struct recover *f, const struct client *c) {
  return (size_t)(c - f->p->subs);
}

/* Fail c with a message naming what it had seen; the first such
 * message is the run's verdict. */
static int refuse(struct recover *f, struct client *c,
                  enum client_error kind, const char *fmt, ...) {
  char why[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  if (!f->first_failure[0]) {
    if (c == &f->pub) {
      snprintf(f->first_failure, sizeof f->first_failure,
               "the publisher: %s", why);
    } else {
      const struct watch *w = &f->w[index_of(f, c)];
      snprintf(f->first_failure, sizeof f->first_failure,
               "client %zu (%s, since %llu, last %llu): %s",
               index_of(f, c), state_names[w->state],
               (unsigned long long)w->since, (unsigned long long)w->last,
               why);
    }
  }
  client_fail(c, kind, why);
  return -1;
}

/* ======================================================================
 * How far the publisher may go: the lowest offset of a live client, and
 * the lowest position a client comes back with
 * ====================================================================== */

static void publish_more(struct recover *f);

static void raise_floor(struct recover *f) {
  while (f->live && f->at[f->floor & f->mask] == 0) f->floor++;
  while (f->away_count && f->away[f->away_floor & f->mask] == 0)
    f->away_floor++;
}

/* A client live at its last offset (which may be behind the others) */
static void count_live(struct recover *f, struct watch *w) {
  if (f->live++ == 0 || w->last < f->floor) f->floor = w->last;
  f->at[w->last & f->mask]++;
  w->counted = 1;
}

/* A client coming back with since */
static void count_away(struct recover *f, struct watch *w) {
  if (f->away_count++ == 0 || w->since < f->away_floor)
    f->away_floor = w->since;
  f->away[w->since & f->mask]++;
  w->counted = 1;
}

static void count_out(struct recover *f, struct watch *w) {
  if (!w->counted) return;
  if (w->state == WS_BACK) {
    f->away[w->since & f->mask]--;
    f->away_count--;
  } else {
    f->at[w->last & f->mask]--;
    f->live--;
  }
  w->counted = 0;
  raise_floor(f);
}

static void move_to(struct recover *f, struct watch *w, uint64_t offset) {
  if (w->counted && w->state != WS_BACK) {
    f->at[w->last & f->mask]--;
    f->at[offset & f->mask]++;
  }
  w->last = offset;
  raise_floor(f);
}

/* ======================================================================
 * The publisher
 * ====================================================================== */

static void send_text(struct client *c, const char *fmt, ...) {
  char line[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  client_send_bytes(c, 1, (const uint8_t *)line, (size_t)n);
}

/* Keep PUB_DEPTH commands in flight, never more than `window` messages
 * ahead of the slowest live client (nor, with --rate, ahead of the
 * pace), nor `lead` ahead of the position a client comes back with, nor
 * past the limit; a drop's burst goes out regardless of the first two. */
static void publish_more(struct recover *f) {
  struct client *c = &f->pub;
  uint64_t hard_end = f->limit, from = f->asked;
  if (f->phase < RP_PUBLISH || f->phase > RP_TAIL) return;
  if (f->away_count && f->away_floor + (uint64_t)f->p->lead < hard_end)
    hard_end = f->away_floor + (uint64_t)f->p->lead;
  uint64_t paced_end = hard_end;
  if (f->live && f->floor + (uint64_t)f->p->window < paced_end)
    paced_end = f->floor + (uint64_t)f->p->window;
  if (f->p->rate > 0) {         /* credit for the time gone by, at most
                                   10 ms of it (no rush after a wait) */
    uint64_t now = now_ns();
    double cap = f->p->rate / 100.0 > 1 ? f->p->rate / 100.0 : 1;
    f->credit += (double)(now - f->credit_ns) * f->p->rate / 1e9;
    if (f->credit > cap) f->credit = cap;
    f->credit_ns = now;
    if (f->asked + (uint64_t)f->credit < paced_end)
      paced_end = f->asked + (uint64_t)f->credit;
  }
  uint64_t end = f->asked + f->burst_left < hard_end
                     ? f->asked + f->burst_left : hard_end;
  if (paced_end > end) end = paced_end;
  while (c->state == CL_OPEN && f->cmd_count < PUB_DEPTH &&
         f->asked < end) {
    uint64_t k = end - f->asked;
    if (k > PUB_BATCH) k = PUB_BATCH;
    f->asked += k;
    f->cmd_last[(f->cmd_head + f->cmd_count++) % PUB_DEPTH] = f->asked;
    send_text(c, "pub %u", (unsigned)k);
  }
  uint64_t n = f->asked - from;
  if (n == 0) return;
  uint64_t of_burst = n < f->burst_left ? n : f->burst_left;
  f->burst_left -= of_burst;
  f->credit -= (double)(n - of_burst);
  client_flush(c);
}

/* "<16 hex digits>:<offset>" at s: the offset, and the end in *end;
 * -1 when it is not that or of another epoch than the run's. */
static int parse_position(struct recover *f, const char *s,
                          uint64_t *offset, const char **end) {
  const char *p = s + EPOCH_DIGITS;
  uint64_t v = 0;
  for (int i = 0; i < EPOCH_DIGITS; i++)
    if (!s[i] || !strchr("0123456789abcdef", s[i])) return -1;
  if (*p++ != ':' || *p < '0' || *p > '9') return -1;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (v > (UINT64_MAX - 9) / 10) return -1;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  if (!f->have_epoch) {
    memcpy(f->epoch, s, EPOCH_DIGITS);
    f->epoch[EPOCH_DIGITS] = '\0';
    f->have_epoch = 1;
  } else if (memcmp(f->epoch, s, EPOCH_DIGITS) != 0) {
    return -1;
  }
  *offset = v;
  *end = p;
  return 0;
}

static void all_back(struct recover *f);

static void pub_answer(struct recover *f, struct client *c) {
  uint64_t offset;
  const char *end;
  if (strncmp(f->reply, "pub ", 4) != 0 ||
      parse_position(f, f->reply + 4, &offset, &end) != 0 || *end) {
    refuse(f, c, ERR_PROTOCOL, "answer to pub is not \"pub %s:N\": %.60s",
           f->have_epoch ? f->epoch : "EPOCH", f->reply);
    return;
  }
  f->progress_ns = now_ns();
  if (f->phase == RP_OPEN) {    /* "pub 1": the room's epoch, its start */
    f->base = f->floor = f->away_floor = f->asked = f->made = offset;
    return;
  }
  if (f->cmd_count == 0 || offset != f->cmd_last[f->cmd_head]) {
    refuse(f, c, ERR_VERIFY, "publishes were given %llu, not %llu",
           (unsigned long long)offset,
           (unsigned long long)(f->cmd_count ? f->cmd_last[f->cmd_head]
                                             : 0));
    return;
  }
  f->cmd_head = (f->cmd_head + 1) % PUB_DEPTH;
  f->cmd_count--;
  f->made = offset;
  if (f->phase == RP_TAIL && f->made == f->limit && f->cmd_count == 0)
    f->phase = RP_DRAIN;
  publish_more(f);
}

/* ======================================================================
 * The clients
 * ====================================================================== */

/* Every client had `window` live messages: all drop, as a network
 * failure would drop them, and come back at once with their positions;
 * the publisher goes on. */
static void drop_all(struct recover *f) {
  const struct recover_params *p = f->p;
  f->phase = RP_RECOVER;
  f->made_at_drop = f->made;
  if (f->round++ == 0) {
    cpu_sample(&f->p->a, p->pids, p->npids);
    for (int i = 0; i < p->npids && i < RECOVER_PIDS; i++)
      f->p->pid_cpu[i] = -pids_cpu_seconds(&p->pids[i], 1);
  }
  f->drop_ns = now_ns();
  f->burst_left = (uint64_t)p->burst;
  f->dropping = 1;
  for (size_t i = 0; i < p->nsubs; i++) {
    struct watch *w = &f->w[i];
    if (w->state != WS_LIVE && w->state != WS_RECOVERED) continue;
    count_out(f, w);
    w->since = w->last;
    w->state = WS_BACK;
    count_away(f, w);
    f->back++;
    client_abort(&p->subs[i]);
  }
  f->dropping = 0;
  f->next_back = f->returning = 0;
  if (f->back == 0) all_back(f);
}

/* Start dropped clients again, `parallel` upgrades under way at once:
 * more at once would overflow the kernel's listen queue (somaxconn),
 * whose dropped SYNs are sent again only a second later. */
static void come_back(struct recover *f) {
  const struct recover_params *p = f->p;
  while (f->phase == RP_RECOVER && f->next_back < p->nsubs &&
         f->returning < (size_t)p->parallel) {
    size_t i = f->next_back++;
    if (f->w[i].state != WS_BACK) continue;
    f->returning++;
    f->active++;
    client_start(&p->subs[i], p->ctx);
  }
}

/* Every client is back (or failed): another round once each has had
 * `window` live messages, or after the last round `tail` more. */
static void all_back(struct recover *f) {
  f->back_ns += now_ns() - f->drop_ns;
  f->during += f->made - f->made_at_drop;
  if (f->round < f->p->rounds) {
    f->base = f->asked;
    f->phase = RP_PUBLISH;
    publish_more(f);
    return;
  }
  cpu_sample(&f->p->b, f->p->pids, f->p->npids);
  for (int i = 0; i < f->p->npids && i < RECOVER_PIDS; i++)
    f->p->pid_cpu[i] += pids_cpu_seconds(&f->p->pids[i], 1);
  f->limit = f->asked + f->p->tail;
  f->phase = RP_TAIL;
  if (f->made == f->limit && f->cmd_count == 0) f->phase = RP_DRAIN;
  publish_more(f);
}

static void welcome(struct recover *f, struct client *c, struct watch *w,
                    const char *m) {
  uint64_t offset;
  const char *end, *pos = NULL;
  int recovered = -1;
  if (strncmp(m, "welcome true ", 13) == 0) recovered = 1, pos = m + 13;
  if (strncmp(m, "welcome false ", 14) == 0) recovered = 0, pos = m + 14;
  if (!pos || parse_position(f, pos, &offset, &end) != 0 || *end) {
    refuse(f, c, ERR_PROTOCOL, "not a welcome of epoch %s: %.60s",
           f->epoch, m);
    return;
  }
  if (w->state == WS_FIRST) {
    if (offset != f->made) {
      refuse(f, c, ERR_VERIFY, "welcome at %llu, the room is at %llu",
             (unsigned long long)offset, (unsigned long long)f->made);
      return;
    }
    w->last = offset;
    w->state = WS_LIVE;
    count_live(f, w);
    f->pending--;
    return;
  }
  if (w->state != WS_BACK) {
    refuse(f, c, ERR_PROTOCOL, "a second welcome: %.60s", m);
    return;
  }
  /* the missed messages came before the welcome, up to its position */
  if (recovered != 1 || offset != w->last) {
    refuse(f, c, ERR_VERIFY, "welcome %s at %llu after the messages up "
           "to %llu", recovered ? "true" : "false",
           (unsigned long long)offset, (unsigned long long)w->last);
    return;
  }
  uint64_t missed = offset - w->since, now = now_ns();
  f->progress_ns = now;
  count_out(f, w);
  w->state = WS_RECOVERED;
  count_live(f, w);
  f->returning--;
  f->missed_sum += missed;
  if (missed > f->missed_max) f->missed_max = missed;
  if (offset > f->made_at_drop) f->overlapped++;
  if (f->cmd_count > 0) f->amid++;
  hist_add(f->p->hist, now - f->drop_ns);
  if (--f->back == 0) all_back(f);
}

/* A message of the room: the next offset after the client's last, of
 * the run's epoch, with its body. */
static void delivery(struct recover *f, struct client *c, struct watch *w,
                     const char *m, size_t len) {
  uint64_t offset;
  const char *end;
  if (parse_position(f, m, &offset, &end) != 0 || *end != ' ') {
    refuse(f, c, ERR_VERIFY, "not a message of epoch %s: %.60s",
           f->epoch, m);
    return;
  }
  size_t body = len - (size_t)(end + 1 - m);
  for (size_t i = 0; i < body; i++)
    if (end[1 + i] != 'x') body = 0;
  if (body != BODY_SIZE) {
    refuse(f, c, ERR_VERIFY, "message %llu: not %d bytes of x after the "
           "position", (unsigned long long)offset, BODY_SIZE);
    return;
  }
  if (w->state == WS_FIRST) {
    refuse(f, c, ERR_VERIFY, "message %llu before the welcome",
           (unsigned long long)offset);
    return;
  }
  if (offset != w->last + 1) {
    refuse(f, c, ERR_VERIFY, "%s: message %llu after %llu",
           offset <= w->last ? "a duplicate" : "a gap",
           (unsigned long long)offset, (unsigned long long)w->last);
    return;
  }
  if (offset > f->asked) {
    refuse(f, c, ERR_VERIFY, "message %llu: only %llu were published",
           (unsigned long long)offset, (unsigned long long)f->asked);
    return;
  }
  f->deliveries++;
  f->progress_ns = now_ns();
  move_to(f, w, offset);
  /* not from inside this client's callback: serve() drops them */
  if (f->phase == RP_PUBLISH &&
      f->floor >= f->base + (uint64_t)f->p->window)
    f->drop_due = 1;
  publish_more(f);
}

/* ======================================================================
 * The events of connections
 * ====================================================================== */

static int on_data(struct client *c, const uint8_t *p, size_t n) {
  struct recover *f = c->ctx->user;
  char *buf = c == &f->pub ? f->reply : f->w[index_of(f, c)].msg;
  if (c->msg_pos + n >= MSG_MAX)
    return refuse(f, c, ERR_PROTOCOL, "a message of %zu bytes or more",
                  (size_t)MSG_MAX);
  memcpy(buf + c->msg_pos, p, n);
  return 0;
}

static void on_message(struct client *c, uint64_t rtt_ns) {
  struct recover *f = c->ctx->user;
  (void)rtt_ns;
  if (c->msg_op != 1) {
    refuse(f, c, ERR_PROTOCOL, "a binary message");
    return;
  }
  if (c == &f->pub) {
    f->reply[c->msg_pos] = '\0';
    pub_answer(f, c);
    return;
  }
  struct watch *w = &f->w[index_of(f, c)];
  w->msg[c->msg_pos] = '\0';
  if (strncmp(w->msg, "welcome ", 8) == 0) welcome(f, c, w, w->msg);
  else delivery(f, c, w, w->msg, c->msg_pos);
}

static void on_open(struct client *c) {
  struct recover *f = c->ctx->user;
  if (c == &f->pub) {
    send_text(c, "pub 1");
    return;
  }
  struct watch *w = &f->w[index_of(f, c)];
  if (w->state == WS_FIRST) send_text(c, "since -");
  else send_text(c, "since %s:%llu", f->epoch,
                 (unsigned long long)w->since);
}

static void on_done(struct client *c, int ok) {
  struct recover *f = c->ctx->user;
  f->active--;
  if (f->dropping || f->phase == RP_CLOSE) return;
  if (c == &f->pub) {
    if (!f->first_failure[0])
      snprintf(f->first_failure, sizeof f->first_failure,
               "the publisher's connection %s", ok ? "ended" : "failed");
    return;
  }
  struct watch *w = &f->w[index_of(f, c)];
  if (!f->first_failure[0])
    snprintf(f->first_failure, sizeof f->first_failure,
             "client %zu (%s, since %llu, last %llu): its connection "
             "failed (the error above)", index_of(f, c),
             state_names[w->state], (unsigned long long)w->since,
             (unsigned long long)w->last);
  enum watch_state was = (enum watch_state)w->state;
  count_out(f, w);
  w->state = WS_FAILED;
  f->failed++;
  if (was == WS_FIRST) f->pending--;
  if (was == WS_BACK) f->returning--;   /* only a started one fails */
  if (was == WS_BACK && --f->back == 0) all_back(f);
  else publish_more(f);
}

static const struct client_events events = {
  on_open, on_message, on_done, on_data
};

/* ======================================================================
 * The loop
 * ====================================================================== */

/* Nothing has moved for STALL_LIMIT s: say who is behind. */
static int stalled(struct recover *f, uint64_t now) {
  char why[256] = "nothing moved";
  if (f->phase == RP_OPEN || f->phase == RP_CLOSE ||
      now - f->progress_ns < (uint64_t)STALL_LIMIT * 1000000000u)
    return 0;
  f->p->ctx->errors[ERR_TIMEOUT]++;
  for (size_t i = 0; i < f->p->nsubs; i++) {
    const struct watch *w = &f->w[i];
    if (w->state == WS_FAILED || (w->last > f->floor &&
                                  w->state != WS_BACK))
      continue;
    snprintf(why, sizeof why, "client %zu (%s, since %llu, last %llu): "
             "nothing moved for %d s; %llu asked, %llu published", i,
             state_names[w->state], (unsigned long long)w->since,
             (unsigned long long)w->last, STALL_LIMIT,
             (unsigned long long)f->asked, (unsigned long long)f->made);
    break;
  }
  if (!f->first_failure[0])
    snprintf(f->first_failure, sizeof f->first_failure, "%s", why);
  fprintf(stderr, "loadgen: recover: %s\n", why);
  return 1;
}

/* Serve events until `until` (ns) or until done(f) says so; -1 at the
 * run's limit, on a signal, when nothing moves or the publisher is
 * gone. */
static int serve(struct recover *f, uint64_t until,
                 int (*done)(const struct recover *)) {
  const struct recover_params *p = f->p;
  for (;;) {
    if (done && done(f)) return 0;
    uint64_t now = now_ns();
    if (*p->interrupted || now >= p->deadline || stalled(f, now) ||
        (f->phase != RP_CLOSE && f->pub.state == CL_DONE) ||
        (f->phase != RP_OPEN && f->failed == p->nsubs))
      return -1;
    if (now >= until) return 0;
    uint64_t wake = until < p->deadline ? until : p->deadline;
    int ms = (int)((wake - now) / 1000000) + 1;
    if (ms > 100) ms = 100;
    if (p->rate > 0) ms = 1;    /* a paced publisher's next step */
    if (clients_wait(p->ctx, ms) != 0) return -1;
    if (f->drop_due) {
      f->drop_due = 0;
      drop_all(f);
    }
    come_back(f);
    if (p->rate > 0) publish_more(f);
  }
}

static int has_epoch(const struct recover *f) {
  return f->have_epoch;
}

static int settled(const struct recover *f) {
  return f->pending == 0;
}

static int drained(const struct recover *f) {
  return f->phase == RP_DRAIN && (f->live == 0 || f->floor == f->limit);
}

static int all_done(const struct recover *f) {
  return f->active == 0;
}

static void start(struct recover *f, struct client *c) {
  f->active++;
  client_start(c, f->p->ctx);
}

/* Every client upgraded and subscribed (or failed), `parallel` of them
 * under way at a time. */
static int open_clients(struct recover *f) {
  const struct recover_params *p = f->p;
  size_t next = 0;
  while (next < p->nsubs || f->pending > 0) {
    while (next < p->nsubs && f->pending < (size_t)p->parallel) {
      f->pending++;
      start(f, &p->subs[next++]);
    }
    if (serve(f, now_ns() + 50000000, settled) != 0) return -1;
  }
  return f->failed ? -1 : 0;
}

static void close_all(struct recover *f) {
  const struct recover_params *p = f->p;
  f->phase = RP_CLOSE;
  clients_close(p->subs, p->nsubs, &f->pub);
  serve(f, now_ns() + (uint64_t)CLOSE_LIMIT * 1000000000u, all_done);
  clients_fail_unclosed(p->subs, p->nsubs, &f->pub);
}

/* Each client must have recovered and reached the last offset. */
static size_t verdicts(struct recover *f) {
  size_t ok = 0;
  for (size_t i = 0; i < f->p->nsubs; i++) {
    const struct watch *w = &f->w[i];
    if (w->state == WS_RECOVERED && w->last == f->limit &&
        f->phase == RP_DRAIN) {
      ok++;
    } else if (!f->first_failure[0]) {
      snprintf(f->first_failure, sizeof f->first_failure,
               "client %zu (%s, since %llu, last %llu): the run ended "
               "before it had every message up to %llu", i,
               state_names[w->state], (unsigned long long)w->since,
               (unsigned long long)w->last, (unsigned long long)f->asked);
    }
  }
  return ok;
}

/* ======================================================================
 * The test
 * ====================================================================== */

static double ms_at(const struct histogram *h, double q) {
  return (double)hist_quantile(h, q) / 1e6;
}

static void report(const struct recover *f, size_t ok) {
  const struct recover_params *p = f->p;
  const struct histogram *h = p->hist;
  size_t n = (size_t)h->count;
  double all_s = f->round ? (double)f->back_ns / 1e9 / (double)f->round
                          : 0;
  double missed_mean = n ? (double)f->missed_sum / (double)n : 0;
  printf("test=recover label=%s clients=%zu ok=%zu rounds=%ld window=%ld "
         "tail=%llu final=%llu recovered=%zu seconds=%.3f first_ms=%.1f "
         "half_ms=%.1f p99_ms=%.1f all_ms=%.1f missed_mean=%.1f "
         "missed_max=%llu publishes_during=%llu overlapped=%zu amid=%zu "
         "deliveries=%llu", p->label, p->nsubs, ok, f->round, p->window,
         (unsigned long long)p->tail, (unsigned long long)f->asked, n,
         all_s, ms_at(h, 0), ms_at(h, 0.5), ms_at(h, 0.99),
         (double)h->max / 1e6, missed_mean,
         (unsigned long long)f->missed_max, (unsigned long long)f->during,
         f->overlapped, f->amid, (unsigned long long)f->deliveries);
  /* each server process's CPU seconds over the recovery (the sum is
   * server_cpu, in percent) */
  printf(" pid_cpu_s=");
  for (int i = 0; i < p->npids && i < RECOVER_PIDS; i++)
    printf("%s%.2f", i ? "," : "", p->pid_cpu[i]);
  if (p->quiet && ok == p->nsubs) return;
  fprintf(stderr, "recover %s: %zu of %zu clients recovered exactly (no "
          "gap, no duplicate, epoch %s) and had every message to %llu%s\n",
          p->label, ok, p->nsubs, f->have_epoch ? f->epoch : "unknown",
          (unsigned long long)f->asked,
          f->drained ? "" : ", published so far");
  if (ok != p->nsubs)
    fprintf(stderr, "  first failure: %s\n", f->first_failure);
  if (p->quiet) return;
  fprintf(stderr, "  %ld time%s all dropped at once and came back: all "
          "recovered in %.3f s%s (first %.1f ms, half %.1f ms, 99%% %.1f "
          "ms); each missed %.1f messages (at most %llu); %llu publishes "
          "meanwhile; %zu recoveries had messages published after the "
          "drop, %zu were answered while publishes were under way; %llu "
          "deliveries in all\n", f->round,
          f->round == 1 ? "" : "s", all_s, f->round > 1 ? " a round" : "",
          ms_at(h, 0), ms_at(h, 0.5), ms_at(h, 0.99), missed_mean,
          (unsigned long long)f->missed_max, (unsigned long long)f->during,
          f->overlapped, f->amid, (unsigned long long)f->deliveries);
}

int recover_run(struct recover_params *p) {
  struct recover f;
  size_t ring = 2, ok = 0;
  int rc = -1;
  memset(&f, 0, sizeof f);
  f.p = p;
  f.limit = UINT64_MAX;
  f.pub.index = p->nsubs;
  f.pub.fd = -1;
  while (ring < (size_t)(p->window > p->lead ? p->window : p->lead) + 1)
    ring *= 2;
  f.mask = ring - 1;
  f.at = calloc(ring, sizeof *f.at);
  f.away = calloc(ring, sizeof *f.away);
  f.w = calloc(p->nsubs, sizeof *f.w);
  p->ctx->events = &events;
  p->ctx->user = &f;
  p->ctx->depth = 1;            /* nothing is echoed: no rings */
  hist_reset(p->hist);
  cpu_sample(&p->a, p->pids, p->npids);
  p->b = p->a;
  if (!f.at || !f.away || !f.w) {
    fprintf(stderr, "loadgen: recover: out of memory\n");
    goto out;
  }
  start(&f, &f.pub);
  if (serve(&f, p->deadline, has_epoch) != 0) {
    fprintf(stderr, "loadgen: recover: the publisher did not start: %s\n",
            f.first_failure);
    goto out;
  }
  if (open_clients(&f) != 0) {
    fprintf(stderr, "loadgen: recover: %zu of %zu clients failed to "
            "subscribe: %s\n", f.failed, p->nsubs, f.first_failure);
    goto out;
  }
  f.phase = RP_PUBLISH;
  f.progress_ns = f.credit_ns = now_ns();
  publish_more(&f);
  if (serve(&f, p->deadline, drained) == 0) rc = 0, f.drained = 1;
out:
  ok = verdicts(&f);
  if (ok != p->nsubs) rc = -1;
  close_all(&f);
  report(&f, ok);
  client_free(&f.pub);
  free(f.at);
  free(f.away);
  free(f.w);
  return rc;
}
