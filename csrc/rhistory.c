/* rhistory.c - topic history kept in Redis Streams: Redis gives each
 * message its position, and every node keeps and delivers the messages
 * in Redis's order as they come back through the backplane */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "events.h"
#include "frame.h"
#include "history.h"
#include "log.h"
#include "rhistory.h"
#include "server.h"
#include "topic.h"
#include "utf8.h"

/* A message of a topic with history on the backplane's channel:
 *   byte 0      WIRE_HISTORY (the plain ones are version 1)
 *   byte 1      the opcode: 1 text, 2 binary
 *   bytes 2-9   the publishing process (random per process)
 *   bytes 10-17 its request number
 *   then the envelope "<epoch>:<offset> " Redis wrote, then the data. */
#define WIRE_HISTORY 2
#define HIST_HEADER 18

#define WAIT_MAX 5.0            /* s: for the answer and the message */
#define FETCHES_MAX 64          /* recovery reads under way at once: each
                                   may bring a topic's whole history */
#define COMMAND_OVERHEAD 256    /* bytes an EVAL adds to its data */

/* One script, so that the position, the stream entry and the message
 * are one step in Redis: the messages of a topic reach every node in
 * the order of their positions.  KEYS: the position hash, the stream.
 * ARGV: the epoch to begin with, size, ttl in ms, the opcode, the
 * channel, the data, the header.  A lost hash (evicted, expired) begins
 * a new epoch and the stream anew. */
static const char SCRIPT[] =
  "local epoch = redis.call('HGET', KEYS[1], 'epoch')\n"
  "if not epoch then\n"
  "  epoch = ARGV[1]\n"
  "  redis.call('DEL', KEYS[2])\n"
  "  redis.call('HSET', KEYS[1], 'epoch', epoch)\n"
  "end\n"
  "local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)\n"
  "local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',\n"
  "  'o', offset, 'k', ARGV[4], 'd', ARGV[6])\n"
  "local ttl = tonumber(ARGV[3])\n"
  "if ttl > 0 then\n"
  "  local ms = tonumber(string.match(id, '^%d+'))\n"
  "  redis.call('XTRIM', KEYS[2], 'MINID', '~', ms - ttl)\n"
  "  redis.call('PEXPIRE', KEYS[1], ttl)\n"
  "  redis.call('PEXPIRE', KEYS[2], ttl)\n"
  "end\n"
  "redis.call('PUBLISH', ARGV[5],\n"
  "  ARGV[7] .. epoch .. ':' .. string.format('%d', offset) .. ' ' ..\n"
  "  ARGV[6])\n"
  "return { epoch, offset }\n";

/* What a recovery asks for: the epoch, the position of the last
 * message, and the messages after ARGV[1] (newest first), when there
 * are at most ARGV[2] of them, none older than the ttl (ARGV[4], in ms:
 * MINID ~ trims whole nodes of the stream only, leaving older ones).  A
 * topic with no history in Redis begins its epoch here (ARGV[3]), as a
 * publish would: a subscriber to a topic nothing was published to gets
 * a position to come back from.  Whether the messages are all still
 * there the caller sees. */
static const char FETCH[] =
  "local epoch = redis.call('HGET', KEYS[1], 'epoch')\n"
  "if not epoch then\n"
  "  epoch = ARGV[3]\n"
  "  redis.call('DEL', KEYS[2])\n"
  "  redis.call('HSETNX', KEYS[1], 'epoch', epoch)\n"
  "  local ttl = tonumber(ARGV[4])\n"
  "  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end\n"
  "end\n"
  "local last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')\n"
  "local n = last - tonumber(ARGV[1])\n"
  "if n <= 0 or n > tonumber(ARGV[2]) then return { epoch, last } end\n"
  "local min, ttl = '-', tonumber(ARGV[4])\n"
  "if ttl > 0 then\n"
  "  local t = redis.call('TIME')\n"
  "  min = string.format('%d', tonumber(t[1]) * 1000 +\n"
  "    math.floor(tonumber(t[2]) / 1000) - ttl)\n"
  "end\n"
  "return { epoch, last,\n"
  "  redis.call('XREVRANGE', KEYS[2], '+', min, 'COUNT', n) }\n";

/* A publish sent, its answer or its message not back yet; or a
 * recovery's read (fetch), its answer not back yet. */
struct pending {
  struct pending *next;
  struct ms_rhist *r;
  char *topic;                  /* a fetch's, malloc'd */
  size_t tlen;
  uint64_t after;               /* a fetch's: the messages after it */
  int fetch;
  uint64_t request;
  struct ms_conn *skip;         /* anchored by the binding meanwhile */
  double deadline;
  size_t cost;                  /* counted in the backplane's pending */
  int answered, delivered;
  long reached;
  struct ms_hist_pos pos;
};

struct ms_rhist {
  struct ms_backplane *b;
  struct ms_module *m;
  struct pending *head, **tail; /* in the order sent */
  uint64_t process;             /* random: this process's messages */
  uint64_t next_request;
  ev_timer timer;               /* the oldest pending's deadline */
  int fetches;                  /* reads under way */
  int overdue;                  /* Redis let one wait over WAIT_MAX */
  int depth;                    /* inside a call that may reach Lua */
  int closed;                   /* freed once depth is 0 */
};

static uint64_t random64(const void *salt) {
  uint64_t v;
  if (getrandom(&v, sizeof v, 0) != sizeof v)
    v = (uint64_t)(uintptr_t)salt ^ ((uint64_t)getpid() << 32) ^
        (uint64_t)(ev_time() * 1e6);
  return v ? v : 1;
}

/* ------------------------------------------------------------------ */
/* Pending publishes                                                   */
/* ------------------------------------------------------------------ */

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void disarm(struct ms_rhist *r) {
  if (ev_is_active(&r->timer)) {
    ev_ref(r->m->loop);         /* balance arm's unref */
    ev_timer_stop(r->m->loop, &r->timer);
  }
}

static void arm(struct ms_rhist *r) {
  struct ev_loop *loop = r->m->loop;
  if (!r->head) {
    disarm(r);
    return;
  }
  if (ev_is_active(&r->timer)) return;
  double after = r->head->deadline - ev_now(loop);
  ev_timer_set(&r->timer, after > 0 ? after : 0, 0);
  ev_timer_start(loop, &r->timer);
  ev_unref(loop);               /* a wait keeps no loop running */
}

static void unlink_pending(struct ms_rhist *r, struct pending *p) {
  struct pending **pp = &r->head;
  while (*pp && *pp != p) pp = &(*pp)->next;
  if (!*pp) return;
  *pp = p->next;
  if (r->tail == &p->next) r->tail = pp;
}

static void pending_free(struct pending *p) {
  free(p->topic);
  free(p);
}

static void really_free(struct ms_rhist *r) {
  disarm(r);
  struct pending *p = r->head, *next;
  for (; p; p = next) {
    next = p->next;
    pending_free(p);
  }
  free(r);
}

/* Back from a call that may have reached Lua: 1 when r is gone. */
static int leave(struct ms_rhist *r) {
  if (--r->depth == 0 && r->closed) {
    really_free(r);
    return 1;
  }
  return 0;
}

/* Tell the binding how p ended (why NULL: positioned), and forget it.
 * Returns 1 when r is gone meanwhile (the binding closed it). */
static int finish(struct ms_rhist *r, struct pending *p, const char *why) {
  unlink_pending(r, p);
  uint64_t request = p->request;
  long reached = p->reached;
  struct ms_hist_pos pos = p->pos;
  int fetch = p->fetch;
  if (fetch) r->fetches--;
  pending_free(p);
  r->depth++;
  if (fetch) ms_event_recovered(r->m, request);
  else if (why) ms_event_published(r->m, request, -1, NULL, why);
  else ms_event_published(r->m, request, reached, &pos, NULL);
  return leave(r);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  struct ms_rhist *r = w->data;
  (void)revents;
  ev_ref(loop);                 /* it stopped: balance arm's unref */
  if (!r->head || r->head->deadline > ev_now(loop)) {
    arm(r);
    return;
  }
  /* Redis has held a command (or its message) for WAIT_MAX: it is as
   * good as gone.  The backplane drops both connections, so that no
   * answer can come for what fails now, and reconnects; every pending
   * one ends in ms_rhist_lost. */
  r->overdue = 1;
  ms_backplane_fail(r->b, "no answer within 5 s");
}

/* ------------------------------------------------------------------ */
/* Publishing                                                          */
/* ------------------------------------------------------------------ */

/* An epoch Redis gave: never 0 (the position of no message). */
static int parse_epoch(const char *s, size_t len, uint64_t *epoch) {
  return ms_history_parse_epoch(s, len, epoch) && *epoch != 0;
}

/* The script's answer: { epoch, offset }. */
static void on_answer(redisAsyncContext *ac, void *reply_, void *priv) {
  struct pending *p = priv;
  redisReply *reply = reply_;
  /* a connection the backplane dropped: ms_rhist_lost took p */
  if (!ac->data || !reply) return;
  struct ms_rhist *r = p->r;
  ms_backplane_answered(r->b, p->cost);
  p->cost = 0;
  if (reply->type == REDIS_REPLY_ERROR) {
    ms_log(NULL, MS_LOG_ERROR, "backplane: redis refused a publish with "
           "history: %s", reply->str);
    finish(r, p, "redis refused the publish");
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_INTEGER ||
      !parse_epoch(reply->element[0]->str, reply->element[0]->len,
                   &p->pos.epoch) ||
      reply->element[1]->integer < 1) {
    finish(r, p, "redis gave no position");
    return;
  }
  p->pos.offset = (uint64_t)reply->element[1]->integer;
  p->answered = 1;
  if (p->delivered) finish(r, p, NULL);
}

enum ms_backplane_status ms_rhist_publish(struct ms_rhist *r,
                                          struct redisAsyncContext *pub,
                                          const char *prefix,
                                          size_t prefix_len,
                                          const struct ms_hist_pattern *p,
                                          const char *topic, size_t tlen,
                                          unsigned opcode, const char *data,
                                          size_t len, struct ms_conn *skip,
                                          uint64_t *request) {
  static const char meta[] = "position:", stream[] = "history:";
  size_t mlen = prefix_len + sizeof meta - 1 + tlen;
  size_t slen = prefix_len + sizeof stream - 1 + tlen;
  size_t clen = prefix_len + tlen;
  size_t cost = mlen + slen + clen + len + sizeof SCRIPT + COMMAND_OVERHEAD;
  if (ms_backplane_reserve(r->b, cost) < 0) return MS_BP_DROPPED;
  struct pending *pd = calloc(1, sizeof *pd);
  char *keys = malloc(mlen + slen + clen);
  if (!pd || !keys) {
    free(pd);
    free(keys);
    ms_backplane_answered(r->b, cost);
    return MS_BP_NO_MEMORY;
  }
  char *k = keys;
  memcpy(k, prefix, prefix_len);
  memcpy(k + prefix_len, meta, sizeof meta - 1);
  memcpy(k + prefix_len + sizeof meta - 1, topic, tlen);
  k += mlen;
  memcpy(k, prefix, prefix_len);
  memcpy(k + prefix_len, stream, sizeof stream - 1);
  memcpy(k + prefix_len + sizeof stream - 1, topic, tlen);
  k += slen;
  memcpy(k, prefix, prefix_len);
  memcpy(k + prefix_len, topic, tlen);
  char epoch[17], size[24], ttl[24], op[4];
  snprintf(epoch, sizeof epoch, "%016" PRIx64, random64(pd));
  snprintf(size, sizeof size, "%zu", p->size);
  snprintf(ttl, sizeof ttl, "%.0f", p->ttl * 1000);
  snprintf(op, sizeof op, "%u", opcode);
  uint64_t id = ++r->next_request;
  char header[HIST_HEADER];
  header[0] = WIRE_HISTORY;
  header[1] = (char)opcode;
  memcpy(header + 2, &r->process, 8);
  memcpy(header + 10, &id, 8);
  const char *argv[] = { "EVAL", SCRIPT, "2", keys, keys + mlen, epoch,
                         size, ttl, op, keys + mlen + slen, data, header };
  const size_t argvlen[] = { 4, sizeof SCRIPT - 1, 1, mlen, slen, 16,
                             strlen(size), strlen(ttl), strlen(op), clen,
                             len, HIST_HEADER };
  int rc = redisAsyncCommandArgv(pub, on_answer, pd, 12, argv, argvlen);
  free(keys);                   /* hiredis keeps its own copy */
  if (rc != REDIS_OK) {
    free(pd);
    ms_backplane_answered(r->b, cost);
    return MS_BP_NO_MEMORY;
  }
  pd->r = r;
  pd->request = id;
  pd->skip = skip;
  pd->cost = cost;
  pd->reached = 0;
  pd->deadline = ev_now(r->m->loop) + WAIT_MAX;
  *r->tail = pd;
  r->tail = &pd->next;
  arm(r);
  *request = id;
  return MS_BP_SENT;
}

/* ------------------------------------------------------------------ */
/* Receiving                                                           */
/* ------------------------------------------------------------------ */

/* "<16 hex>:<decimal> " at s: its length, or 0. */
static size_t parse_envelope(const char *s, size_t len,
                             struct ms_hist_pos *pos) {
  if (len < 19 || s[16] != ':' || !parse_epoch(s, 16, &pos->epoch))
    return 0;
  uint64_t v = 0;
  size_t i = 17;
  for (; i < len && i < 17 + 20 && s[i] >= '0' && s[i] <= '9'; i++) {
    if (v > (UINT64_MAX - 9) / 10) return 0;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (i == 17 || i >= len || s[i] != ' ' || v == 0) return 0;
  pos->offset = v;
  return i + 1;
}

int ms_rhist_message(struct ms_rhist *r, const char *topic, size_t tlen,
                     const char *msg, size_t mlen) {
  if (mlen < HIST_HEADER || (uint8_t)msg[0] != WIRE_HISTORY) return 0;
  unsigned opcode = (uint8_t)msg[1];
  if (opcode != WS_OP_TEXT && opcode != WS_OP_BINARY) return 1;
  struct ms_hist_pos pos;
  size_t elen = parse_envelope(msg + HIST_HEADER, mlen - HIST_HEADER, &pos);
  if (!elen) return 1;
  const char *data = msg + HIST_HEADER + elen;
  size_t len = mlen - HIST_HEADER - elen;
  /* anyone may write to the channel: text must still be UTF-8 */
  if (opcode == WS_OP_TEXT &&
      utf8_validate(UTF8_ACCEPT, (const uint8_t *)data, len) != UTF8_ACCEPT)
    return 1;
  struct pending *p = NULL;
  if (memcmp(msg + 2, &r->process, 8) == 0) {
    uint64_t id;
    memcpy(&id, msg + 10, 8);
    for (p = r->head; p && p->request != id; p = p->next) {}
  }
  struct ms_module *m = r->m;
  const struct ms_hist_pattern *pat =
    m->history ? ms_history_match(m->history, topic, tlen) : NULL;
  uint64_t epoch, first, next;
  long n;
  if (pat && ms_history_span(m->history, topic, tlen, ev_now(m->loop),
                             &epoch, &first, &next) &&
      epoch == pos.epoch && pos.offset < next) {
    /* a recovery's read brought it here first: delivered then */
    if (p) {
      p->delivered = 1;
      if (p->answered) finish(r, p, NULL);
    }
    return 1;
  }
  /* subscribers' close handlers may run, and close the backplane */
  r->depth++;
  if (pat)
    n = ms_history_publish(m->history, &m->topics, pat, topic, tlen,
                           ev_now(m->loop), opcode, data, len, 0, &pos,
                           p ? p->skip : NULL);
  else                          /* no history here: the data as it is */
    n = ms_topic_publish(&m->topics, topic, tlen, opcode, data, len, NULL);
  if (leave(r)) return 1;
  if (n < 0)
    ms_log(NULL, MS_LOG_ERROR, "backplane: out of memory delivering a "
           "message");
  if (p) {
    p->reached = n < 0 ? 0 : n;
    p->delivered = 1;
    if (p->answered) finish(r, p, NULL);
  }
  return 1;
}

/* ------------------------------------------------------------------ */
/* Recovering from Redis                                               */
/* ------------------------------------------------------------------ */

/* One stream entry: [id, [o, offset, k, opcode, d, data]]; 0 when it
 * is not one of ours. */
static int parse_entry(const redisReply *e, double *time, uint64_t *offset,
                       unsigned *opcode, const char **data, size_t *len) {
  if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
      e->element[0]->type != REDIS_REPLY_STRING ||
      e->element[1]->type != REDIS_REPLY_ARRAY ||
      e->element[1]->elements != 6)
    return 0;
  *time = strtod(e->element[0]->str, NULL) / 1000;
  redisReply **f = e->element[1]->element;
  for (int i = 0; i < 6; i++)
    if (f[i]->type != REDIS_REPLY_STRING) return 0;
  if (strcmp(f[0]->str, "o") || strcmp(f[2]->str, "k") ||
      strcmp(f[4]->str, "d"))
    return 0;
  char *end;
  *offset = strtoull(f[1]->str, &end, 10);
  *opcode = (unsigned)strtoul(f[3]->str, NULL, 10);
  *data = f[5]->str;
  *len = f[5]->len;
  return *end == '\0' && *offset > 0 &&
         (*opcode == WS_OP_TEXT || *opcode == WS_OP_BINARY);
}

/* Keep what Redis holds of p's topic beside what this process kept:
 * older messages before them (the subscribers have them, or had no
 * business with them), newer ones after them, delivered to the
 * subscribers as if they had come on the subscription (which then
 * drops them as duplicates).  1 when r is gone meanwhile. */
static int merge(struct ms_rhist *r, struct pending *p, uint64_t epoch,
                 const redisReply *list) {
  struct ms_module *m = r->m;
  struct ms_history *h = m->history;
  const struct ms_hist_pattern *pat =
    h ? ms_history_match(h, p->topic, p->tlen) : NULL;
  if (!pat || list->elements == 0) return 0;
  /* newest first; they must follow each other up to the newest */
  double time;
  uint64_t off, prev = 0;
  unsigned op;
  const char *data;
  size_t len;
  for (size_t i = 0; i < list->elements; i++) {
    if (!parse_entry(list->element[i], &time, &off, &op, &data, &len) ||
        (i > 0 && off + 1 != prev))
      return 0;
    prev = off;
  }
  uint64_t kept_epoch, first, next;
  double now = ev_now(m->loop);
  int have = ms_history_span(h, p->topic, p->tlen, now, &kept_epoch,
                             &first, &next) && kept_epoch == epoch &&
             first < next;
  struct ms_hist_pos pos = { epoch, 0 };
  /* older than what is kept: before it, newest first */
  for (size_t i = 0; have && i < list->elements; i++) {
    parse_entry(list->element[i], &time, &pos.offset, &op, &data, &len);
    if (pos.offset >= first) continue;
    if (ms_history_prepend(h, pat, p->topic, p->tlen, time, now, op, data,
                           len, &pos) <= 0)
      break;
    first = pos.offset;
  }
  /* newer (or all of them, nothing kept): after it, oldest first */
  for (size_t i = list->elements; i-- > 0;) {
    parse_entry(list->element[i], &time, &pos.offset, &op, &data, &len);
    if (have && pos.offset < next) continue;
    long n;
    r->depth++;
    if (have) {
      n = ms_history_publish(h, &m->topics, pat, p->topic, p->tlen, now,
                             op, data, len, 0, &pos, NULL);
    } else {
      struct ms_shared *sh = ms_history_append(h, pat, p->topic, p->tlen,
                                               now, op, data, len, 0, &pos);
      n = sh ? 0 : -1;
      if (sh) ms_shared_release(sh);
    }
    if (leave(r)) return 1;
    if (n < 0) return 0;
  }
  return 0;
}

/* The answer to a recovery's read. */
static void on_fetched(redisAsyncContext *ac, void *reply_, void *priv) {
  struct pending *p = priv;
  redisReply *reply = reply_;
  if (!ac->data || !reply) return;   /* ms_rhist_lost took p */
  struct ms_rhist *r = p->r;
  ms_backplane_answered(r->b, p->cost);
  p->cost = 0;
  uint64_t epoch;
  struct ms_history *h = r->m->history;
  if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 &&
      reply->element[0]->type == REDIS_REPLY_STRING &&
      reply->element[1]->type == REDIS_REPLY_INTEGER &&
      reply->element[1]->integer >= 0 &&
      parse_epoch(reply->element[0]->str, reply->element[0]->len, &epoch)) {
    if (reply->elements == 3 &&
        reply->element[2]->type == REDIS_REPLY_ARRAY) {
      r->depth++;
      int gone = merge(r, p, epoch, reply->element[2]);
      if (leave(r) || gone) return;
    }
    /* nothing of the topic here: its position is Redis's, the one a
     * subscriber comes back from */
    struct ms_hist_pos pos = { epoch, (uint64_t)reply->element[1]->integer };
    struct ms_hist_pos current;
    if (h && ms_history_match(h, p->topic, p->tlen) &&
        !ms_history_current(h, p->topic, p->tlen, ev_now(r->m->loop),
                            &current))
      ms_history_open_at(h, p->topic, p->tlen, &pos);
  } else if (reply->type == REDIS_REPLY_ERROR) {
    ms_log(NULL, MS_LOG_ERROR, "backplane: redis refused a history read: "
           "%s", reply->str);
  }
  finish(r, p, NULL);
}

enum ms_backplane_status ms_rhist_fetch(struct ms_rhist *r,
                                        struct redisAsyncContext *pub,
                                        const char *prefix,
                                        size_t prefix_len,
                                        const struct ms_hist_pattern *pat,
                                        const char *topic, size_t tlen,
                                        uint64_t after, uint64_t *request) {
  static const char meta[] = "position:", stream[] = "history:";
  /* a read of the topic from as far back is under way: its answer
   * serves this one too */
  for (struct pending *q = r->head; q; q = q->next)
    if (q->fetch && q->tlen == tlen && q->after <= after &&
        memcmp(q->topic, topic, tlen) == 0) {
      *request = q->request;
      return MS_BP_SENT;
    }
  if (r->fetches >= FETCHES_MAX) return MS_BP_DROPPED;
  size_t mlen = prefix_len + sizeof meta - 1 + tlen;
  size_t slen = prefix_len + sizeof stream - 1 + tlen;
  size_t cost = mlen + slen + sizeof FETCH + COMMAND_OVERHEAD;
  if (ms_backplane_reserve(r->b, cost) < 0) return MS_BP_DROPPED;
  struct pending *p = calloc(1, sizeof *p);
  char *keys = malloc(mlen + slen);
  char *name = malloc(tlen + 1);
  if (!p || !keys || !name) {
    free(p);
    free(keys);
    free(name);
    ms_backplane_answered(r->b, cost);
    return MS_BP_NO_MEMORY;
  }
  memcpy(keys, prefix, prefix_len);
  memcpy(keys + prefix_len, meta, sizeof meta - 1);
  memcpy(keys + prefix_len + sizeof meta - 1, topic, tlen);
  memcpy(keys + mlen, prefix, prefix_len);
  memcpy(keys + mlen + prefix_len, stream, sizeof stream - 1);
  memcpy(keys + mlen + prefix_len + sizeof stream - 1, topic, tlen);
  memcpy(name, topic, tlen);
  name[tlen] = '\0';
  /* no more than the topic may keep, and what approximate trimming
   * leaves beyond it */
  char from[24], most[24], epoch[17], ttl[24];
  snprintf(from, sizeof from, "%" PRIu64, after);
  snprintf(most, sizeof most, "%zu", pat->size + 100);
  snprintf(epoch, sizeof epoch, "%016" PRIx64, random64(p));
  snprintf(ttl, sizeof ttl, "%.0f", pat->ttl * 1000);
  const char *argv[] = { "EVAL", FETCH, "2", keys, keys + mlen, from,
                         most, epoch, ttl };
  const size_t argvlen[] = { 4, sizeof FETCH - 1, 1, mlen, slen,
                             strlen(from), strlen(most), 16, strlen(ttl) };
  int rc = redisAsyncCommandArgv(pub, on_fetched, p, 9, argv, argvlen);
  free(keys);
  if (rc != REDIS_OK) {
    free(p);
    free(name);
    ms_backplane_answered(r->b, cost);
    return MS_BP_NO_MEMORY;
  }
  p->r = r;
  p->fetch = 1;
  r->fetches++;
  p->topic = name;
  p->tlen = tlen;
  p->after = after;
  p->request = ++r->next_request;
  p->cost = cost;
  p->deadline = ev_now(r->m->loop) + WAIT_MAX;
  *r->tail = p;
  r->tail = &p->next;
  arm(r);
  *request = p->request;
  return MS_BP_SENT;
}

/* ------------------------------------------------------------------ */
/* Outages, forks, the object's life                                   */
/* ------------------------------------------------------------------ */

void ms_rhist_lost(struct ms_rhist *r) {
  const char *why = r->overdue ? "redis gave no position within 5 s"
                               : "redis is unavailable";
  r->overdue = 0;
  if (r->m->history) ms_history_forget(r->m->history);
  /* positioned but not back: it is in Redis, and reached nobody here */
  while (r->head) {
    struct pending *p = r->head;
    p->cost = 0;              /* the backplane counts nothing pending */
    if (finish(r, p, p->answered ? NULL : why)) return;
  }
  arm(r);
}

void ms_rhist_forked(struct ms_rhist *r) {
  struct pending *p = r->head, *next;
  for (; p; p = next) {
    next = p->next;
    pending_free(p);
  }
  r->head = NULL;
  r->tail = &r->head;
  disarm(r);
  r->process = random64(r);
  if (r->m->history) ms_history_forget(r->m->history);
}

struct ms_rhist *ms_rhist_new(struct ms_backplane *b, struct ms_module *m) {
  struct ms_rhist *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->b = b;
  r->m = m;
  r->tail = &r->head;
  r->process = random64(r);
  /* apart from the numbers of the master's positions (workers.c): the
   * binding keeps both in one table */
  r->next_request = (uint64_t)1 << 48;
  ev_init(&r->timer, timer_cb);
  r->timer.data = r;
  return r;
}

void ms_rhist_close(struct ms_rhist *r, int tell) {
  r->depth++;                   /* freed below, not by a finish */
  while (tell && r->head)
    finish(r, r->head, r->head->answered ? NULL
                                         : "the backplane is closed");
  r->depth--;
  ms_rhist_free(r);
}

void ms_rhist_free(struct ms_rhist *r) {
  if (!r) return;
  if (r->depth > 0) r->closed = 1;
  else really_free(r);
}
