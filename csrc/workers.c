/* workers.c - worker processes: the master forks and supervises them,
 * and relays what one publishes to the others */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "events.h"
#include "history.h"
#include "life.h"
#include "presence.h"
#include "server.h"
#include "workers.h"

/* A publish on a link: length of what follows (4 bytes, host order:
 * both ends are this program on this machine), opcode (1), topic
 * length (4), the topic, the data. */
#define MSG_HEAD     9
/* A publish to a topic with history sets MSG_HISTORY in the opcode's
 * byte, and HIST_EXT bytes follow the topic: epoch (8), offset (8), the
 * request's number (8) and its worker (4).  A worker sends it with no
 * position; the master writes the topic's next one in and hands it to
 * every worker, the sender too, so that all deliver and keep it in the
 * master's order.  MSG_SYNC asks the master to send the message back,
 * to its sender only: once it is here, so is everything the master sent
 * before.  With a topic, the master also writes in that topic's
 * position, beginning its epoch when nothing was published to it: the
 * position a subscriber comes back from. */
#define MSG_HISTORY  0x80
#define MSG_SYNC     0x40
/* Presence: MSG_PRESENCE with JOIN or LEAVE in the low bits; the member
 * id (8) follows the topic (empty for a leave), then a join's info.  The
 * master keeps every worker's members (a worker forked later inherits
 * them) and hands each change to the other workers; when a worker dies
 * it hands on the leave of each of its members. */
#define MSG_PRESENCE 0x20
#define PRESENCE_JOIN  1
#define PRESENCE_LEAVE 2
#define HIST_EXT     28
#define WAIT_MAX     5.0           /* seconds a worker waits for them */
#define LINK_PENDING (64u << 20)   /* unsent bytes a link may hold */
#define LINK_MSG_MAX (1u << 30)    /* a longer message is corrupt */
#define RESTART_PAUSE 1.0          /* after a worker lived less than 1 s */

/* One end of a master-worker socketpair. */
struct ms_link {
  ev_io io;
  struct ms_module *m;
  int index;                       /* the worker's, 1..n */
  int unref;                       /* a worker's: keeps no loop alive */
  uint8_t *in;
  size_t in_len, in_cap;
  uint8_t *out;
  size_t out_off, out_len, out_cap;
  size_t dropped;                  /* publishes lost to LINK_PENDING */
  size_t in_off;                   /* in: delivered up to here */
  uint64_t next_request;           /* a worker's requests, numbered */
  struct pending *pending, **pending_end; /* requests, oldest first */
  ev_timer pending_timer;          /* fails those unanswered for long */
};

/* A publish to a topic with history, or a sync, sent to the master and
 * not back yet.  Nothing waits for it here: the binding is told when it
 * is (ms_event_published, ms_event_recovered), and anchors skip
 * meanwhile. */
struct pending {
  struct pending *next;
  uint64_t request;
  struct ms_conn *skip;
  double deadline;
  int sync;
};

struct worker {
  pid_t pid;
  double started;
  int restart;                     /* died: fork again */
  ev_child child;
  struct ms_link link;
};

struct ms_workers {
  int n, alive, stopping;
  ev_signal sigint, sigterm, sighup;
  ev_timer restart_timer;
  struct worker w[];
};

/* ------------------------------------------------------------------ */
/* Links                                                               */
/* ------------------------------------------------------------------ */

static void link_cb(struct ev_loop *loop, ev_io *w, int revents);

static void link_events(struct ms_link *l, int events) {
  struct ev_loop *loop = l->m->loop;
  if (l->io.events == events) return;
  if (l->unref) ev_ref(loop);
  ev_io_stop(loop, &l->io);
  ev_io_set(&l->io, l->io.fd, events);
  ev_io_start(loop, &l->io);
  if (l->unref) ev_unref(loop);
}

static void pending_timer_cb(struct ev_loop *loop, ev_timer *w,
                             int revents);

static void link_open(struct ms_link *l, struct ms_module *m, int fd,
                      int index, int unref) {
  memset(l, 0, sizeof *l);
  l->m = m;
  l->pending_end = &l->pending;
  ev_init(&l->pending_timer, pending_timer_cb);
  l->index = index;
  l->unref = unref;
  ev_io_init(&l->io, link_cb, fd, EV_READ);
  ev_io_start(m->loop, &l->io);
  if (unref) ev_unref(m->loop);
}

static void pending_free(struct ms_link *l) {
  struct pending *p = l->pending, *next;
  for (; p; p = next) {
    next = p->next;
    free(p);
  }
  l->pending = NULL;
  l->pending_end = &l->pending;
  if (ev_is_active(&l->pending_timer)) {
    ev_ref(l->m->loop);
    ev_timer_stop(l->m->loop, &l->pending_timer);
  }
}

static void link_close(struct ms_link *l) {
  if (l->io.fd < 0) return;
  pending_free(l);
  if (l->unref) ev_ref(l->m->loop);
  ev_io_stop(l->m->loop, &l->io);
  close(l->io.fd);
  l->io.fd = -1;
  free(l->in);
  free(l->out);
  l->in = l->out = NULL;
  l->in_len = l->in_off = l->in_cap = 0;
  l->out_off = l->out_len = l->out_cap = 0;
}

static void link_flush(struct ms_link *l) {
  while (l->out_off < l->out_len) {
    ssize_t w = send(l->io.fd, l->out + l->out_off, l->out_len - l->out_off,
                     MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) l->out_off = l->out_len;
      break;
    }
    l->out_off += (size_t)w;
  }
  if (l->out_off == l->out_len) l->out_off = l->out_len = 0;
  link_events(l, l->out_len ? EV_READ | EV_WRITE : EV_READ);
}

/* Queue the parts of one message; all or nothing. */
static void link_send(struct ms_link *l, const struct iovec *iov, int n) {
  size_t total = 0;
  for (int i = 0; i < n; i++) total += iov[i].iov_len;
  if (l->io.fd < 0) return;
  size_t pending = l->out_len - l->out_off;
  if (pending + total > LINK_PENDING) {
    if (l->dropped++ == 0)
      ms_log_module(l->m, MS_LOG_ERROR, "worker %d: publish link %zu bytes behind: "
             "dropping publishes", l->index, pending);
    return;
  }
  if (l->out_off && l->out_len + total > l->out_cap) {
    memmove(l->out, l->out + l->out_off, pending);
    l->out_len = pending;
    l->out_off = 0;
  }
  if (l->out_len + total > l->out_cap) {
    size_t cap = l->out_cap ? l->out_cap : 4096;
    while (cap < l->out_len + total) cap *= 2;
    uint8_t *p = realloc(l->out, cap);
    if (!p) {
      l->dropped++;
      return;
    }
    l->out = p;
    l->out_cap = cap;
  }
  for (int i = 0; i < n; i++) {
    memcpy(l->out + l->out_len, iov[i].iov_base, iov[i].iov_len);
    l->out_len += iov[i].iov_len;
  }
  if (l->dropped) {
    ms_log_module(l->m, MS_LOG_WARN, "worker %d: publish link caught up; %zu "
           "publishes were lost", l->index, l->dropped);
    l->dropped = 0;
  }
  link_flush(l);
}

/* The master's part in a publish with history: give it its position
 * and hand it to every worker, its sender too; a sync goes back. */
static void master_history(struct ms_link *l, uint8_t *p, size_t len,
                           uint32_t tlen) {
  struct ms_module *m = l->m;
  struct ms_workers *ws = m->workers;
  struct iovec iov = { p, len };
  uint8_t *ext = p + MSG_HEAD + tlen;
  const char *topic = (const char *)p + MSG_HEAD;
  struct ms_hist_pos pos = { 0, 0 };
  if (p[4] & MSG_SYNC) {
    /* epoch 0 when the topic keeps no history or memory ran out */
    if (tlen > 0 && m->history && ms_history_match(m->history, topic, tlen)
        && ms_history_open(m->history, topic, tlen, ev_now(m->loop),
                           &pos) < 0)
      pos.epoch = 0;
    memcpy(ext, &pos.epoch, 8);
    memcpy(ext + 8, &pos.offset, 8);
    link_send(l, &iov, 1);
    return;
  }
  if (!m->history) m->history = ms_history_new();
  if (!m->history ||
      ms_history_assign(m->history, topic, tlen, ev_now(m->loop),
                        &pos) < 0) {
    memset(ext, 0, 16);            /* epoch 0: it failed */
    link_send(l, &iov, 1);
    return;
  }
  memcpy(ext, &pos.epoch, 8);
  memcpy(ext + 8, &pos.offset, 8);
  for (int i = 0; i < ws->n; i++)
    if (ws->w[i].link.io.fd >= 0) link_send(&ws->w[i].link, &iov, 1);
}

/* Take the publish numbered request off the pending list; NULL when it
 * is not there (failed already, or not this worker's). */
static struct pending *pending_take(struct ms_link *l, uint64_t request) {
  struct pending **pp = &l->pending;
  for (; *pp && (*pp)->request != request; pp = &(*pp)->next) {}
  struct pending *p = *pp;
  if (!p) return NULL;
  *pp = p->next;
  if (l->pending_end == &p->next) l->pending_end = pp;
  return p;
}

/* A worker's part: keep and deliver a publish with its position; the
 * request it answers, when it was this worker's, is done, and the
 * binding told. */
static void worker_history(struct ms_link *l, const uint8_t *p, size_t len,
                           uint32_t tlen) {
  struct ms_module *m = l->m;
  const char *topic = (const char *)p + MSG_HEAD;
  const uint8_t *ext = p + MSG_HEAD + tlen;
  struct ms_hist_pos pos;
  uint64_t request;
  uint32_t origin;
  memcpy(&pos.epoch, ext, 8);
  memcpy(&pos.offset, ext + 8, 8);
  memcpy(&request, ext + 16, 8);
  memcpy(&origin, ext + 24, 4);
  int ours = (int)origin == m->worker;
  struct pending *mine = ours ? pending_take(l, request) : NULL;
  if (p[4] & MSG_SYNC) {
    if (!mine) return;             /* failed already: its wait is over */
    free(mine);
    /* the master's position of the topic: where a subscriber comes
     * back from (what it published before is here already) */
    if (pos.epoch != 0 && tlen > 0 && m->history &&
        ms_history_match(m->history, topic, tlen))
      ms_history_open_at(m->history, topic, tlen, &pos);
    ms_event_recovered(m, request);
    return;
  }
  long n = -1;
  if (pos.epoch != 0) {
    const char *data = (const char *)ext + HIST_EXT;
    size_t dlen = len - MSG_HEAD - tlen - HIST_EXT;
    unsigned opcode = p[4] & 0x0f;
    const struct ms_hist_pattern *pat =
      m->history ? ms_history_match(m->history, topic, tlen) : NULL;
    if (pat)
      n = ms_history_publish(m->history, &m->topics, pat, topic, tlen,
                             ev_now(m->loop), opcode, data, dlen, 0, &pos,
                             mine ? mine->skip : NULL);
  }
  if (mine) {
    free(mine);
    ms_event_published(m, request, n, n < 0 ? NULL : &pos, NULL);
  }
}

/* Hand a presence message to every worker but the one it came from (0:
 * none). */
static void presence_relay(struct ms_module *m, int from, const void *p,
                           size_t len) {
  struct ms_workers *ws = m->workers;
  struct iovec iov = { (void *)p, len };
  for (int i = 0; i < ws->n; i++)
    if (i + 1 != from && ws->w[i].link.io.fd >= 0)
      link_send(&ws->w[i].link, &iov, 1);
}

static void presence_message(struct ms_module *m, int kind,
                             const char *topic, size_t tlen, uint64_t id,
                             const char *info, size_t ilen,
                             struct ms_link *to) {
  uint8_t head[MSG_HEAD];
  uint32_t mlen = (uint32_t)(MSG_HEAD - 4 + tlen + 8 + ilen);
  uint32_t t32 = (uint32_t)tlen;
  memcpy(head, &mlen, 4);
  head[4] = (uint8_t)(MSG_PRESENCE | kind);
  memcpy(head + 5, &t32, 4);
  struct iovec iov[4] = { { head, MSG_HEAD }, { (void *)topic, tlen },
                          { &id, 8 }, { (void *)info, ilen } };
  if (to) {
    link_send(to, iov, 4);
    return;
  }
  /* the master: to every worker */
  struct ms_workers *ws = m->workers;
  for (int i = 0; i < ws->n; i++)
    if (ws->w[i].link.io.fd >= 0) link_send(&ws->w[i].link, iov, 4);
}

/* A worker died: its members leave, told to the others (the master). */
static void relay_leave(void *arg, const char *topic, size_t tlen,
                        uint64_t id, const char *info, size_t ilen) {
  (void)topic;
  (void)tlen;
  (void)info;
  (void)ilen;
  presence_message(arg, PRESENCE_LEAVE, "", 0, id, "", 0, NULL);
}

/* A worker was told of another worker's member. */
static void tell_leave(void *arg, const char *topic, size_t tlen,
                       uint64_t id, const char *info, size_t ilen) {
  (void)id;
  ms_event_presence(arg, topic, tlen, 0, info, ilen);
}

static void link_presence(struct ms_link *l, const uint8_t *p, size_t len,
                          uint32_t tlen) {
  struct ms_module *m = l->m;
  const char *topic = (const char *)p + MSG_HEAD;
  const char *info = topic + tlen + 8;
  size_t ilen = len - MSG_HEAD - tlen - 8;
  uint64_t id;
  memcpy(&id, topic + tlen, 8);
  if (!m->presence && !(m->presence = ms_presence_new())) return;
  if ((p[4] & 0x0f) == PRESENCE_JOIN) {
    if (!ms_presence_add(m->presence, topic, tlen, id, info, ilen)) return;
    if (m->workers) presence_relay(m, l->index, p, len);
    else ms_event_presence(m, topic, tlen, 1, info, ilen);
  } else if (m->workers) {
    if (ms_presence_remove(m->presence, id, NULL, NULL))
      presence_relay(m, l->index, p, len);
  } else {
    ms_presence_remove(m->presence, id, tell_leave, m);
  }
}

void ms_workers_presence(struct ms_module *m, int join, const char *topic,
                         size_t topic_len, uint64_t id, const char *info,
                         size_t len) {
  struct ms_link *l = m->link;
  if (!l || l->io.fd < 0) return;
  if (topic_len + len > LINK_MSG_MAX - MSG_HEAD - 8) return;
  presence_message(m, join ? PRESENCE_JOIN : PRESENCE_LEAVE, topic,
                   topic_len, id, info, len, l);
}

/* A whole message arrived at p[0..len): the master hands it to every
 * other worker; a worker delivers it to its own subscribers. */
static void link_deliver(struct ms_link *l, uint8_t *p, size_t len) {
  struct ms_module *m = l->m;
  uint32_t tlen;
  memcpy(&tlen, p + 5, 4);
  if (tlen > len - MSG_HEAD) return;            /* corrupt: ignore */
  if (p[4] & MSG_PRESENCE) {
    if (len - MSG_HEAD - tlen >= 8) link_presence(l, p, len, tlen);
    return;
  }
  if (p[4] & MSG_HISTORY) {
    if (len - MSG_HEAD - tlen < HIST_EXT) return;
    if (m->workers) master_history(l, p, len, tlen);
    else worker_history(l, p, len, tlen);
    return;
  }
  if (m->workers) {
    struct ms_workers *ws = m->workers;
    struct iovec iov = { (void *)p, len };
    for (int i = 0; i < ws->n; i++)
      if (i + 1 != l->index && ws->w[i].link.io.fd >= 0)
        link_send(&ws->w[i].link, &iov, 1);
    return;
  }
  const char *topic = (const char *)p + MSG_HEAD;
  ms_topic_publish(&m->topics, topic, tlen, p[4],
                   topic + tlen, len - MSG_HEAD - tlen, NULL);
}

/* Tell the binding that the request p, off the list, failed: a publish
 * has no position; a sync's wait is over. */
static void pending_failed(struct ms_module *m, struct pending *p) {
  uint64_t request = p->request;
  int sync = p->sync;
  free(p);
  if (sync) ms_event_recovered(m, request);
  else ms_event_published(m, request, -1, NULL, NULL);
}

/* Tell the binding that the pending requests due by `upto` failed.
 * One at a time: what it runs may publish again. */
static void pending_fail(struct ms_link *l, double upto) {
  struct pending *p;
  while ((p = l->pending) && p->deadline <= upto) {
    pending_take(l, p->request);
    pending_failed(l->m, p);
  }
}

static void pending_arm(struct ms_link *l) {
  struct ev_loop *loop = l->m->loop;
  int active = ev_is_active(&l->pending_timer);
  if (active) {
    ev_ref(loop);
    ev_timer_stop(loop, &l->pending_timer);
  }
  if (!l->pending || l->io.fd < 0) return;
  double after = l->pending->deadline - ev_now(loop);
  ev_timer_set(&l->pending_timer, after > 0 ? after : 0, 0);
  ev_timer_start(loop, &l->pending_timer);
  ev_unref(loop);                  /* keeps no loop alive */
}

static void pending_timer_cb(struct ev_loop *loop, ev_timer *w,
                             int revents) {
  struct ms_link *l = (struct ms_link *)((char *)w -
                      offsetof(struct ms_link, pending_timer));
  (void)revents;
  ev_ref(loop);                    /* it stopped: balance its unref */
  /* one line for what is due: publishes first, they lose a position */
  int due = 0, publishes = 0;
  for (struct pending *p = l->pending; p && p->deadline <= ev_now(loop);
       p = p->next) {
    due++;
    if (!p->sync) publishes++;
  }
  if (due) {
    ms_log(NULL, MS_LOG_ERROR, "worker %d: the master gave no %s within "
           "%.0f s", l->m->worker, publishes ? "position" : "answer",
           WAIT_MAX);
    pending_fail(l, ev_now(loop));
  }
  pending_arm(l);
}

static void link_lost(struct ms_link *l) {
  struct ms_module *m = l->m;
  /* closed first: what the failures run cannot send any more */
  struct pending *lost = l->pending;
  l->pending = NULL;
  l->pending_end = &l->pending;
  link_close(l);
  while (lost) {
    struct pending *p = lost;
    lost = p->next;
    pending_failed(m, p);
  }
  if (!m->workers) {
    /* the master is gone: nothing will restart or stop us */
    ms_log_module(m, MS_LOG_ERROR, "worker %d: the master process is gone; "
           "shutting down", m->worker);
    ms_module_shutdown(m, 5);
  }
}

/* Deliver the whole messages from in_off on.  Where we are is kept in
 * the link, not in locals: what a delivery runs may lose the link. */
static void link_process(struct ms_link *l) {
  while (l->in_len - l->in_off >= 4) {
    uint32_t mlen;
    memcpy(&mlen, l->in + l->in_off, 4);
    if (mlen < MSG_HEAD - 4 || mlen > LINK_MSG_MAX) {
      ms_log_module(l->m, MS_LOG_ERROR, "worker link: corrupt message");
      link_lost(l);
      return;
    }
    if (l->in_len - l->in_off < 4 + (size_t)mlen) break;
    uint8_t *p = l->in + l->in_off;
    l->in_off += 4 + (size_t)mlen;
    link_deliver(l, p, 4 + (size_t)mlen);
    if (l->io.fd < 0) return;
  }
}

static void link_read(struct ms_link *l) {
  for (;;) {
    if (l->in_off) {                /* what was delivered goes */
      memmove(l->in, l->in + l->in_off, l->in_len - l->in_off);
      l->in_len -= l->in_off;
      l->in_off = 0;
    }
    if (l->in_cap - l->in_len < 65536) {
      size_t cap = l->in_cap ? l->in_cap * 2 : 65536;
      uint8_t *p = realloc(l->in, cap);
      if (!p) {
        link_lost(l);
        return;
      }
      l->in = p;
      l->in_cap = cap;
    }
    ssize_t r = recv(l->io.fd, l->in + l->in_len, l->in_cap - l->in_len, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (r <= 0) {
      link_lost(l);
      return;
    }
    l->in_len += (size_t)r;
    link_process(l);
    if (l->io.fd < 0) return;
    if ((size_t)r < 65536) break;
  }
  if (l->in_off == l->in_len && l->in_cap > 65536) {
    free(l->in);                    /* keep no huge buffer */
    l->in = NULL;
    l->in_len = l->in_off = l->in_cap = 0;
  }
}

static void link_cb(struct ev_loop *loop, ev_io *w, int revents) {
  struct ms_link *l = (struct ms_link *)w;
  (void)loop;
  if (revents & EV_WRITE) link_flush(l);
  if ((revents & EV_READ) && l->io.fd >= 0) link_read(l);
}

void ms_workers_publish(struct ms_module *m, const char *topic,
                        size_t topic_len, unsigned opcode,
                        const char *data, size_t len) {
  struct ms_link *l = m->link;
  if (!l || l->io.fd < 0) return;
  if (topic_len + len > LINK_MSG_MAX - MSG_HEAD) return;
  uint8_t head[MSG_HEAD];
  uint32_t mlen = (uint32_t)(MSG_HEAD - 4 + topic_len + len);
  uint32_t tlen = (uint32_t)topic_len;
  memcpy(head, &mlen, 4);
  head[4] = (uint8_t)opcode;
  memcpy(head + 5, &tlen, 4);
  struct iovec iov[3] = { { head, MSG_HEAD }, { (void *)topic, topic_len },
                          { (void *)data, len } };
  link_send(l, iov, 3);
}

/* Send a request (MSG_HISTORY, maybe MSG_SYNC) numbered *request.  -1
 * when the link is gone or full. */
static int request(struct ms_module *m, unsigned flags, const char *topic,
                   size_t topic_len, const char *data, size_t len,
                   uint64_t *request) {
  struct ms_link *l = m->link;
  if (!l || l->io.fd < 0) return -1;
  if (topic_len + len > LINK_MSG_MAX - MSG_HEAD - HIST_EXT) return -1;
  uint8_t head[MSG_HEAD], ext[HIST_EXT];
  uint32_t mlen = (uint32_t)(MSG_HEAD - 4 + topic_len + HIST_EXT + len);
  uint32_t tlen = (uint32_t)topic_len, origin = (uint32_t)m->worker;
  *request = ++l->next_request;
  memcpy(head, &mlen, 4);
  head[4] = (uint8_t)flags;
  memcpy(head + 5, &tlen, 4);
  memset(ext, 0, 16);
  memcpy(ext + 16, request, 8);
  memcpy(ext + 24, &origin, 4);
  struct iovec iov[4] = { { head, MSG_HEAD }, { (void *)topic, topic_len },
                          { ext, HIST_EXT }, { (void *)data, len } };
  size_t dropped = l->dropped;
  link_send(l, iov, 4);
  return l->dropped != dropped || l->io.fd < 0 ? -1 : 0;
}

/* Send a request and keep it pending until its answer, WAIT_MAX at
 * most.  -1 when it could not be sent. */
static int request_pending(struct ms_module *m, unsigned flags,
                           const char *topic, size_t topic_len,
                           const char *data, size_t len,
                           struct ms_conn *skip, uint64_t *id) {
  struct ms_link *l = m->link;
  struct pending *p = malloc(sizeof *p);
  if (!p) return -1;
  if (request(m, flags, topic, topic_len, data, len, id) < 0) {
    free(p);
    return -1;
  }
  p->next = NULL;
  p->request = *id;
  p->skip = skip;
  p->deadline = ev_now(m->loop) + WAIT_MAX;
  p->sync = (flags & MSG_SYNC) != 0;
  *l->pending_end = p;
  l->pending_end = &p->next;
  if (!ev_is_active(&l->pending_timer)) pending_arm(l);
  return 0;
}

int ms_workers_publish_history(struct ms_module *m, const char *topic,
                               size_t topic_len, unsigned opcode,
                               const char *data, size_t len,
                               struct ms_conn *skip, uint64_t *id) {
  return request_pending(m, MSG_HISTORY | opcode, topic, topic_len, data,
                         len, skip, id);
}

int ms_workers_sync(struct ms_module *m, const char *topic,
                    size_t topic_len, uint64_t *id) {
  return request_pending(m, MSG_HISTORY | MSG_SYNC, topic, topic_len, "",
                         0, NULL, id);
}

void ms_workers_free(struct ms_module *m) {
  if (m->link) {
    link_close(m->link);
    free(m->link);
    m->link = NULL;
  }
}

/* ------------------------------------------------------------------ */
/* The master                                                          */
/* ------------------------------------------------------------------ */

static void forward_signal(struct ms_workers *ws, int sig) {
  for (int i = 0; i < ws->n; i++)
    if (ws->w[i].pid > 0) kill(ws->w[i].pid, sig);
}

static void master_signal_cb(struct ev_loop *loop, ev_signal *w,
                             int revents) {
  struct ms_module *m = w->data;
  struct ms_workers *ws = m->workers;
  (void)revents;
  if (w->signum == SIGHUP) {
    forward_signal(ws, SIGHUP);
    return;
  }
  if (!ws->stopping)
    ms_log_module(m, MS_LOG_INFO, "signal %d: stopping %d workers", w->signum,
           ws->alive);
  ws->stopping = 1;
  forward_signal(ws, SIGTERM);
  ev_timer_stop(loop, &ws->restart_timer);
  if (ws->alive == 0) ev_break(loop, EVBREAK_ALL);
}

static void child_cb(struct ev_loop *loop, ev_child *w, int revents) {
  struct worker *wk = (struct worker *)((char *)w -
                                        offsetof(struct worker, child));
  struct ms_module *m = w->data;
  struct ms_workers *ws = m->workers;
  int i = (int)(wk - ws->w);
  (void)revents;
  ev_child_stop(loop, w);
  link_close(&wk->link);
  wk->pid = 0;
  ws->alive--;
  if (m->presence)                 /* its members are gone with it */
    ms_presence_remove_origin(m->presence, i + 1, relay_leave, m);
  int st = w->rstatus;
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && !ws->stopping) {
    /* a clean exit was asked for (a signal to the whole process
     * group, as ^C sends, or the app closed its servers): the master
     * ends with the last one */
    ms_log_module(m, MS_LOG_INFO, "worker %d (pid %d) exited", i + 1,
           (int)w->rpid);
    ws->stopping = 1;
    ev_timer_stop(loop, &ws->restart_timer);
  }
  if (ws->stopping) {
    if (ws->alive == 0) ev_break(loop, EVBREAK_ALL);
    return;
  }
  if (WIFSIGNALED(st))
    ms_log_module(m, MS_LOG_ERROR, "worker %d (pid %d) killed by signal %d; "
           "restarting", i + 1, (int)w->rpid, WTERMSIG(st));
  else
    ms_log_module(m, MS_LOG_ERROR, "worker %d (pid %d) exited with status %d; "
           "restarting", i + 1, (int)w->rpid, WEXITSTATUS(st));
  wk->restart = 1;
  /* one that dies at once is not forked again at once */
  double pause = ev_now(loop) - wk->started < RESTART_PAUSE
                 ? RESTART_PAUSE : 0;
  if (!ev_is_active(&ws->restart_timer)) {
    ev_timer_set(&ws->restart_timer, pause, 0);
    ev_timer_start(loop, &ws->restart_timer);
  }
}

/* Forks happen between runs of the loop, never inside a callback: the
 * child leaves this function and goes on to serve. */
static void restart_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)w;
  (void)revents;
  ev_break(loop, EVBREAK_ALL);
}

/* The child side of a fork: drop the master's watchers, take the link,
 * and listen on this worker's own sockets. */
static void become_worker(struct ms_module *m, int index, int fd) {
  struct ms_workers *ws = m->workers;
  struct ev_loop *loop = m->loop;
  ev_loop_fork(loop);
  for (int i = 0; i < ws->n; i++) {
    struct worker *wk = &ws->w[i];
    if (ev_is_active(&wk->child)) ev_child_stop(loop, &wk->child);
    link_close(&wk->link);
  }
  ev_signal_stop(loop, &ws->sigint);
  ev_signal_stop(loop, &ws->sigterm);
  ev_signal_stop(loop, &ws->sighup);
  ev_timer_stop(loop, &ws->restart_timer);
  free(ws);
  m->workers = NULL;
  m->worker = index;
  ms_metrics_worker(m, index);
  m->link = malloc(sizeof *m->link);
  if (!m->link) {
    ms_log_module(m, MS_LOG_ERROR, "worker %d: out of memory", index);
    _exit(1);
  }
  link_open(m->link, m, fd, index, 1);
  for (struct ms_server *s = m->servers; s; s = s->next) {
    const char *err;
    if (ms_server_listen(s, s->host, s->port, s->backlog, MS_LISTEN_SHARED,
                         &err) != 0) {
      ms_log(s, MS_LOG_ERROR, "worker %d: cannot listen on %s:%d: %s", index,
             s->host, s->port, err);
      _exit(1);
    }
  }
}

/* Returns 1 in the child. */
static int spawn(struct ms_module *m, int i) {
  struct ms_workers *ws = m->workers;
  struct worker *wk = &ws->w[i];
  int sv[2];
  wk->restart = 0;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                 sv) != 0) {
    ms_log_module(m, MS_LOG_ERROR, "worker %d: socketpair: %s", i + 1,
           strerror(errno));
    wk->restart = 1;
    return 0;
  }
  fflush(NULL);                      /* no buffered output twice */
  pid_t pid = fork();
  if (pid < 0) {
    ms_log_module(m, MS_LOG_ERROR, "worker %d: fork: %s", i + 1, strerror(errno));
    close(sv[0]);
    close(sv[1]);
    wk->restart = 1;
    return 0;
  }
  if (pid == 0) {
    close(sv[0]);
    become_worker(m, i + 1, sv[1]);
    return 1;
  }
  close(sv[1]);
  wk->pid = pid;
  wk->started = ev_now(m->loop);
  ws->alive++;
  link_open(&wk->link, m, sv[0], i + 1, 0);
  ev_child_init(&wk->child, child_cb, pid, 0);
  wk->child.data = m;
  ev_child_start(m->loop, &wk->child);
  ms_log_module(m, MS_LOG_INFO, "worker %d started (pid %d)", i + 1, (int)pid);
  return 0;
}

int ms_workers_run(struct ms_module *m) {
  struct ev_loop *loop = m->loop;
  int n = m->nworkers;
  struct ms_workers *ws = calloc(1, sizeof *ws + (size_t)n * sizeof ws->w[0]);
  if (!ws) {
    ms_log_module(m, MS_LOG_ERROR, "workers: out of memory");
    return 0;
  }
  ws->n = n;
  m->workers = ws;
  for (int i = 0; i < n; i++) ws->w[i].link.io.fd = -1;
  /* the master serves nothing itself: its reserved sockets only keep
   * the ports, and its servers' timers stay quiet */
  for (struct ms_server *s = m->servers; s; s = s->next) {
    ev_prepare_stop(loop, &s->prepare);
    ev_timer_stop(loop, &s->sweep);
  }
  ev_signal_init(&ws->sigint, master_signal_cb, SIGINT);
  ev_signal_init(&ws->sigterm, master_signal_cb, SIGTERM);
  ev_signal_init(&ws->sighup, master_signal_cb, SIGHUP);
  ws->sigint.data = ws->sigterm.data = ws->sighup.data = m;
  ev_signal_start(loop, &ws->sigint);
  ev_signal_start(loop, &ws->sigterm);
  ev_signal_start(loop, &ws->sighup);
  ev_init(&ws->restart_timer, restart_cb);
  /* every worker counts where any one can sum them all (a scrape) */
  if (ms_metrics_share(m, n) < 0)
    ms_log_module(m, MS_LOG_WARN, "workers: cannot share the metrics: %s; each "
           "worker reports its own", strerror(errno));
  for (int i = 0; i < n; i++) ws->w[i].restart = 1;
  for (;;) {
    for (int i = 0; i < n; i++) {
      if (!ws->w[i].restart || ws->stopping) continue;
      if (spawn(m, i)) {
        /* the worker: its servers start their watchers again */
        for (struct ms_server *s = m->servers; s; s = s->next) {
          ev_prepare_start(loop, &s->prepare);
          ev_timer_start(loop, &s->sweep);
        }
        return 1;
      }
    }
    if (ws->stopping && ws->alive == 0) break;
    for (int i = 0; i < n; i++)      /* a fork failed: try again later */
      if (ws->w[i].restart && !ev_is_active(&ws->restart_timer)) {
        ev_timer_set(&ws->restart_timer, RESTART_PAUSE, 0);
        ev_timer_start(loop, &ws->restart_timer);
      }
    ev_run(loop, 0);
    if (ws->stopping && ws->alive == 0) break;
  }
  ev_signal_stop(loop, &ws->sigint);
  ev_signal_stop(loop, &ws->sigterm);
  ev_signal_stop(loop, &ws->sighup);
  ev_timer_stop(loop, &ws->restart_timer);
  for (int i = 0; i < n; i++) link_close(&ws->w[i].link);
  ms_log_module(m, MS_LOG_INFO, "every worker has exited");
  m->workers = NULL;
  free(ws);
  /* the master's servers end here: a later run finds nothing to do */
  m->nworkers = 1;
  for (struct ms_server *s = m->servers; s; s = s->next) {
    ms_server_stop_accepting(s);
    s->closing = 1;
  }
  ms_module_check_done(m);
  return 0;
}
