/* conn.c - a connection's life: the HTTP request, the RFC 6455 protocol
 * and the timeouts, over a transport (transport.h) with an output queue
 * (outq.h) */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>

#include "body.h"
#include "events.h"
#include "frame.h"
#include "frame_reader.h"
#include "h2.h"
#include "handshake.h"
#include "life.h"
#include "server.h"
#include "transport.h"
#include "utf8.h"

/* ------------------------------------------------------------------ */
/* Queueing output (outq.c keeps the bytes)                            */
/* ------------------------------------------------------------------ */

#define ANCHOR_MIN     8192    /* payloads from here on are not copied */
#define FLUSH_EAGER    (256u << 10)  /* write now, not at loop end */
#define MSG_MIN        4096    /* a reassembled message's first buffer */
#define ROOM_MIN       4096    /* from here on a message is written into
                                  a room of its handler's string */
/* After an HTTP answer that closes, the request's unread rest is read
 * and discarded for at most close_timeout and this many bytes, so that
 * a reset does not destroy the answer (RFC 9112 section 9.6). */
#define LINGER_MAX     (1u << 20)

/* Idle connections are cheap: keep an eye on what each one costs. */
_Static_assert(sizeof(void *) != 8 || sizeof(struct ms_conn) <= 192,
               "struct ms_conn grew past 192 bytes");

/* A written or dropped Lua string lets go of its registry reference;
 * without a state (lua_close is freeing everything) there is none to
 * release. */
static void unref_string(void *L, int ref) {
  if (L) luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

/* The server's prepare watcher runs only while it has work: started
 * here, stopped by ms_server_prepare_cb once none is left. */
static void wake_prepare(struct ms_server *s) {
  if (!ev_is_active(&s->prepare))
    ev_prepare_start(s->module->loop, &s->prepare);
}

static void mark_pending(struct ms_conn *c) {
  if (!(c->flags & CF_IN_PENDING)) {
    c->flags |= CF_IN_PENDING;
    c->next_pending = c->server->pending;
    c->server->pending = c;
    wake_prepare(c->server);
  }
}

void ms_conn_mark_pending(struct ms_conn *c) {
  mark_pending(c);
}

/* Bytes were queued: flushed before the loop sleeps, or as c's own io
 * callback ends when they are queued in it (conn_io_cb). */
static void mark_queued(struct ms_conn *c) {
  if (!(c->flags & CF_CORKED)) mark_pending(c);
}

/* Bytes were queued (rc 0) or memory ran out (-1). */
static int queued(struct ms_conn *c, int rc) {
  if (rc == 0) mark_queued(c);
  return rc;
}

static int out_copy(struct ms_conn *c, const void *data, size_t len) {
  return queued(c, outq_copy(&c->out, &c->server->chunks, data, len));
}

static int out_data_copy(struct ms_conn *c, const void *hdr, size_t hl,
                         const void *data, size_t len) {
  return queued(c, outq_data_copy(&c->out, &c->server->chunks, hdr, hl,
                                  data, len));
}

/* Queue a frame of a client: masked with a fresh key from a CSPRNG (RFC
 * 6455 section 5.3: the server's bytes must not be predictable to
 * whoever chose the payload).  Returns -1 out of memory or entropy. */
static int out_masked(struct ms_conn *c, unsigned opcode, unsigned rsv,
                      const void *data, size_t len) {
  uint8_t key[4];
  if (ms_client_random(c->server, key, 4) < 0) return -1;
  return queued(c, outq_masked(&c->out, &c->server->chunks, opcode, rsv,
                               data, len, key));
}

/* Queue a control frame (section 5.5): payload up to 125 bytes. */
static int out_control(struct ms_conn *c, unsigned opcode,
                       const void *payload, size_t len) {
  struct ms_metrics *mt = c->server->metrics;
  mt->messages_out[opcode]++;
  mt->bytes_out[opcode] += len;
  if (c->flags & CF_CLIENT) return out_masked(c, opcode, 0, payload, len);
  return queued(c, outq_control(&c->out, &c->server->chunks, opcode,
                                payload, len));
}

/* Queue the Lua string at idx of L without copying it: a registry
 * reference keeps it until it is written. */
static int out_anchor(struct ms_conn *c, lua_State *L, int idx,
                      const char *data, size_t len) {
  lua_pushvalue(L, idx);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (outq_borrow(&c->out, data, len, ref) < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return -1;
  }
  mark_queued(c);
  return 0;
}

static void out_clear(struct ms_conn *c, lua_State *L) {
  struct outq_release r = { unref_string, L };
  outq_clear(&c->out, &c->server->chunks, &r);
}

/* Cut the queue after the frame being written; returns the data
 * messages dropped. */
static unsigned out_drop(struct ms_conn *c) {
  struct outq_release r = { unref_string, c->server->module->L };
  return outq_drop(&c->out, &c->server->chunks, &r,
                   ms_transport_of(c)->whole_writes);
}

static void set_events(struct ms_conn *c, int events) {
  if ((c->io.events & (EV_READ | EV_WRITE)) == events) return;
  struct ev_loop *loop = c->server->module->loop;
  ev_io_stop(loop, &c->io);
  ev_io_set(&c->io, c->io.fd, events);
  if (!events) return;
  if (!(c->flags & CF_H2_STREAM)) {
    ev_io_start(loop, &c->io);
    return;
  }
  /* a stream of an HTTP/2 connection has no socket: its session reads
   * and writes for it (h2.c), and what it holds is read before the
   * loop sleeps */
  const struct ms_transport *t = ms_transport_of(c);
  if ((events & EV_READ) && t->pending && t->pending(c)) mark_pending(c);
}

static int read_events(struct ms_conn *c) {
  return c->flags & CF_PAUSED ? 0 : EV_READ;
}

/* ------------------------------------------------------------------ */
/* Input left incomplete between reads                                 */
/* ------------------------------------------------------------------ */

/* What a connection keeps of its input between reads, only while a
 * request head, a frame header, a frame or a message is incomplete: an
 * idle socket holds none.  feed() works on a copy on its stack (c->rx
 * points there, CF_RX_LOCAL), so a read of whole messages allocates
 * nothing for it. */
struct ms_rx {
  uint8_t *in;                      /* bytes not yet processed */
  size_t in_len;
  uint8_t *msg;                     /* message being reassembled */
  size_t msg_len, msg_cap;
  uint8_t msg_room;                 /* msg is a room (events.h) */
  struct frame_reader frames;       /* where the frame stream is */
  double since;                     /* when the frame or message under
                                       way was left incomplete, or 0 */
  uint32_t utf8;                    /* validator state, text messages */
  uint8_t ctl_len;
  uint8_t *ctl;                     /* control payload split over reads */
};

/* The message buffer of rx, a room or not. */
static void msg_free(struct ms_conn *c, struct ms_rx *rx) {
  if (rx->msg_room) ms_event_message_room_free(c, rx->msg);
  else free(rx->msg);
  c->server->held -= rx->msg_cap;
  rx->msg = NULL;
  rx->msg_cap = 0;
  rx->msg_room = 0;
}

static inline void rx_free_buffers(struct ms_conn *c, struct ms_rx *rx) {
  if (rx->msg_room) msg_free(c, rx);   /* (then msg is NULL) */
  c->server->held -= rx->msg_cap;
  /* most reads end holding none of them: no calls then */
  if (rx->in) free(rx->in);
  if (rx->msg) free(rx->msg);
  if (rx->ctl) free(rx->ctl);
}

/* Drop c's input state.  feed's copy is only emptied: feed still
 * refers to it, and frees nothing twice. */
static void rx_free(struct ms_conn *c) {
  struct ms_rx *rx = c->rx;
  if (!rx) return;
  rx_free_buffers(c, rx);
  if (c->flags & CF_RX_LOCAL) {
    memset(rx, 0, sizeof *rx);
  } else {
    free(rx);
    c->rx = NULL;
  }
}

/* ------------------------------------------------------------------ */
/* Closing                                                             */
/* ------------------------------------------------------------------ */

static double now_of(struct ms_conn *c) {
  return ev_now(c->server->module->loop);
}

/* What carries c, and where it counts in the gauges of open
 * connections (metrics.h): they see it by its flags and transport. */
static enum ms_carrier carrier_of(const struct ms_conn *c) {
  return c->flags & CF_H2_STREAM ? MS_CARRIER_STREAM
         : ms_transport_of(c) == &ms_transport_tls ? MS_CARRIER_TLS
         : MS_CARRIER_TCP;
}

static void count_conn(const struct ms_conn *c,
                       uint64_t gauge[MS_KINDS][MS_CARRIERS]) {
  gauge[c->flags & CF_UPGRADED ? MS_KIND_WS : c->flags & CF_H2
        ? MS_KIND_H2 : MS_KIND_HTTP][carrier_of(c)]++;
}

/* c's route counts in by_route too, when c came by a route that is
 * counted apart (metrics.h) */
static inline void count_route(const struct ms_conn *c, uint64_t *by_route) {
  if (c->opts->route >= 0) by_route[c->opts->route]++;
}

static void set_why(struct ms_conn *c, enum ms_why why) {
  if (c->why == WHY_NONE) c->why = (uint8_t)why;   /* the first cause */
}

/* A socket that is no longer open gets no more published messages. */
static void leave_topics(struct ms_conn *c) {
  if (c->subs) ms_topic_leave_all(&c->server->module->topics, c);
}

/* Tell the handler, once; unsent: its data messages never written. */
static void notify_close(struct ms_conn *c, int code, const char *reason,
                         size_t len, unsigned unsent) {
  if (c->flags & CF_NOTIFIED) return;
  c->flags |= CF_NOTIFIED;
  c->unsent = unsent;
  c->server->metrics->unsent += unsent;
  ms_metrics_close(c->server->metrics, code, c->why);
  leave_topics(c);
  ms_event_close(c, code, reason, len);
}

/* Free the message being inflated. */
static void inflated_free(struct ms_conn *c) {
  c->server->held -= c->deflate->message.cap;
  deflate_buf_free(&c->deflate->message);
}

/* A request body's bytes held for the app count in max_incomplete_bytes
 * (an HTTP/2 stream's are counted by h2.c); n of them go. */
static void body_unhold(struct ms_conn *c, size_t n) {
  if (!(c->flags & CF_H2_STREAM)) c->server->held -= n;
}

void ms_conn_free_buffers(struct ms_conn *c, lua_State *L) {
  out_clear(c, L);
  if (c->deflate) {
    deflate_state_free(&c->deflate->state);
    inflated_free(c);
    free(c->deflate);
    c->deflate = NULL;
  }
  rx_free(c);
  if (c->flags & CF_H2) ms_h2_free(c, L != NULL);
  if (ms_conn_body(c)) {      /* kept: its reader is told why it ended */
    body_unhold(c, c->body->len);
    ms_body_drop(c->body);
    if (!c->body->error) c->body->error = BODY_CLOSED;
  }
}

static void notify_failed(struct ms_conn *c, unsigned unsent);

/* Close the socket at once.  A WebSocket that was not closed cleanly
 * reports code (1006 for a lost connection) to its handler. */
static void abort_with(struct ms_conn *c, int code, const char *reason);

void ms_conn_abort(struct ms_conn *c, int code) {
  abort_with(c, code, "");
}

void ms_conn_abort_with(struct ms_conn *c, int code, const char *reason,
                        enum ms_why why) {
  set_why(c, why);
  abort_with(c, code, reason);
}

static void abort_with(struct ms_conn *c, int code, const char *reason) {
  if (c->state == CS_CLOSED) return;
  int was_ws = c->flags & CF_UPGRADED;
  struct ms_server *s = c->server;
  c->state = CS_CLOSED;
  ev_io_stop(s->module->loop, &c->io);
  c->prev->next = c->next;
  c->next->prev = c->prev;
  if (s->conns == c) s->conns = c->next == c ? NULL : c->next;
  s->nconns--;
  if (!(c->flags & CF_CLIENT)) {
    count_conn(c, s->metrics->closed);
    if (was_ws) count_route(c, s->metrics->route_closed);
  }
  set_why(c, WHY_LOST);
  leave_topics(c);
  /* told while the socket still exists: its peer's address is known */
  if (c->flags & CF_FAIL_PENDING) notify_failed(c, outq_unsent(&c->out));
  else if (was_ws)
    notify_close(c, code, reason, strlen(reason), outq_unsent(&c->out));
  ms_transport_of(c)->close(c);
  ms_conn_free_buffers(c, s->module->L);
  /* unanchor later, outside the callback that closed it */
  if (!(c->flags & CF_IN_PENDING)) {
    c->flags |= CF_IN_PENDING;
    c->next_pending = s->released;
    s->released = c;
    wake_prepare(s);
  }
}

static void start_draining(struct ms_conn *c) {
  if (!(c->flags & CF_UPGRADED)) c->lingered = 0;
  c->state = CS_DRAINING;
  c->deadline = now_of(c) + c->opts->close_timeout;
  rx_free(c);          /* what comes now is discarded */
  if (c->deflate) inflated_free(c);
  mark_pending(c);     /* flush, then shut down writing */
}

void ms_conn_drain(struct ms_conn *c) {
  start_draining(c);
}

static void send_close_frame(struct ms_conn *c, int code, const char *reason,
                             size_t len) {
  uint8_t payload[WS_CONTROL_MAX];
  size_t plen = 0;
  if (code) {
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    memcpy(payload + 2, reason, len);
    plen = 2 + len;
  }
  if (out_control(c, WS_OP_CLOSE, payload, plen) < 0)
    ms_conn_abort(c, 1006);
}

/* Start the closing handshake (section 7.1.2). */
void ms_conn_close(struct ms_conn *c, int code, const char *reason,
                   size_t reason_len, enum ms_why why) {
  if (c->state != CS_OPEN) return;
  set_why(c, why);
  send_close_frame(c, code, reason, reason_len);
  if (c->state == CS_CLOSED) return;
  c->state = CS_CLOSING;
  leave_topics(c);
  c->close_code = (uint16_t)code;
  c->deadline = now_of(c) + c->opts->close_timeout;
  ms_conn_resume_reading(c);          /* to read the peer's close frame */
}

static void respond_error(struct ms_conn *c, int status, const char *why,
                          int keep_alive);

/* Shutting down: an HTTP connection answers what it was asked (perhaps
 * by the very handler shutting down) and closes; an idle one closes. */
void ms_conn_end_http(struct ms_conn *c) {
  if (c->state == CS_H2) ms_h2_shutdown(c);
  if (c->state != CS_HTTP) return;
  c->flags &= ~CF_KEEP_ALIVE;
  if (c->flags & CF_WAITING) {      /* its answer would come too late */
    c->flags &= ~(uint32_t)CF_WAITING;
    respond_error(c, 503, "the server is shutting down", 0);
    return;
  }
  if (!outq_empty(&c->out)) start_draining(c);
  else if (!(c->flags & CF_IN_REQUEST)) ms_conn_abort(c, 0);
}

/* Why moonsocket fails a connection: the reason of its close frame. */
enum fail_reason {
  FAIL_PROTOCOL, FAIL_UNMASKED, FAIL_MASKED, FAIL_FRAME_LENGTH,
  FAIL_CLOSE_LENGTH, FAIL_CLOSE_CODE, FAIL_CLOSE_UTF8, FAIL_UTF8,
  FAIL_TOO_BIG, FAIL_BAD_DEFLATE, FAIL_INFLATE, FAIL_BACKPRESSURE,
  FAIL_TIMEOUT, FAIL_HELD
};

static const char *const fail_reasons[] = {
  [FAIL_PROTOCOL] = "protocol error",
  [FAIL_UNMASKED] = "client frame not masked",
  [FAIL_MASKED] = "server frame masked",
  [FAIL_FRAME_LENGTH] = "invalid frame length",
  [FAIL_CLOSE_LENGTH] = "close frame with a 1-byte payload",
  [FAIL_CLOSE_CODE] = "invalid close code",
  [FAIL_CLOSE_UTF8] = "close reason is not UTF-8",
  [FAIL_UTF8] = "invalid UTF-8 in a text message",
  [FAIL_TOO_BIG] = "message too big",
  [FAIL_BAD_DEFLATE] = "invalid compressed data",
  [FAIL_INFLATE] = "cannot inflate",
  [FAIL_BACKPRESSURE] = "send buffer limit exceeded",
  [FAIL_TIMEOUT] = "message timeout",
  [FAIL_HELD] = "server busy: too many incomplete messages",
};

/* A failed connection whose close frame waits behind queued messages
 * is told once the frame is out (nothing was lost) or once it is cut
 * off (what was still queued was). */
static void notify_failed(struct ms_conn *c, unsigned unsent) {
  const char *reason = fail_reasons[c->failed];
  c->flags &= ~(uint32_t)CF_FAIL_PENDING;
  notify_close(c, c->close_code, reason, strlen(reason), unsent);
}

/* Fail the WebSocket connection (section 7.1.7): send a close frame
 * saying why, stop reading frames, and close once the frame is out.
 * Replies the handler queued to messages that came before the bad
 * input go out first, as the peer may be reading them; only a peer
 * past the back-pressure limit, which is not reading, has what has not
 * begun to go out dropped, and is told at once: the messages lost
 * include one still being written, which may yet arrive whole. */
static void fail(struct ms_conn *c, int code, enum fail_reason r) {
  const char *why = fail_reasons[r];
  unsigned lost = 0;
  set_why(c, WHY_ERROR);
  if (c->state == CS_OPEN) {
    if (r == FAIL_BACKPRESSURE) {
      c->server->metrics->backpressure_closes++;
      lost = out_drop(c) + outq_unsent(&c->out);
    }
    send_close_frame(c, code, why, strlen(why));
  }
  if (c->state == CS_CLOSED) return;
  int queued = c->state == CS_OPEN && r != FAIL_BACKPRESSURE &&
               outq_unsent(&c->out) > 0;
  start_draining(c);
  if (!queued) {
    notify_close(c, code, why, strlen(why), lost);
    return;
  }
  leave_topics(c);
  c->close_code = (uint16_t)code;
  c->failed = r;
  c->flags |= CF_FAIL_PENDING;
}

/* ------------------------------------------------------------------ */
/* Writing                                                             */
/* ------------------------------------------------------------------ */

void ms_conn_flush(struct ms_conn *c) {
  /* written strings are unreferenced in the module's state */
  struct outq_release r = { unref_string, c->server->module->L };
  if (c->state == CS_CLOSED) return;
  if (c->state == CS_H2 && ms_h2_pull(c) < 0) {   /* its frames first */
    ms_conn_abort(c, 0);
    return;
  }
  ssize_t written = outq_flush(&c->out, &c->server->chunks, &r,
                               ms_transport_of(c)->write, c);
  if (written < 0) {
    ms_conn_abort(c, 1006);
    return;
  }
  if (written && (c->state == CS_HTTP || c->state == CS_DRAINING)) {
    /* a slow reader of a long response is not idle */
    c->deadline = now_of(c) + (c->state == CS_HTTP
                               ? c->opts->handshake_timeout
                               : c->opts->close_timeout);
  }
  if (!outq_empty(&c->out)) {
    c->flags |= CF_WRITE_WAIT;
    set_events(c, read_events(c) | EV_WRITE);
    return;
  }
  int drained = c->flags & CF_WRITE_WAIT;
  if (drained) {
    c->flags &= ~CF_WRITE_WAIT;
    set_events(c, read_events(c));
  }
  if (c->state == CS_DRAINING && !(c->flags & CF_SHUT_WR)) {
    if (c->flags & CF_FAIL_PENDING) {  /* the close frame is out */
      notify_failed(c, 0);
      if (c->state == CS_CLOSED) return;
    }
    /* all is out: half-close and read until the peer closes, so that a
     * reset does not destroy what we sent (RFC 7230 section 6.6) */
    c->flags |= CF_SHUT_WR;
    ms_transport_of(c)->shutdown(c);
    /* the peer has close_timeout from our FIN (and a read since is
     * later than deadline - close_timeout: ms_conn_close_delivered) */
    c->deadline = now_of(c) + c->opts->close_timeout;
    c->flags &= ~CF_PAUSED;
    set_events(c, EV_READ);
  } else if (drained && c->state == CS_OPEN) {
    ms_event_drain(c);
  } else if (c->state == CS_HTTP &&
             (c->flags & (CF_PAUSED | CF_WAITING)) == CF_PAUSED) {
    ms_conn_resume_reading(c);        /* the pipeline may go on */
  } else if (c->state == CS_H2) {
    ms_h2_written(c);
  }
}

/* Compress a message into the server's scratch buffer and queue it
 * with RSV1 set.  Returns 1 when queued, 0 to send it plain instead
 * (zlib failed: the compressor was dropped), -1 out of memory. */
static int send_compressed(struct ms_conn *c, unsigned opcode,
                           const char *data, size_t len) {
  struct deflate_buf *z = &c->server->zbuf;
  z->len = 0;
  if (deflate_compress(&c->deflate->state, &c->deflate->params,
                       (const uint8_t *)data, len, z) != DEFLATE_OK)
    return 0;
  c->server->metrics->deflate_in += len;
  c->server->metrics->deflate_out += z->len;
  uint8_t hdr[10];
  size_t hl = frame_write_header(hdr, opcode, 1, DEFLATE_RSV, z->len);
  int rc = out_data_copy(c, hdr, hl, z->data, z->len);
  if (z->cap > (1u << 20)) deflate_buf_free(z);   /* keep no huge buffer */
  return rc < 0 ? -1 : 1;
}

/* Whether a message may be queued: MS_SENT to go on, else why not.  A
 * consumer this slow is closed (policy 1008); the message is dropped
 * and the sender told so. */
static enum ms_send_status send_admit(struct ms_conn *c) {
  if (c->state != CS_OPEN) {
    c->server->metrics->dropped_closed++;
    return MS_DROPPED_CLOSED;
  }
  if (c->out.bytes > c->opts->max_backpressure) {
    /* what a callback sends goes out as it ends: bytes never offered to
     * the peer are not its back-pressure, so offer them first */
    if (!(c->flags & CF_WRITE_WAIT)) {
      ms_conn_flush(c);
      if (c->state != CS_OPEN) {
        c->server->metrics->dropped_closed++;
        return MS_DROPPED_CLOSED;
      }
      if (c->out.bytes <= c->opts->max_backpressure) return MS_SENT;
    }
    c->server->metrics->dropped_backpressure++;
    fail(c, 1008, FAIL_BACKPRESSURE);
    return MS_DROPPED_BACKPRESSURE;
  }
  return MS_SENT;
}

/* After queueing a message (rc -1: memory ran out): write at once when
 * much is queued, and say whether it went out or waits. */
static enum ms_send_status send_queued(struct ms_conn *c, int rc) {
  if (rc < 0) {
    ms_conn_abort(c, 1006);
    return MS_DROPPED_CLOSED;
  }
  if (c->out.bytes >= FLUSH_EAGER) ms_conn_flush(c);
  if (c->state == CS_CLOSED) return MS_DROPPED_CLOSED;
  if (!(c->flags & CF_WRITE_WAIT)) return MS_SENT;
  c->server->metrics->sends_queued++;
  return MS_QUEUED;
}

/* ms_conn_send of a client: every frame is masked, so copied. */
static enum ms_send_status client_send(struct ms_conn *c, unsigned opcode,
                                       const char *data, size_t len,
                                       int compress) {
  enum ms_send_status st = send_admit(c);
  if (st != MS_SENT) return st;
  c->server->metrics->messages_out[opcode]++;
  c->server->metrics->bytes_out[opcode] += len;
  unsigned rsv = 0;
  struct deflate_buf *z = &c->server->zbuf;
  if (compress && c->deflate && opcode < 8 &&
      deflate_should_compress(&c->deflate->params, len)) {
    z->len = 0;
    if (deflate_compress(&c->deflate->state, &c->deflate->params,
                         (const uint8_t *)data, len, z) == DEFLATE_OK) {
      data = (const char *)z->data;
      len = z->len;
      rsv = DEFLATE_RSV;             /* RFC 7692 section 6 */
    }
  }
  int rc = out_masked(c, opcode, rsv, data, len);
  if (z->cap > (1u << 20)) deflate_buf_free(z);   /* keep no huge buffer */
  return send_queued(c, rc);
}

enum ms_send_status ms_conn_send(struct ms_conn *c, unsigned opcode,
                                 const char *data, size_t len,
                                 lua_State *L, int idx, int compress) {
  if (c->flags & CF_CLIENT) return client_send(c, opcode, data, len,
                                               compress);
  enum ms_send_status st = send_admit(c);
  if (st != MS_SENT) return st;
  struct ms_metrics *mt = c->server->metrics;
  mt->messages_out[opcode]++;
  mt->bytes_out[opcode] += len;
  if (opcode < 8) count_route(c, mt->route_out);    /* data, not pings */
  int rc;
  int packed = compress && c->deflate && opcode < 8 &&
               deflate_should_compress(&c->deflate->params, len)
               ? send_compressed(c, opcode, data, len) : 0;
  if (packed) {
    rc = packed < 0 ? -1 : 0;
  } else if (len < ANCHOR_MIN) {
    /* the header written in the queue, the payload copied after it */
    size_t hl = frame_header_size(len);
    uint8_t *at = outq_data_reserve(&c->out, &c->server->chunks, hl + len);
    if (at) {
      if (hl == 2) {                  /* final, no RSV bit: section 5.2 */
        at[0] = (uint8_t)(0x80 | opcode);
        at[1] = (uint8_t)len;
      } else {
        frame_write_header(at, opcode, 1, 0, len);
      }
      if (len) memcpy(at + hl, data, len);
    }
    rc = queued(c, at ? 0 : -1);
  } else {
    uint8_t hdr[10];
    size_t hl = frame_write_header(hdr, opcode, 1, 0, len);
    if (L) {
      rc = outq_frame_copy(&c->out, &c->server->chunks, hdr, hl);
      if (rc == 0) rc = out_anchor(c, L, idx, data, len);
      if (rc == 0) outq_message(&c->out);
    } else {
      rc = out_data_copy(c, hdr, hl, data, len);
    }
  }
  return send_queued(c, rc);
}

enum ms_send_status ms_conn_send_frame(struct ms_conn *c,
                                       const uint8_t *frame, size_t len,
                                       struct ms_shared *sh) {
  enum ms_send_status st = send_admit(c);
  if (st != MS_SENT) return st;
  /* the payload's length, after a header of 2, 4 or 10 bytes */
  unsigned short7 = frame[1] & 127;
  struct ms_metrics *mt = c->server->metrics;
  mt->messages_out[frame[0] & 15]++;
  mt->bytes_out[frame[0] & 15] += len - (short7 == 127 ? 10
                                         : short7 == 126 ? 4 : 2);
  if ((frame[0] & 15) < 8) count_route(c, mt->route_out);
  int rc;
  if (!sh) {
    rc = outq_frame_copy(&c->out, &c->server->chunks, frame, len);
    if (rc == 0) outq_message(&c->out);
  } else {
    rc = outq_shared(&c->out, frame, len, sh);
  }
  return send_queued(c, queued(c, rc));
}

/* ------------------------------------------------------------------ */
/* HTTP                                                                */
/* ------------------------------------------------------------------ */

/* The reason phrase of every status RFC 9110 section 15 defines (306
 * and 418 are reserved there, without one), and of 429 and 431 (RFC
 * 6585). */
static const char *status_reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 203: return "Non-Authoritative Information";
  case 204: return "No Content";
  case 205: return "Reset Content";
  case 206: return "Partial Content";
  case 300: return "Multiple Choices";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 305: return "Use Proxy";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 402: return "Payment Required";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 406: return "Not Acceptable";
  case 407: return "Proxy Authentication Required";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 416: return "Range Not Satisfiable";
  case 417: return "Expectation Failed";
  case 421: return "Misdirected Request";
  case 422: return "Unprocessable Content";
  case 426: return "Upgrade Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: return "Unknown";
  }
}

/* Append s (without its NUL) at p; returns the end. */
static char *put_str(char *p, const char *s) {
  size_t n = strlen(s);
  memcpy(p, s, n);
  return p + n;
}

/* Append v in decimal at p; returns the end. */
static char *put_uint(char *p, unsigned long long v) {
  char digits[20];
  int k = 0;
  do digits[k++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (k) *p++ = digits[--k];
  return p;
}

static void body_answered(struct ms_conn *c, int keep);

void ms_conn_respond(struct ms_conn *c, int status, const char *headers,
                     size_t headers_len, const char *body, size_t body_len,
                     int file, int is_head) {
  if (c->state != CS_HTTP) {
    if (file >= 0) close(file);
    return;
  }
  int counted = status > 0 && status < MS_METRICS_STATUS ? status : 0;
  c->server->metrics->responses[counted]++;
  if (c->server->opts.access_log)
    ms_log_access(c, status, is_head || status == 204 || status == 304
                             ? 0 : body_len);
  if (c->flags & CF_HANDSHAKE) {
    c->flags &= ~(uint32_t)CF_HANDSHAKE;
    c->server->metrics->handshakes[counted]++;
  }
  if (c->flags & CF_H2_STREAM) {     /* HEADERS and DATA on its stream */
    ms_h2_respond(c, status, headers, headers_len, body, body_len, file,
                  is_head);
    return;
  }
  char head[256];
  /* a client that awaits 100 Continue may never send the body: what
   * would come next on the connection is unknown (RFC 9110 10.1.1) */
  if (ms_conn_body(c) && !c->body->done && c->body->expect == EXPECT_PENDING)
    c->flags &= ~CF_KEEP_ALIVE;
  int keep = c->flags & CF_KEEP_ALIVE;
  /* 204 and 304 have no body, nor a length (RFC 7230 section 3.3.2) */
  int bodiless = status == 204 || status == 304;
  /* HTTP/1.0 closes unless both sides say keep-alive (RFC 9112 9.3) */
  const char *connection = !keep ? "Connection: close\r\n"
                           : c->flags & CF_HTTP10
                           ? "Connection: keep-alive\r\n" : "";
  /* written by hand: snprintf cost a request more than its parsing */
  char *p = head;
  p = put_str(p, "HTTP/1.1 ");
  p = put_uint(p, (unsigned long long)status);
  *p++ = ' ';
  p = put_str(p, status_reason(status));
  p = put_str(p, "\r\n");
  if (!bodiless) {
    p = put_str(p, "Content-Length: ");
    p = put_uint(p, (unsigned long long)body_len);
    p = put_str(p, "\r\n");
  }
  p = put_str(p, connection);
  size_t n = (size_t)(p - head);
  int rc = out_copy(c, head, n) < 0 ||
           out_copy(c, headers, headers_len) < 0 ||
           out_copy(c, "\r\n", 2) < 0;
  if (!rc && !is_head && !bodiless && body_len) {
    if (file >= 0) {
      rc = outq_file(&c->out, file, body_len) < 0;
      if (!rc) file = -1;
    } else {
      rc = out_copy(c, body, body_len) < 0;
    }
  }
  if (file >= 0) close(file);
  if (rc) {
    ms_conn_abort(c, 0);
    return;
  }
  if (ms_conn_body(c)) body_answered(c, keep);
  if (!keep) start_draining(c);
}

/* The client's extension offers, every Sec-WebSocket-Extensions field
 * joined (RFC 7230 section 3.2.2), against the route's configuration. */
static int negotiate_deflate(const struct http_request *req,
                             const struct deflate_config *cfg,
                             struct deflate_params *params, char *ext) {
  char offers[8192];
  size_t len = 0;
  for (size_t i = 0; i < req->nheaders; i++) {
    const struct http_header *h = &req->headers[i];
    if (!http_ieq(h->name, h->name_len, "sec-websocket-extensions"))
      continue;
    if (len + h->value_len + 2 > sizeof offers) return 0;
    if (len) {
      memcpy(offers + len, ", ", 2);
      len += 2;
    }
    memcpy(offers + len, h->value, h->value_len);
    len += h->value_len;
  }
  return len && deflate_negotiate(offers, len, cfg, params, ext,
                                  DEFLATE_RESPONSE_MAX) == 1;
}

static int has_body(const struct http_request *req);
static int upgrade_response(struct ms_conn *c, const char *accept,
                            const char *protocol, const char *ext);

int ms_conn_upgrade(struct ms_conn *c, const struct http_request *req,
                    const char *protocol, const char **why) {
  char accept[WS_ACCEPT_LEN + 1];
  int h2 = c->flags & CF_H2_STREAM;   /* RFC 8441: no key, no 101 */
  int status = handshake_check(req, h2 ? NULL : accept, why);
  if (status) return status;
  /* a body's bytes would be read as frames: a smuggled request */
  if (has_body(req)) {
    *why = "an upgrade request must not carry a body";
    return 400;
  }
  char ext[DEFLATE_RESPONSE_MAX] = "";
  struct deflate_params params;
  if (c->opts->deflate.enabled && negotiate_deflate(req, &c->opts->deflate,
                                                    &params, ext)) {
    if (!(c->deflate = calloc(1, sizeof *c->deflate))) {
      ms_conn_abort(c, 0);
      *why = "out of memory";
      return 500;
    }
    c->deflate->params = params;
  }
  if (h2) {                     /* :status 200 on its stream */
    if (ms_h2_upgrade(c, protocol, ext) < 0) {
      ms_conn_abort(c, 0);
      *why = "out of memory";
      return 500;
    }
  } else if (upgrade_response(c, accept, protocol, ext) < 0) {
    ms_conn_abort(c, 0);
    *why = "out of memory";
    return 500;
  }
  c->state = CS_OPEN;
  c->flags = (c->flags | CF_UPGRADED) & ~(uint32_t)CF_HANDSHAKE;
  struct ms_metrics *mt = c->server->metrics;
  mt->handshakes[h2 ? 200 : 101]++;
  mt->closed[MS_KIND_HTTP][carrier_of(c)]++;    /* a WebSocket now */
  count_conn(c, mt->opened);
  count_route(c, mt->route_opened);
  c->opened = now_of(c);
  c->deadline = c->opened + c->opts->keep_alive_interval;
  return 0;
}

/* The 101 answer of an upgrade over HTTP/1.1 (section 4.2.2), queued;
 * -1 out of memory. */
static int upgrade_response(struct ms_conn *c, const char *accept,
                            const char *protocol, const char *ext) {
  static const char head[] = "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ";
  char resp[640];
  size_t plen = protocol ? strlen(protocol) : 0;
  int fits = sizeof head + WS_ACCEPT_LEN + plen + strlen(ext) + 64 <
             sizeof resp;
  char *p = resp;
  if (fits) {                   /* by hand, as ms_conn_respond does */
    p = put_str(p, head);
    p = put_str(p, accept);
    p = put_str(p, "\r\n");
    if (protocol) {
      p = put_str(p, "Sec-WebSocket-Protocol: ");
      p = put_str(p, protocol);
      p = put_str(p, "\r\n");
    }
    if (*ext) {
      p = put_str(p, "Sec-WebSocket-Extensions: ");
      p = put_str(p, ext);
      p = put_str(p, "\r\n");
    }
    p = put_str(p, "\r\n");
  }
  return fits ? out_copy(c, resp, (size_t)(p - resp)) : -1;
}

/* Whether a request carries a body, which this server does not read:
 * the connection then closes after the response. */
static int has_body(const struct http_request *req) {
  for (size_t i = 0; i < req->nheaders; i++) {
    const struct http_header *h = &req->headers[i];
    if (http_ieq(h->name, h->name_len, "transfer-encoding")) return 1;
    if (http_ieq(h->name, h->name_len, "content-length") &&
        !(h->value_len == 1 && h->value[0] == '0'))
      return 1;
  }
  return 0;
}

/* How the body of req is framed (RFC 9112 section 6): *length is its
 * Content-Length, or UINT64_MAX when it is chunked.  Returns 0, or 400
 * with why: Content-Length beside Transfer-Encoding (a smuggled request,
 * section 6.3), Content-Length values that differ or are no number, a
 * transfer coding other than chunked. */
static int body_framing(const struct http_request *req, uint64_t *length,
                        const char **why) {
  int lengths = 0, chunked = 0;
  *length = 0;
  for (size_t i = 0; i < req->nheaders; i++) {
    const struct http_header *h = &req->headers[i];
    if (http_ieq(h->name, h->name_len, "transfer-encoding")) {
      if (chunked || !http_ieq(h->value, h->value_len, "chunked")) {
        *why = "only the chunked transfer coding is accepted";
        return 400;
      }
      chunked = 1;
    } else if (http_ieq(h->name, h->name_len, "content-length")) {
      uint64_t n = 0;
      if (h->value_len == 0 || h->value_len > 15) {
        *why = "invalid Content-Length";
        return 400;
      }
      for (size_t k = 0; k < h->value_len; k++) {
        char ch = h->value[k];
        if (ch < '0' || ch > '9') {
          *why = "invalid Content-Length";
          return 400;
        }
        n = n * 10 + (uint64_t)(ch - '0');
      }
      if (lengths++ && n != *length) {
        *why = "Content-Length values differ";
        return 400;
      }
      *length = n;
    }
  }
  if (chunked && lengths) {
    *why = "Content-Length beside Transfer-Encoding";
    return 400;
  }
  if (chunked) *length = UINT64_MAX;
  return 0;
}

static int host_count(const struct http_request *req) {
  int n = 0;
  for (size_t i = 0; i < req->nheaders; i++)
    n += http_ieq(req->headers[i].name, req->headers[i].name_len, "host");
  return n;
}

static int wants_close(const struct http_request *req) {
  int close = req->minor_version == 0;
  for (size_t i = 0; i < req->nheaders; i++) {
    const struct http_header *h = &req->headers[i];
    if (!http_ieq(h->name, h->name_len, "connection")) continue;
    if (http_has_token(h->value, h->value_len, "close")) return 1;
    if (http_has_token(h->value, h->value_len, "keep-alive")) close = 0;
  }
  return close;
}

/* An error response with a short text body; the connection closes after
 * it unless keep_alive (a well-formed request may be followed by more). */
static void respond_error(struct ms_conn *c, int status, const char *why,
                          int keep_alive) {
  char hdr[128];
  int n = snprintf(hdr, sizeof hdr, "Content-Type: text/plain; "
                   "charset=utf-8\r\n%s", status != 426 ? "" :
                   "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
  char body[160];
  int bn = snprintf(body, sizeof body, "%d %s: %s\n", status,
                    status_reason(status), why);
  if (!keep_alive) c->flags &= ~CF_KEEP_ALIVE;
  ms_conn_respond(c, status, hdr, (size_t)n, body, (size_t)bn, -1, 0);
}

void ms_conn_respond_error(struct ms_conn *c, int status, const char *why,
                           int keep_alive) {
  respond_error(c, status, why, keep_alive);
}

static void next_request(struct ms_conn *c);
static void wait_answer(struct ms_conn *c);

/* Returns the bytes used, 0 when the head is incomplete. */
static size_t process_body(struct ms_conn *c, uint8_t *p, size_t n);
static int expects_continue(const struct http_request *req);
static int body_readable(const struct ms_body *b);

static size_t dispatch_request(struct ms_conn *c, struct http_request *req,
                               uint8_t *p, size_t n, size_t r);

static size_t process_http(struct ms_conn *c, uint8_t *p, size_t n,
                           size_t scanned) {
  struct ms_server *s = c->server;
  if (n >= 2 && p[0] == '\r' && p[1] == '\n')
    return 2;                /* an empty line before a request (7230 3.5) */
  struct http_header headers[s->limits.max_headers];
  struct http_request req;
  req.headers = headers;
  long r = http_parse_request((const char *)p, n, scanned, &s->limits, &req);
  if (r == 0) return 0;
  if (r == -505 && ms_h2_preface(p, n)) {  /* RFC 9113 3.4 */
    ms_h2_start(c, p, n);
    if (c->flags & CF_H2) {                /* an HTTP/2 session now */
      s->metrics->closed[MS_KIND_HTTP][carrier_of(c)]++;
      s->metrics->opened[MS_KIND_H2][carrier_of(c)]++;
    }
    return n;
  }
  if (r < 0) {
    int status = (int)-r;
    respond_error(c, status, status == 431 ? "request head too large"
                  : status == 414 ? "request line too long"
                  : status == 505 ? "only HTTP/1.x is served"
                  : "malformed request", 0);
    return n;
  }
  s->answering = &req;
  if (s->opts.access_log) s->answer_began = ev_time();
  size_t used = dispatch_request(c, &req, p, n, (size_t)r);
  s->answering = NULL;
  return used;
}

/* A parsed request: its body's framing, then the pipeline. */
static size_t dispatch_request(struct ms_conn *c, struct http_request *req,
                               uint8_t *p, size_t n, size_t r) {
  struct ms_server *s = c->server;
  uint64_t length;
  const char *why;
  int bad = body_framing(req, &length, &why);
  if (bad) {
    respond_error(c, bad, why, 0);
    return n;                  /* no byte after it is read as a request */
  }
  if (length != UINT64_MAX && length > s->opts.max_body_size) {
    respond_error(c, 413, "request body too large", 0);
    return n;
  }
  /* HTTP/1.0 has no Transfer-Encoding: its framing is faulty, and the
   * connection closes after the message (RFC 9112 section 6.1) */
  if (wants_close(req) || (req->minor_version == 0 && length == UINT64_MAX))
    c->flags &= ~CF_KEEP_ALIVE;
  else c->flags |= CF_KEEP_ALIVE;
  if (req->minor_version == 0) c->flags |= CF_HTTP10;
  else c->flags &= ~CF_HTTP10;
  size_t used = r;
  if (length) {
    /* what of the body came with the head is the app's at once */
    if (!(c->body = ms_body_new(length, expects_continue(req)))) {
      respond_error(c, 500, "out of memory", 0);
      return n;
    }
    c->body->serial = ++s->bodies;
    if (body_readable(c->body))
      c->body->deadline = now_of(c) + s->opts.body_timeout;
    used += process_body(c, p + r, n - r);
    if (c->state != CS_HTTP) return n;
  }
  if (req->minor_version >= 1 && host_count(req) != 1)
    respond_error(c, 400, "an HTTP/1.1 request needs one Host header", 0);
  else if (s->closing)
    respond_error(c, 503, "the server is shutting down", 0);
  else {
    c->flags |= CF_IN_REQUEST;
    ms_event_request(c, req);
    c->flags &= ~CF_IN_REQUEST;
  }
  if (c->state == CS_HTTP && (c->flags & CF_WAITING))
    wait_answer(c);
  else if (c->state == CS_HTTP && !ms_conn_body(c))
    next_request(c);
  return used;
}

/* Answered: the next request has its own deadline. */
static void next_request(struct ms_conn *c) {
  c->deadline = now_of(c) + c->server->opts.handshake_timeout;
  if (c->out.bytes > c->server->opts.max_backpressure) {
    c->flags |= CF_PAUSED;          /* pipelining faster than it reads */
    set_events(c, c->io.events & EV_WRITE);
  }
}

/* The pipeline waits before it answers: the requests pipelined after
 * this one wait their turn (reading pauses), for request_timeout at
 * most.  A plain socket is still watched, for a peer that leaves. */
static void wait_answer(struct ms_conn *c) {
  c->deadline = now_of(c) + c->server->opts.request_timeout;
  if (ms_conn_body(c) && body_readable(c->body)) return;  /* it reads on */
  c->flags |= CF_PAUSED;
  set_events(c, (c->io.events & EV_WRITE) |
                (ms_transport_of(c) == &ms_transport_tcp ? EV_READ : 0));
}

/* Readable while the pipeline waits: the peer left (abort: the answer
 * will be dropped), or sent more, which waits (stop watching). */
static void watch_waiting(struct ms_conn *c) {
  char b;
  ssize_t n = recv(c->io.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                 errno != EINTR))
    ms_conn_abort(c, 0);
  else if (n > 0)
    set_events(c, c->io.events & EV_WRITE);
}

void ms_conn_answered(struct ms_conn *c) {
  if (c->state == CS_HTTP && !ms_conn_body(c)) next_request(c);
  if ((c->state != CS_HTTP && c->state != CS_OPEN) ||
      (c->flags & CF_PAUSED))
    return;
  set_events(c, EV_READ | (c->io.events & EV_WRITE));
  if (c->rx && c->rx->in) mark_pending(c);   /* pipelined: go on */
}

/* ------------------------------------------------------------------ */
/* Request bodies (RFC 9112 section 6)                                 */
/* ------------------------------------------------------------------ */

/* Expect: 100-continue, which an HTTP/1.0 request cannot make (RFC 9110
 * section 10.1.1). */
static int expects_continue(const struct http_request *req) {
  if (req->minor_version == 0) return 0;
  for (size_t i = 0; i < req->nheaders; i++) {
    const struct http_header *h = &req->headers[i];
    if (http_ieq(h->name, h->name_len, "expect") &&
        http_ieq(h->value, h->value_len, "100-continue"))
      return 1;
  }
  return 0;
}

/* Whether more of b may be read now: not while its client awaits 100
 * Continue, nor while the app has as much as it may hold unread. */
static int body_readable(const struct ms_body *b) {
  if (b->done) return 0;
  if (b->discard) return 1;
  return !b->error && b->expect != EXPECT_PENDING &&
         (b->want == WANT_ALL || b->len < MS_BODY_HOLD);
}

/* Tell the app waiting for the body, before the loop sleeps. */
static void body_wake(struct ms_conn *c) {
  if (!c->body->want) return;
  c->body->want = WANT_NONE;
  c->flags |= CF_BODY_WAKE;
  mark_pending(c);
}

/* Read the body or stop, as body_readable says; its clock runs only
 * while it is read. */
static void body_pace(struct ms_conn *c) {
  struct ms_body *b = c->body;
  if (body_readable(b)) {
    if (b->deadline == 0)
      b->deadline = now_of(c) + c->server->opts.body_timeout;
    if (c->flags & CF_PAUSED) {
      c->flags &= ~CF_PAUSED;
      set_events(c, EV_READ | (c->io.events & EV_WRITE));
      if (c->rx && c->rx->in) mark_pending(c);
    }
  } else {
    b->deadline = 0;
  }
}

/* The body cannot be read to its end: the app is told why; status (0
 * once answered) answers the request and closes. */
static void body_fail(struct ms_conn *c, enum ms_body_error error,
                      int status, const char *why) {
  struct ms_body *b = c->body;
  b->error = (uint8_t)error;
  b->deadline = 0;
  body_wake(c);
  c->flags &= ~CF_KEEP_ALIVE;
  if (status && (c->flags & CF_WAITING)) {
    c->flags &= ~(uint32_t)CF_WAITING;
    c->flags &= ~CF_PAUSED;
  }
  if (status && !b->discard) respond_error(c, status, why, 0);
  else start_draining(c);       /* answered: flush it, then close */
}

/* The whole body is read: the answer is awaited (reading pauses: the
 * next request waits its turn), or it was given and the next request
 * may come. */
static void body_done(struct ms_conn *c) {
  struct ms_body *b = c->body;
  b->done = 1;
  b->deadline = 0;
  body_wake(c);
  if (b->discard) {
    body_unhold(c, b->len);
    ms_body_free(b);
    c->body = NULL;
    next_request(c);
  } else if (c->flags & CF_WAITING) {
    wait_answer(c);
  }
}

/* Body bytes at p[0..n), decoded in place; returns the bytes used.
 * Before the app asked for them, at most MS_BODY_HOLD are held. */
static size_t process_body(struct ms_conn *c, uint8_t *p, size_t n) {
  struct ms_server *s = c->server;
  struct ms_body *b = c->body;
  if (n == 0) return 0;
  if (!body_readable(b)) {
    ms_conn_pause(c);
    b->deadline = 0;
    return 0;
  }
  size_t room = n;
  if (!b->discard && b->want != WANT_ALL && MS_BODY_HOLD - b->len < n)
    room = MS_BODY_HOLD - b->len;  /* decoding never grows the bytes */
  size_t got, used;
  const char *why = NULL;
  enum ms_body_status st = ms_body_decode(b, p, room, s->opts.max_header_size,
                                          &got, &used, &why);
  if (st == BODY_INVALID) {
    body_fail(c, BODY_BAD, 400, why);
    return n;
  }
  if (b->total > s->opts.max_body_size) {   /* chunked, or discarded */
    body_fail(c, BODY_TOO_LARGE, 413, "request body too large");
    return n;
  }
  if (!b->discard && got &&
      s->held + got > s->opts.max_incomplete_bytes) {
    body_fail(c, BODY_BUSY, 503, ms_body_error_text(BODY_BUSY));
    return n;
  }
  if (!b->discard && ms_body_hold(b, p, got) < 0) {
    ms_conn_abort(c, 0);
    return n;
  }
  if (!b->discard) s->held += got;
  b->deadline = now_of(c) + s->opts.body_timeout;
  if (st == BODY_DONE) body_done(c);
  else if (got && b->want == WANT_SOME) body_wake(c);
  return used;
}

/* The request is answered: a body not read to its end is discarded,
 * and the connection serves the next request after it; or, when it
 * closes, dropped. */
static void body_answered(struct ms_conn *c, int keep) {
  struct ms_body *b = c->body;
  if (!b->error) b->error = BODY_ANSWERED;
  body_wake(c);
  body_unhold(c, b->len);
  if (b->done) {
    ms_body_free(b);
    c->body = NULL;
    return;
  }
  ms_body_drop(b);         /* kept while it closes: its reader is told */
  if (!keep) return;
  b->discard = 1;
  b->deadline = 0;
  if (!(c->flags & CF_WAITING)) body_pace(c);
}

void ms_conn_body_want(struct ms_conn *c, int want) {
  struct ms_body *b = c->body;
  if (c->state != CS_HTTP || !b || b->error) return;
  b->want = (uint8_t)want;
  if (c->flags & CF_H2_STREAM) {    /* the whole body: windows open */
    if (want == WANT_ALL) ms_h2_body_read(c, 0);
    body_pace(c);
    return;
  }
  if (b->expect == EXPECT_PENDING && !b->done) {
    b->expect = EXPECT_SENT;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (out_copy(c, cont, sizeof cont - 1) < 0) {
      ms_conn_abort(c, 0);
      return;
    }
  }
  body_pace(c);
}

void ms_conn_body_taken(struct ms_conn *c, size_t n) {
  struct ms_body *b = c->body;
  body_unhold(c, n);
  ms_body_taken(b, n);
  if (c->flags & CF_H2_STREAM) ms_h2_body_read(c, n);
  if (c->state == CS_HTTP) body_pace(c);
}

void ms_conn_body_data(struct ms_conn *c, const uint8_t *p, size_t n,
                       int end) {
  struct ms_body *b = ms_conn_body(c);
  if (c->state != CS_HTTP || !b || b->done || b->error || b->discard)
    return;
  if (ms_body_hold(b, p, n) < 0) {
    ms_conn_abort(c, 0);
    return;
  }
  b->total += n;
  b->deadline = now_of(c) + c->server->opts.body_timeout;
  if (end) body_done(c);
  else if (n && b->want == WANT_SOME) body_wake(c);
  if (c->state == CS_HTTP && ms_conn_body(c) && !end) body_pace(c);
}

void ms_conn_body_fail(struct ms_conn *c, int status, const char *why) {
  struct ms_body *b = ms_conn_body(c);
  if (c->state != CS_HTTP || !b || b->error) return;
  body_fail(c, status == 413 ? BODY_TOO_LARGE : BODY_BUSY, status, why);
}

void ms_conn_fail_held(struct ms_conn *c) {
  fail(c, 1009, FAIL_HELD);
}

/* The sweep: a body that stopped arriving.  Answered 408 while the app
 * waits for it; closed once answered. */
static void body_sweep(struct ms_conn *c, double now) {
  struct ms_body *b = c->body;
  if (b->deadline <= 0 || now < b->deadline) return;
  ms_log(c->server, MS_LOG_INFO, "a request body stopped arriving for "
         "body_timeout (%g s): answered 408", c->server->opts.body_timeout);
  body_fail(c, BODY_TIMEOUT, 408, "the request body did not arrive in time");
}

/* ------------------------------------------------------------------ */
/* WebSocket frames                                                    */
/* ------------------------------------------------------------------ */

static int valid_close_code(unsigned code) {
  /* section 7.4: the registered codes an endpoint may send, and the
   * ranges for libraries and applications */
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

static void handle_close_frame(struct ms_conn *c, const uint8_t *p,
                               size_t len) {
  unsigned code = 1005;                 /* no status code was present */
  const char *reason = "";
  size_t rlen = 0;
  if (len == 1) {
    fail(c, 1002, FAIL_CLOSE_LENGTH);
    return;
  }
  if (len >= 2) {
    code = (unsigned)p[0] << 8 | p[1];
    if (!valid_close_code(code)) {
      fail(c, 1002, FAIL_CLOSE_CODE);
      return;
    }
    reason = (const char *)p + 2;
    rlen = len - 2;
    if (utf8_validate(UTF8_ACCEPT, p + 2, rlen) != UTF8_ACCEPT) {
      fail(c, 1007, FAIL_CLOSE_UTF8);
      return;
    }
  }
  set_why(c, WHY_PEER);
  if (c->state == CS_OPEN) {
    /* echo the code (section 5.5.1), and the reason with it */
    send_close_frame(c, len >= 2 ? (int)code : 0, reason, rlen);
    if (c->state == CS_CLOSED) return;
  }
  start_draining(c);
  notify_close(c, (int)code, reason, rlen, 0);
}

static void handle_control(struct ms_conn *c, unsigned opcode,
                           const uint8_t *p, size_t len) {
  struct ms_metrics *mt = c->server->metrics;
  mt->messages_in[opcode]++;
  mt->bytes_in[opcode] += len;
  switch (opcode) {
  case WS_OP_PING:
    if (c->state == CS_OPEN) {         /* section 5.5.2 */
      if (c->out.bytes > c->opts->max_backpressure) {
        fail(c, 1008, FAIL_BACKPRESSURE);     /* a ping flood */
        break;
      }
      if (out_control(c, WS_OP_PONG, p, len) < 0) ms_conn_abort(c, 1006);
    }
    break;
  case WS_OP_PONG:
    if (c->state == CS_OPEN) ms_event_pong(c, p, len);
    break;
  case WS_OP_CLOSE:
    handle_close_frame(c, p, len);
    break;
  }
}

static int deliver(struct ms_conn *c, const uint8_t *p, size_t len,
                   unsigned op) {
  struct ms_rx *rx = c->rx;           /* feed's: stays while Lua runs */
  struct ms_metrics *mt = c->server->metrics;
  mt->messages_in[op]++;
  mt->bytes_in[op] += len;
  count_route(c, mt->route_in);
  rx->since = 0;
  int more = 1;
  /* a message sent before the peer saw our close frame still reaches
   * the handler, unless it declines it (section 7.1.2 lets us read on):
   * what it tries to send back is reported dropped, not silently lost */
  if (c->state == CS_OPEN || c->state == CS_CLOSING)
    more = ms_event_message(c, p, len, op);
  rx->msg_len = 0;
  if (rx->msg_cap > 4096) msg_free(c, rx);  /* keep no large buffer */
  return more;
}

/* Deliver a message in a room (events.h): the handler's then, or given
 * back. */
static int deliver_room(struct ms_conn *c, uint8_t *room, size_t len,
                        unsigned op) {
  struct ms_rx *rx = c->rx;
  if (room == rx->msg) {              /* not rx's any more */
    c->server->held -= rx->msg_cap;
    rx->msg = NULL;
    rx->msg_cap = 0;
    rx->msg_room = 0;
  }
  c->flags |= CF_MSG_ROOM;
  int more = deliver(c, room, len, op);
  if (c->flags & CF_MSG_ROOM) {       /* not taken */
    c->flags &= ~(uint32_t)CF_MSG_ROOM;
    ms_event_message_room_free(c, room);
  }
  return more;
}

/* Bytes c holds in incomplete messages. */
static size_t held_by(const struct ms_conn *c) {
  size_t n = c->rx ? c->rx->msg_cap : 0;
  return c->deflate ? n + c->deflate->message.cap : n;
}

/* Over max_incomplete_bytes, fail the socket holding the most (c when
 * none holds more), until the server is under it again: the others go
 * on.  Returns -1 when c can read no further. */
static int check_held(struct ms_conn *c) {
  struct ms_server *s = c->server;
  while (s->held > s->opts.max_incomplete_bytes) {
    struct ms_conn *most = c, *o = s->conns;
    size_t max = held_by(c);
    do {
      if ((o->state == CS_OPEN || o->state == CS_CLOSING) &&
          held_by(o) > max) {
        max = held_by(o);
        most = o;
      }
    } while ((o = o->next) != s->conns);
    if (max == 0) break;
    fail(most, 1009, FAIL_HELD);
    if (most == c) return -1;
  }
  /* a close handler run meanwhile may have closed c */
  return c->state == CS_OPEN || c->state == CS_CLOSING ? 0 : -1;
}

/* Room in the message being reassembled for len more bytes.  Its
 * buffer grows with the bytes that arrive, doubling (what a header
 * claims is not allocated before it comes), and never past the end of
 * its last frame or max_message_size; in the last frame, once as many
 * bytes have come as are still to come, it takes the whole message
 * (no copy by realloc for the last bytes).  Returns -1 after aborting
 * c. */
static int msg_reserve(struct ms_conn *c, size_t len, uint64_t rest,
                       int last) {
  struct ms_rx *rx = c->rx;
  size_t need = rx->msg_len + len;
  if (need <= rx->msg_cap) return 0;
  size_t cap = rx->msg_cap * 2 > MSG_MIN ? rx->msg_cap * 2 : MSG_MIN;
  if (cap > c->opts->max_message_size) cap = c->opts->max_message_size;
  if (cap < need) cap = need;
  if (last && rest <= need && cap - need < rest) cap = need + (size_t)rest;
  if (last && cap - need > rest) cap = need + (size_t)rest;
  /* the whole message: into the room of its string, if there is one */
  uint8_t *m = last && cap - need == rest && cap >= ROOM_MIN
               ? ms_event_message_room(c, cap) : NULL;
  if (m) {
    if (rx->msg_len) memcpy(m, rx->msg, rx->msg_len);
    msg_free(c, rx);
    rx->msg_room = 1;
  } else if (!(m = realloc(rx->msg, cap))) {
    ms_conn_abort(c, 1006);
    return -1;
  }
  c->server->held += cap - rx->msg_cap;
  rx->msg = m;
  rx->msg_cap = cap;
  return 0;
}

/* Over max_incomplete_bytes after a message grew: check_held.  Returns
 * -1 when c can read no further. */
static int msg_held(struct ms_conn *c) {
  return c->server->held > c->server->opts.max_incomplete_bytes
         ? check_held(c) : 0;
}

/* A frame began: the limits and the state of its message.  Returns 0,
 * or -1 after failing. */
static int begin_frame(struct ms_conn *c, const struct frame_header *h) {
  struct ms_rx *rx = c->rx;
  c->server->metrics->frames_in++;
  rx->ctl_len = 0;
  if (h->opcode >= 8) return 0;
  if (h->opcode != WS_OP_CONT) {
    rx->utf8 = UTF8_ACCEPT;
    /* RSV1 on a message's first frame: compressed (RFC 7692 6.1) */
    if (h->rsv & DEFLATE_RSV) c->flags |= CF_COMPRESSED;
    else c->flags &= ~(uint32_t)CF_COMPRESSED;
  }
  /* a compressed message is limited by its inflated size instead, as
   * it streams through zlib without being kept */
  if (!(c->flags & CF_COMPRESSED) &&
      rx->msg_len + h->length > c->opts->max_message_size) {
    fail(c, 1009, FAIL_TOO_BIG);
    return -1;
  }
  return 0;
}

/* Payload of a compressed message: inflate as it comes, check the
 * inflated text as it comes, deliver it at the end. */
static int inflate_payload(struct ms_conn *c, const struct frame_event *ev) {
  struct ms_rx *rx = c->rx;
  struct ms_deflate *d = c->deflate;
  int fin = ev->message_end;
  size_t before = d->message.len, cap = d->message.cap;
  int rc = deflate_inflate_chunk(&d->state, &d->params, ev->data, ev->len,
                                 fin, c->opts->max_message_size,
                                 &d->message);
  c->server->held += d->message.cap - cap;
  c->server->metrics->inflate_in += ev->len;
  c->server->metrics->inflate_out += d->message.len - before;
  if (rc != DEFLATE_OK) {
    fail(c, deflate_close_code(rc), rc == DEFLATE_TOO_BIG
         ? FAIL_TOO_BIG : rc == DEFLATE_BAD_DATA
         ? FAIL_BAD_DEFLATE : FAIL_INFLATE);
    return -1;
  }
  if (ev->msg_op == WS_OP_TEXT) {
    rx->utf8 = utf8_validate(rx->utf8, d->message.data + before,
                             d->message.len - before);
    if (rx->utf8 == UTF8_REJECT || (fin && rx->utf8 != UTF8_ACCEPT)) {
      fail(c, 1007, FAIL_UTF8);
      return -1;
    }
  }
  if (!fin) return c->server->held > c->server->opts.max_incomplete_bytes
                  ? check_held(c) : 0;
  int more = deliver(c, d->message.data, d->message.len, ev->msg_op);
  if (c->deflate) inflated_free(c);   /* an idle socket holds none */
  return more ? 0 : -1;
}

/* A control frame's payload, kept while it is split over reads. */
static int control_payload(struct ms_conn *c, const struct frame_event *ev) {
  struct ms_rx *rx = c->rx;
  if (ev->end && !rx->ctl) {
    handle_control(c, ev->opcode, ev->data, ev->len);
    return 0;
  }
  if (!rx->ctl && !(rx->ctl = malloc(WS_CONTROL_MAX))) {
    ms_conn_abort(c, 1006);
    return -1;
  }
  memcpy(rx->ctl + rx->ctl_len, ev->data, ev->len);
  rx->ctl_len = (uint8_t)(rx->ctl_len + ev->len);
  if (ev->end) {
    uint8_t *ctl = rx->ctl;
    rx->ctl = NULL;
    handle_control(c, ev->opcode, ctl, rx->ctl_len);
    free(ctl);
  }
  return 0;
}

/* A whole long message that came in one read: copied into room,
 * unmasked on the way (one pass), and delivered from there. */
static int room_payload(struct ms_conn *c, const struct frame_event *ev,
                        uint8_t *room) {
  struct ms_rx *rx = c->rx;
  if (ev->masked)
    frame_unmask_copy(room, ev->data, ev->len, ev->mask, ev->mask_off);
  else
    memcpy(room, ev->data, ev->len);
  if (ev->msg_op == WS_OP_TEXT &&
      utf8_validate(rx->utf8, room, ev->len) != UTF8_ACCEPT) {
    ms_event_message_room_free(c, room);
    fail(c, 1007, FAIL_UTF8);
    return -1;
  }
  return deliver_room(c, room, ev->len, ev->msg_op) ? 0 : -1;
}

/* Payload bytes of the current frame, still masked when ev->masked:
 * unmasked in place, or while copied into the message under way.
 * Returns -1 to stop. */
static int frame_payload(struct ms_conn *c, struct frame_event *ev) {
  struct ms_rx *rx = c->rx;
  int fin = ev->message_end;
  int append = ev->opcode < 8 && !(c->flags & CF_COMPRESSED) &&
               !(fin && rx->msg_len == 0);
  if (!append) {
    uint8_t *room;
    if (ev->len >= ROOM_MIN && ev->opcode < 8 &&
        !(c->flags & CF_COMPRESSED) &&
        (room = ms_event_message_room(c, ev->len)))
      return room_payload(c, ev, room);
    if (ev->masked) frame_unmask(ev->data, ev->len, ev->mask, ev->mask_off);
    if (ev->opcode >= 8) return control_payload(c, ev);
    if (c->flags & CF_COMPRESSED) return inflate_payload(c, ev);
  }
  uint8_t *data = ev->data;
  if (append) {                         /* one pass: copy and unmask */
    if (msg_reserve(c, ev->len, rx->frames.left, rx->frames.fin) < 0)
      return -1;
    if (ev->len) {                      /* (rx->msg may be NULL) */
      data = rx->msg + rx->msg_len;
      if (ev->masked)
        frame_unmask_copy(data, ev->data, ev->len, ev->mask, ev->mask_off);
      else
        memcpy(data, ev->data, ev->len);
      rx->msg_len += ev->len;
    }
  }
  if (ev->msg_op == WS_OP_TEXT) {
    rx->utf8 = utf8_validate(rx->utf8, data, ev->len);     /* fail fast */
    if (rx->utf8 == UTF8_REJECT || (fin && rx->utf8 != UTF8_ACCEPT)) {
      fail(c, 1007, FAIL_UTF8);
      return -1;
    }
  }
  if (!append)                          /* whole message in place */
    return deliver(c, ev->data, ev->len, ev->msg_op) ? 0 : -1;
  if (msg_held(c) < 0) return -1;
  if (!fin) return 0;
  int more = rx->msg_room
             ? deliver_room(c, rx->msg, rx->msg_len, ev->msg_op)
             : deliver(c, rx->msg, rx->msg_len, ev->msg_op);
  return more ? 0 : -1;
}

static const enum fail_reason frame_fail[] = {
  [FRAME_ERR_LENGTH] = FAIL_FRAME_LENGTH,
  [FRAME_ERR_UNMASKED] = FAIL_UNMASKED,
  [FRAME_ERR_MASKED] = FAIL_MASKED,
  [FRAME_ERR_PROTOCOL] = FAIL_PROTOCOL,
};

/* Consume frames from p[0..n).  Returns the bytes used; fewer than n
 * when the connection stops reading or leaves the WebSocket states. */
static size_t process_frames(struct ms_conn *c, uint8_t *p, size_t n) {
  struct ms_rx *rx = c->rx;
  unsigned flags = FRAME_LEAVE_MASKED | (c->deflate ? FRAME_RSV1 : 0) |
                   (c->flags & CF_CLIENT ? FRAME_FROM_SERVER : 0);
  size_t i = 0;
  while (i < n && (c->state == CS_OPEN || c->state == CS_CLOSING) &&
         !(c->flags & CF_PAUSED)) {
    struct frame_event ev;
    i += frame_read(&rx->frames, p + i, n - i, flags, &ev);
    if (ev.kind == FRAME_NEED_MORE) break;
    if (ev.kind == FRAME_ERROR) {
      fail(c, 1002, frame_fail[ev.error]);
      return n;
    }
    if (ev.begun && begin_frame(c, &ev.header) < 0) return n;
    if (frame_payload(c, &ev) < 0) break;
  }
  return i;
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */
/* ------------------------------------------------------------------ */

/* Process p[0..n) in order; returns the bytes used. */
static size_t process(struct ms_conn *c, uint8_t *p, size_t n,
                      size_t scanned) {
  size_t i = 0;
  for (;;) {
    if (c->flags & CF_PAUSED) return i;
    switch (c->state) {
    case CS_HTTP: {
      if (i == n) return n;
      size_t used = ms_conn_body(c) ? process_body(c, p + i, n - i)
                    : c->flags & CF_CLIENT
                    ? ms_client_response(c, p + i, n - i)
                    : process_http(c, p + i, n - i, i ? 0 : scanned);
      if (used == 0) return i;
      i += used;
      break;
    }
    case CS_OPEN: case CS_CLOSING:
      if (i == n) return n;
      i += process_frames(c, p + i, n - i);
      break;
    case CS_H2:
      if (i < n) ms_h2_recv(c, p + i, n - i);
      return n;
    default:
      return n;                   /* draining or closed: discarded */
    }
  }
}

/* After feed: the input state moves to the heap while something is
 * incomplete; else what is left of it is freed. */
static void rx_settle(struct ms_conn *c, struct ms_rx *rx) {
  c->flags &= ~CF_RX_LOCAL;
  c->rx = NULL;
  if (c->state != CS_CLOSED && c->state != CS_DRAINING &&
      (rx->in || frame_reader_busy(&rx->frames))) {
    /* message_timeout runs from when a frame or message is first left
     * incomplete: bytes a busy coroutine has not asked for are not */
    if (c->state == CS_HTTP || !frame_reader_busy(&rx->frames))
      rx->since = 0;
    else if (rx->since == 0)
      rx->since = now_of(c);
    if ((c->rx = malloc(sizeof *rx))) {
      *c->rx = *rx;
      return;
    }
    rx_free_buffers(c, rx);
    ms_conn_abort(c, 1006);
    return;
  }
  rx_free_buffers(c, rx);
}

/* Feed bytes: after those kept from before, if any; keep what is not
 * used (an incomplete request head, or frames a busy coroutine has not
 * asked for). */
static void feed(struct ms_conn *c, uint8_t *p, size_t n) {
  struct ms_rx rx = { 0 };
  if (c->rx) {                  /* left by the last read */
    rx = *c->rx;
    free(c->rx);
  }
  c->rx = &rx;
  c->flags |= CF_RX_LOCAL;
  uint8_t *owned = NULL;
  size_t scanned = 0;
  if (rx.in) {
    owned = realloc(rx.in, rx.in_len + n);
    if (!owned) {
      ms_conn_abort(c, 1006);
      rx_settle(c, &rx);
      return;
    }
    if (n) memcpy(owned + rx.in_len, p, n);
    /* the search for a head's end resumes where it stopped */
    scanned = c->flags & CF_HEAD_SCANNED ? rx.in_len : 0;
    p = owned;
    n += rx.in_len;
    rx.in = NULL;
    rx.in_len = 0;
  }
  size_t used = process(c, p, n, scanned);
  c->flags &= ~CF_HEAD_SCANNED;
  if (used < n && c->state != CS_CLOSED && c->state != CS_DRAINING) {
    if (c->state == CS_HTTP && !(c->flags & CF_PAUSED))
      c->flags |= CF_HEAD_SCANNED;
    size_t rest = n - used;
    if (owned) {
      memmove(owned, owned + used, rest);
      rx.in = owned;
      owned = NULL;
    } else if ((rx.in = malloc(rest))) {
      memcpy(rx.in, p + used, rest);
    }
    if (rx.in) rx.in_len = rest;
    else ms_conn_abort(c, 1006);
  }
  if (owned) free(owned);
  rx_settle(c, &rx);
}

static void on_eof(struct ms_conn *c) {
  if (c->state == CS_HTTP && !outq_empty(&c->out)) {
    start_draining(c);          /* answer what was asked, then close */
    return;
  }
  ms_conn_abort(c, 1006);
}

/* Answer plain HTTP sent to a TLS port in plain text, as nginx does,
 * and close: the client learns to use https:// or wss://.  The
 * transport is plain from here on. */
static void refuse_plain_http(struct ms_conn *c) {
  ms_log(c->server, MS_LOG_INFO, "plain HTTP on a TLS port: answered 400");
  respond_error(c, 400, "this port speaks TLS (https, wss)", 0);
}

/* Read into the server's buffer.  Returns the bytes, 0 at the end, -1
 * when nothing is there yet, -2 when the connection was closed for an
 * error. */
static ssize_t conn_recv(struct ms_conn *c) {
  struct ms_server *s = c->server;
  const struct ms_transport *t = ms_transport_of(c);
  size_t size = s->opts.receive_buffer_size;
  ssize_t n = c->state == CS_DRAINING ? t->discard(c, s->rbuf, size)
                                      : t->read(c, s->rbuf, size);
  if (n >= 0) return n;
  switch (n) {
  case MS_IO_AGAIN:
    return -1;
  case MS_IO_WANT_WRITE:
    c->flags |= CF_READ_WANTS_WRITE;
    set_events(c, c->io.events | EV_WRITE);
    return -1;
  case MS_IO_PLAIN_HTTP:
    refuse_plain_http(c);
    return -2;
  default:
    ms_conn_abort(c, 1006);
    return -2;
  }
}

/* Whether the transport holds read bytes the socket will not signal. */
static int read_pending(const struct ms_conn *c) {
  const struct ms_transport *t = ms_transport_of(c);
  return t->pending && t->pending(c);
}

static void conn_read(struct ms_conn *c);
static void watch_waiting(struct ms_conn *c);
static int conn_got(struct ms_conn *c, struct ev_loop *loop, size_t n);

static void conn_io(struct ms_conn *c, int revents) {
  if (revents & EV_WRITE) {
    if (c->flags & CF_READ_WANTS_WRITE) {
      c->flags &= ~(uint32_t)CF_READ_WANTS_WRITE;
      if (outq_empty(&c->out) && !(c->flags & CF_WRITE_WAIT))
        set_events(c, read_events(c));
      conn_read(c);
      if (c->state == CS_CLOSED) return;
    }
    ms_conn_flush(c);
    if (c->state == CS_CLOSED) return;
  }
  if (!(revents & EV_READ)) return;
  if (c->flags & CF_WRITE_WANTS_READ) {
    c->flags &= ~(uint32_t)CF_WRITE_WANTS_READ;
    ms_conn_flush(c);
    if (c->state == CS_CLOSED) return;
  }
  if (!(c->flags & CF_PAUSED)) conn_read(c);
  else if (c->flags & CF_WAITING) watch_waiting(c);
}

/* What the callback queues for c itself, the answers to what it read,
 * goes out as it ends in one write, as the prepare round would write
 * it (CF_CORKED: queueing does not mark c pending).  Past the open
 * state, or pending anyway, c is flushed in the prepare round. */
static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  struct ms_conn *c = (struct ms_conn *)w;
  (void)loop;
  c->flags |= CF_CORKED;
  conn_io(c, revents);
  c->flags &= ~(uint32_t)CF_CORKED;
  if (outq_empty(&c->out) || (c->flags & CF_IN_PENDING) ||
      c->state == CS_CLOSED)
    return;
  if (c->state == CS_OPEN) ms_conn_flush(c);
  else mark_pending(c);
}

static void conn_read(struct ms_conn *c) {
  struct ms_server *s = c->server;
  struct ev_loop *loop = s->module->loop;
  /* TLS may hold decrypted bytes the socket no longer signals */
  do {
    ssize_t n = conn_recv(c);
    if (n < 0) return;
    if (!conn_got(c, loop, (size_t)n)) return;
  } while (c->state != CS_CLOSED && !(c->flags & CF_PAUSED) &&
           read_pending(c));
}

/* Handle n bytes read into the server's buffer (0: the end of stream).
 * Returns whether reading may go on. */
static int conn_got(struct ms_conn *c, struct ev_loop *loop, size_t n) {
  struct ms_server *s = c->server;
  if (n == 0) {
    if (c->state == CS_DRAINING && (c->flags & CF_SHUT_WR))
      ms_conn_abort(c, 1006);    /* the peer closed too: done */
    else if (c->state == CS_DRAINING)
      set_events(c, c->io.events & EV_WRITE);  /* flush, then close */
    else
      on_eof(c);
    return 0;
  }
  c->last_read = ev_now(loop);
  if (c->state == CS_DRAINING) {             /* lingering: discard */
    if (!(c->flags & CF_UPGRADED) && (c->lingered += (unsigned)n) >
        LINGER_MAX) {
      ms_conn_abort(c, 0);                   /* enough: give up */
      return 0;
    }
    return 1;
  }
  c->ping_after = 0;          /* (draining, its storage holds unsent) */
  feed(c, s->rbuf, n);
  return c->state != CS_CLOSED;
}

/* Put c on the server's circular list of connections. */
static void conn_link(struct ms_conn *c, struct ms_server *s) {
  if (s->conns) {
    c->next = s->conns;
    c->prev = s->conns->prev;
    c->prev->next = c;
    c->next->prev = c;
  } else {
    c->next = c->prev = c;
    s->conns = c;
  }
  s->nconns++;
}

void ms_conn_start(struct ms_conn *c, struct ms_server *s, int fd) {
  c->server = s;
  c->opts = &s->opts;
  c->state = CS_HTTP;
  c->last_read = ev_now(s->module->loop);
  c->deadline = c->last_read + s->opts.handshake_timeout;
  conn_link(c, s);
  ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
  ms_transport_set(c, &ms_transport_tcp);
  ev_io_start(s->module->loop, &c->io);
  s->metrics->accepted[s->tls != NULL]++;
  if (s->tls && (c->ssl = ms_tls_accept(s->tls, fd)))
    ms_transport_set(c, &ms_transport_tls);
  count_conn(c, s->metrics->opened);
  if (!s->tls) return;
  if (!c->ssl) {
    ms_log(s, MS_LOG_ERROR, "cannot start TLS on a connection");
    ms_conn_abort(c, 0);
  }
}

void ms_conn_start_request(struct ms_conn *c, struct ms_conn *session,
                           const struct ms_transport *t) {
  struct ms_server *s = session->server;
  c->server = s;
  c->opts = &s->opts;
  c->state = CS_HTTP;
  c->flags |= CF_H2_STREAM;
  c->last_read = ev_now(s->module->loop);
  c->deadline = c->last_read + s->opts.request_timeout;
  conn_link(c, s);
  s->metrics->opened[MS_KIND_HTTP][MS_CARRIER_STREAM]++;
  /* never started: its descriptor tells the request its peer */
  ev_io_init(&c->io, conn_io_cb, session->io.fd, 0);
  ms_transport_set(c, t);
}

void ms_conn_start_client(struct ms_conn *c, struct ms_server *s, int fd,
                          void (*cb)(struct ev_loop *, ev_io *, int)) {
  c->server = s;
  c->state = CS_HTTP;
  /* a client's WebSocket reports its close even when it never opened */
  c->flags |= CF_CLIENT | CF_UPGRADED;
  c->last_read = ev_now(s->module->loop);
  c->deadline = c->last_read + c->opts->handshake_timeout;
  conn_link(c, s);
  ev_io_init(&c->io, cb, fd, EV_WRITE);
  ms_transport_set(c, &ms_transport_tcp);   /* client.c may set TLS */
  if (fd >= 0) ev_io_start(s->module->loop, &c->io);
}

void ms_conn_connected(struct ms_conn *c, const char *request,
                       size_t len) {
  ev_set_cb(&c->io, conn_io_cb);
  set_events(c, EV_READ);
  c->deadline = now_of(c) + c->opts->handshake_timeout;
  if (out_copy(c, request, len) < 0)
    ms_conn_abort_with(c, 1006, "out of memory", WHY_ERROR);
}

void ms_conn_resume_reading(struct ms_conn *c) {
  if (!(c->flags & CF_PAUSED) || c->state == CS_CLOSED) return;
  c->flags &= ~CF_PAUSED;
  set_events(c, EV_READ | (c->io.events & EV_WRITE));
  if (c->rx && c->rx->in) mark_pending(c);  /* kept bytes go first */
}

/* ------------------------------------------------------------------ */
/* The loop's hooks: before it sleeps, and the timeout sweep           */
/* ------------------------------------------------------------------ */

/* Before the loop sleeps, for a connection in its server's pending
 * list: input left for later is read, then the queue is flushed. */
void ms_conn_service(struct ms_conn *c) {
  if (c->flags & CF_BODY_WAKE) {
    c->flags &= ~(uint32_t)CF_BODY_WAKE;
    ms_event_body(c);
    if (c->state == CS_CLOSED) return;
  }
  if (c->rx && c->rx->in && !(c->flags & CF_PAUSED) &&
      c->state != CS_DRAINING)
    feed(c, NULL, 0);
  if (c->state != CS_CLOSED && !(c->flags & CF_PAUSED) && read_pending(c))
    conn_read(c);                 /* records decrypted before a pause */
  ms_conn_flush(c);
}

/* The timeouts of an open WebSocket: idle_timeout, the keep-alive ping
 * and its keep_alive_timeout. */
static void sweep_open(struct ms_conn *c, double now) {
  const struct ms_options *o = c->opts;
  if (c->rx && c->rx->since > 0 && o->message_timeout > 0 &&
      now - c->rx->since >= o->message_timeout) {
    fail(c, 1008, FAIL_TIMEOUT);
    return;
  }
  if (o->idle_timeout > 0 && now - c->last_read >= o->idle_timeout) {
    ms_conn_close(c, 1001, "idle timeout", 12, WHY_TIMEOUT);
    return;
  }
  if (c->ping_after > 0 && o->keep_alive_timeout > 0 &&
      now - (c->last_read + c->ping_after) >= o->keep_alive_timeout) {
    ms_conn_close(c, 1001, "keep-alive timeout", 18, WHY_TIMEOUT);
    return;
  }
  double every = o->keep_alive_interval;
  if (every <= 0 || now < c->deadline) return;
  if (now - c->last_read >= every) {
    if (out_control(c, WS_OP_PING, NULL, 0) < 0) {
      ms_conn_abort(c, 1006);
      return;
    }
    if (c->ping_after <= 0) c->ping_after = (float)(now - c->last_read);
    c->deadline = now + every;
  } else {
    c->deadline = c->last_read + every;
  }
}

/* The sweep's look at a connection: the timeout of its state. */
void ms_conn_sweep(struct ms_conn *c, double now) {
  switch (c->state) {
  case CS_HTTP:
    if (ms_conn_body(c) && c->body->deadline > 0 && now >= c->body->deadline)
      body_sweep(c, now);
    else if (now >= c->deadline && (c->flags & CF_CLIENT))
      ms_conn_abort_with(c, 1006, "handshake timeout", WHY_TIMEOUT);
    else if (now >= c->deadline && (c->flags & CF_WAITING)) {
      c->flags &= ~(uint32_t)CF_WAITING;
      ms_log(c->server, MS_LOG_WARN, "a request was not answered within "
             "request_timeout (%g s): answered 503",
             c->server->opts.request_timeout);
      respond_error(c, 503, "the application did not answer in time", 0);
    } else if (now >= c->deadline && !ms_conn_body(c))
      ms_conn_abort(c, 0);
    break;
  case CS_OPEN:
    sweep_open(c, now);
    break;
  case CS_H2:
    ms_h2_sweep(c, now);
    break;
  case CS_CLOSING: case CS_DRAINING:
    if (now >= c->deadline) {
      set_why(c, WHY_TIMEOUT);
      ms_conn_abort(c, 1006);
    }
    break;
  }
}

/* A graceful shutdown does not wait for the end of a peer that has
 * everything: once c has half-closed, its peer has acknowledged all we
 * sent, our FIN included, and has sent nothing since our FIN (so that
 * nothing of its is under way to meet a closed socket and draw a reset
 * that could destroy what it has not read yet), c is closed. */
void ms_conn_close_delivered(struct ms_conn *c) {
  const struct ms_transport *t = ms_transport_of(c);
  if (c->state != CS_DRAINING || !(c->flags & CF_SHUT_WR) || !t->delivered)
    return;
  if (c->last_read + c->opts->close_timeout > c->deadline) return;
  if (t->delivered(c)) ms_conn_abort(c, 1006);  /* as at the peer's end */
}

void ms_conn_pause(struct ms_conn *c) {
  if (c->state == CS_CLOSED || (c->flags & CF_PAUSED)) return;
  c->flags |= CF_PAUSED;
  set_events(c, c->io.events & EV_WRITE);
}

void ms_server_free_chunks(struct ms_server *s) {
  outq_pool_free(&s->chunks);
}
