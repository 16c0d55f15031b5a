/* h2.c - HTTP/2 (RFC 9113) with nghttp2: a session per connection,
 * requests to the Lua pipeline, answers to their streams */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "body.h"
#include "events.h"
#include "h2.h"
#include "http.h"
#include "log.h"
#include "server.h"
#include "transport.h"

/* Frames the session may have in c->out before it keeps the rest: a
 * peer that does not read holds this much of ours, not every answer. */
#define OUT_MAX (256u << 10)
/* A WebSocket's bytes taken from its queue for DATA frames, at most:
 * and never more than the peer's window lets through, so that what it
 * does not read stays queued, against max_backpressure. */
#define STAGE_MAX (64u << 10)

/* A request's head as HTTP/1.1 text, for the pipeline's parser: its
 * fields as they come, the pseudo-fields (section 8.3.1) apart. */
struct text {
  char *p;
  size_t len, cap;
};

struct ms_h2_stream {
  struct ms_h2 *h2;
  struct ms_h2_stream *prev, *next;  /* in h2->streams */
  struct ms_h2_stream *next_ready;   /* in h2->ready */
  struct ms_conn *req;               /* the request's connection, or NULL */
  int32_t id;
  uint8_t ready;                     /* in h2->ready */
  uint8_t gone;                      /* closed while in h2->ready */
  uint8_t answered;
  uint8_t started;                   /* handed to the pipeline */
  uint8_t connect;                   /* CONNECT: DATA is no body */
  uint8_t has_body;                  /* its HEADERS did not end it */
  /* a WebSocket on the stream (RFC 8441) */
  uint8_t ws;                        /* answered 200: DATA carries it */
  uint8_t ended;                     /* the peer's END_STREAM, or reset */
  uint8_t closed;                    /* nghttp2 is done with the stream */
  uint8_t shut;                      /* ours ends after what is staged */
  uint8_t reset;                     /* ... with RST_STREAM CANCEL */
  uint8_t eof;                       /* read_ws gave its last bytes */
  uint8_t end_read;                  /* its WebSocket read the end */
  double begun;                      /* its HEADERS came (a head not
                                        ended by handshake_timeout ends
                                        the connection) */
  double stalled_since;              /* the peer's window has held back
                                        its bytes since, or 0 */
  uint16_t status;                   /* an answer found before the
                                        pipeline (431, 413, 400, 503) */
  const char *why;
  size_t head_bytes, nfields;        /* against the header limits */
  struct text method, path, authority, protocol, cookie, fields;
  struct ms_body *body;              /* its body, until the pipeline
                                        has it (the request's c->body) */
  size_t held;                       /* its bytes in s->held: its body
                                        unread, or its WebSocket's DATA */
  size_t unconsumed;                 /* body bytes whose windows are
                                        not given back: unread */
  /* the answer's body: bytes, or a file */
  char *out;
  size_t out_len, out_sent;
  int fd;
  off_t file_off;
  size_t file_left;
  /* a WebSocket's bytes: received, not yet read (at most its window,
   * given back as read); taken from its queue, not yet in DATA */
  uint8_t *in, *staged;
  size_t in_len, in_off, staged_len, staged_off;
};

struct ms_h2 {
  nghttp2_session *session;
  struct ms_conn *conn;
  struct ms_h2_stream *streams;      /* open, a list */
  struct ms_h2_stream *ready, **ready_tail;  /* heads in, in order */
  size_t nstreams;
  double reset_tokens, reset_at;     /* the rapid reset bucket */
  double closing_since;              /* GOAWAY sent for good, or 0 */
  int blocked;                       /* c->out full: the session waits */
  double stuck_since;                /* blocked since, no byte taken by
                                        the peer meanwhile; or 0 */
  int goaway_due;                    /* shutting down: GOAWAY once the
                                        WebSockets have their 1001 out */
  size_t pulled;                     /* bytes the last pull queued */
  size_t unsent;                     /* answers' bytes not yet in DATA
                                        (files apart): past
                                        max_backpressure, the next
                                        requests wait */
  struct ms_h2_peer peer;            /* asked once, for every stream */
};

/* ------------------------------------------------------------------ */
/* Streams                                                             */
/* ------------------------------------------------------------------ */

static int text_add(struct text *t, const void *p, size_t n) {
  if (!n) return 0;          /* an empty value: t->p may still be NULL */
  if (t->len + n > t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    while (cap < t->len + n) cap *= 2;
    char *q = realloc(t->p, cap);
    if (!q) return -1;
    t->p = q;
    t->cap = cap;
  }
  memcpy(t->p + t->len, p, n);
  t->len += n;
  return 0;
}

static void text_free(struct text *t) {
  free(t->p);
  memset(t, 0, sizeof *t);
}

static void stream_head_free(struct ms_h2_stream *st) {
  text_free(&st->method);
  text_free(&st->path);
  text_free(&st->authority);
  text_free(&st->protocol);
  text_free(&st->cookie);
  text_free(&st->fields);
}

/* What st holds unread is no longer held: out of s->held, and the
 * windows of its body given back (the connection's: the stream may be
 * gone, or its DATA dropped from now on). */
static void stream_release(struct ms_h2_stream *st) {
  struct ms_h2 *h2 = st->h2;
  h2->conn->server->held -= st->held;
  st->held = 0;
  if (st->unconsumed && h2->session) {
    nghttp2_session_consume(h2->session, st->id, st->unconsumed);
    ms_conn_mark_pending(h2->conn);            /* WINDOW_UPDATE */
  }
  st->unconsumed = 0;
}

static void stream_body_free(struct ms_h2_stream *st) {
  stream_release(st);
  ms_body_free(st->body);
  st->body = NULL;
}

/* The request's connection lets go of its stream; it closes, unless
 * the Lua state is being closed (lua_close collects it anyway). */
static void stream_detach(struct ms_h2_stream *st, int abort) {
  struct ms_conn *rc = st->req;
  if (!rc) return;
  if (!st->ws) stream_release(st);       /* its body: read no more */
  st->req = NULL;
  rc->h2s = NULL;
  if (abort) ms_conn_abort(rc, st->ws ? 1006 : 0);  /* a WebSocket lost */
}

static void stream_free(struct ms_h2_stream *st) {
  stream_head_free(st);
  stream_body_free(st);
  st->h2->unsent -= st->out_len - st->out_sent;
  free(st->out);
  free(st->in);
  free(st->staged);
  if (st->fd >= 0) close(st->fd);
  free(st);
}

static void stream_unlink(struct ms_h2_stream *st) {
  struct ms_h2 *h2 = st->h2;
  if (st->prev) st->prev->next = st->next;
  else h2->streams = st->next;
  if (st->next) st->next->prev = st->prev;
  st->prev = st->next = NULL;
  h2->nstreams--;
}

/* A request's fields are bounded by max_header_size (their bytes as
 * HTTP/1.1 would carry them) and max_headers: past either it is
 * answered 431 (section 10.5.1) and what follows is counted, not kept;
 * far past them (an HPACK bomb) the stream is reset. */
static int field_limits(struct ms_h2_stream *st, size_t bytes, int field) {
  const struct ms_options *o = &st->h2->conn->server->opts;
  st->head_bytes += bytes;
  st->nfields += (size_t)field;
  if (st->head_bytes <= o->max_header_size && st->nfields <= o->max_headers)
    return 0;
  if (st->head_bytes > 4 * o->max_header_size ||
      st->nfields > 4 * o->max_headers)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (!st->status) {
    st->status = 431;
    st->why = "request head too large";
    stream_head_free(st);
  }
  return 1;
}

/* ------------------------------------------------------------------ */
/* The session's callbacks                                             */
/* ------------------------------------------------------------------ */

static ssize_t send_cb(nghttp2_session *session, const uint8_t *data,
                       size_t length, int flags, void *user) {
  struct ms_h2 *h2 = user;
  struct ms_conn *c = h2->conn;
  (void)session;
  (void)flags;
  if (c->out.bytes >= OUT_MAX) {
    h2->blocked = 1;
    return NGHTTP2_ERR_WOULDBLOCK;
  }
  if (outq_copy(&c->out, &c->server->chunks, data, length) < 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  h2->pulled += length;
  return (ssize_t)length;
}

static int begin_headers_cb(nghttp2_session *session,
                            const nghttp2_frame *frame, void *user) {
  struct ms_h2 *h2 = user;
  if (frame->hd.type != NGHTTP2_HEADERS ||
      frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  struct ms_h2_stream *st = calloc(1, sizeof *st);
  if (!st) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  st->h2 = h2;
  st->id = frame->hd.stream_id;
  st->fd = -1;
  st->begun = ev_now(h2->conn->server->module->loop);
  st->next = h2->streams;
  if (h2->streams) h2->streams->prev = st;
  h2->streams = st;
  h2->nstreams++;
  nghttp2_session_set_stream_user_data(session, st->id, st);
  return 0;
}

/* Whether a content-length (digits: nghttp2 checked it) is over max. */
static int content_length_over(const uint8_t *v, size_t len, uint64_t max) {
  uint64_t n = 0;
  for (size_t i = 0; i < len; i++) {
    if (n > max) return 1;            /* and no overflow */
    n = n * 10 + (uint64_t)(v[i] - '0');
  }
  return n > max;
}

static int header_cb(nghttp2_session *session, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  (void)flags;
  (void)user;
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  struct ms_h2_stream *st =
    nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!st || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;                               /* trailers are dropped */
  int pseudo = namelen && name[0] == ':';
  int rc = field_limits(st, namelen + valuelen + 4, !pseudo);
  if (rc) return rc < 0 ? rc : 0;
  if (st->status) return 0;
  struct text *t = NULL;
  if (pseudo) {                             /* validated by nghttp2 */
    if (namelen == 7 && memcmp(name, ":method", 7) == 0) t = &st->method;
    else if (namelen == 5 && memcmp(name, ":path", 5) == 0) t = &st->path;
    else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
      t = &st->authority;
    else if (namelen == 9 && memcmp(name, ":protocol", 9) == 0)
      t = &st->protocol;                  /* RFC 8441 section 4 */
    return t && text_add(t, value, valuelen) < 0
           ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
  }
  if (namelen == 4 && memcmp(name, "host", 4) == 0 && st->authority.len) {
    /* :authority stands for Host; one that differs is malformed
     * (section 8.3.1) */
    if (valuelen != st->authority.len ||
        memcmp(value, st->authority.p, valuelen) != 0) {
      st->status = 400;
      st->why = "Host differs from :authority";
    }
    return 0;
  }
  if (namelen == 14 && memcmp(name, "content-length", 14) == 0 &&
      content_length_over(value, valuelen,
                          st->h2->conn->server->opts.max_body_size)) {
    /* none of the body is read: 413 at once, as over HTTP/1.1 */
    st->status = 413;
    st->why = "request body too large";
    return 0;
  }
  if (namelen == 6 && memcmp(name, "cookie", 6) == 0) {
    /* split cookies are joined with "; " (section 8.2.3) */
    if ((st->cookie.len && text_add(&st->cookie, "; ", 2) < 0) ||
        text_add(&st->cookie, value, valuelen) < 0)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
  }
  if (text_add(&st->fields, name, namelen) < 0 ||
      text_add(&st->fields, ": ", 2) < 0 ||
      text_add(&st->fields, value, valuelen) < 0 ||
      text_add(&st->fields, "\r\n", 2) < 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return 0;
}

static void make_ready(struct ms_h2 *h2, struct ms_h2_stream *st) {
  if (st->ready) return;
  st->ready = 1;
  *h2->ready_tail = st;
  h2->ready_tail = &st->next_ready;
}

/* Rapid Reset (CVE-2023-44487): a peer may reset streams at
 * max_concurrent_streams a second, with a burst of twice that; past it
 * the connection ends with GOAWAY ENHANCE_YOUR_CALM (section 5.4.1). */
static void count_reset(struct ms_h2 *h2) {
  struct ms_conn *c = h2->conn;
  double rate = (double)c->server->opts.max_concurrent_streams;
  double now = ev_now(c->server->module->loop);
  h2->reset_tokens += (now - h2->reset_at) * rate;
  if (h2->reset_tokens > 2 * rate) h2->reset_tokens = 2 * rate;
  h2->reset_at = now;
  if (h2->reset_tokens >= 1) {
    h2->reset_tokens -= 1;
    return;
  }
  if (h2->closing_since) return;
  ms_log(c->server, MS_LOG_WARN, "HTTP/2: streams reset faster than %g a "
         "second: GOAWAY ENHANCE_YOUR_CALM", rate);
  nghttp2_session_terminate_session(h2->session, NGHTTP2_ENHANCE_YOUR_CALM);
  h2->closing_since = now;
}

/* The WebSocket on st has bytes to read, or its stream ended: it reads
 * before the loop sleeps (conn.c), not inside the session's callback. */
static void stream_wake(struct ms_h2_stream *st) {
  if (st->req && st->ws) ms_conn_mark_pending(st->req);
}

/* The peer's window grew (stream 0: the connection's): a WebSocket
 * whose queue waits for it takes more. */
static void window_opened(struct ms_h2 *h2, int32_t id) {
  for (struct ms_h2_stream *st = h2->streams; st; st = st->next)
    if (st->ws && st->req && (id == 0 || id == st->id) &&
        !outq_empty(&st->req->out))
      ms_conn_mark_pending(st->req);
}

static int frame_recv_cb(nghttp2_session *session, const nghttp2_frame *frame,
                         void *user) {
  struct ms_h2 *h2 = user;
  if (frame->hd.type == NGHTTP2_RST_STREAM) {
    count_reset(h2);
    return 0;
  }
  if (frame->hd.type == NGHTTP2_WINDOW_UPDATE) {
    window_opened(h2, frame->hd.stream_id);
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
    return 0;
  struct ms_h2_stream *st =
    nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!st) return 0;
  int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (end) st->ended = 1;
  if (st->started) {
    /* a WebSocket's end (RFC 8441 5.1), or its body's */
    if (end && st->ws) stream_wake(st);
    else if (end && st->req && !st->connect)
      ms_conn_body_data(st->req, NULL, 0, 1);
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS ||
      frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  /* the pipeline has a request at its head: its body, if any, streams
   * to it as it comes; CONNECT never ends its stream, and is answered
   * at once (section 8.5) */
  if (st->method.len == 7 && memcmp(st->method.p, "CONNECT", 7) == 0)
    st->connect = 1;
  st->has_body = !end && !st->connect;
  make_ready(h2, st);
  return 0;
}

/* Bytes that would take the server over max_incomplete_bytes: refused
 * as HTTP/1.1's are, the stream's and no other (503 for a request, 1009
 * "server busy" for a WebSocket). */
static int over_held(struct ms_server *s, size_t len) {
  return s->held + len > s->opts.max_incomplete_bytes;
}

static const char busy[] = "the server holds too many incomplete bytes";

/* DATA of a CONNECT stream: a WebSocket's bytes, kept for its reads,
 * which give the stream's window back (stream_read); the connection's
 * is given back at once, so that one WebSocket that does not read
 * stalls no other. */
static int tunnel_data(struct ms_h2 *h2, struct ms_h2_stream *st,
                       const uint8_t *data, size_t len) {
  struct ms_server *s = h2->conn->server;
  nghttp2_session_consume_connection(h2->session, len);
  if ((st->answered && !st->ws) || st->status || over_held(s, len)) {
    nghttp2_session_consume_stream(h2->session, st->id, len);
    if (st->answered && !st->ws) return 0;   /* refused: discarded */
    if (st->req && st->ws) ms_conn_fail_held(st->req);
    else if (st->req) ms_conn_respond_error(st->req, 503, busy, 0);
    else if (!st->status) {
      st->status = 503;
      st->why = busy;
    }
    return 0;
  }
  if (st->in_off && st->in_off == st->in_len) st->in_off = st->in_len = 0;
  uint8_t *in = realloc(st->in, st->in_len + len);
  if (!in) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  memcpy(in + st->in_len, data, len);
  st->in = in;
  st->in_len += len;
  st->held += len;
  s->held += len;
  stream_wake(st);
  return 0;
}

/* The body the pipeline reads, or, before it runs, the stream's. */
static struct ms_body *stream_body(struct ms_h2_stream *st) {
  if (!st->started) return st->body;
  return st->req ? ms_conn_body(st->req) : NULL;
}

/* Body bytes: held for the app, which reads them as they come; the
 * stream's window and the connection's are given back as it takes
 * them (req:read(n)), so that a client sending faster than the app
 * reads is held by flow control, a stream's unread bytes bounded by
 * its window (MS_BODY_HOLD), and the other streams go on; at once when
 * the app waits for the whole body (req:body()) or dropped it.  Within
 * max_body_size (else 413) and, with all the server holds besides,
 * max_incomplete_bytes (else 503). */
static int data_cb(nghttp2_session *session, uint8_t flags, int32_t id,
                   const uint8_t *data, size_t len, void *user) {
  struct ms_h2 *h2 = user;
  struct ms_server *s = h2->conn->server;
  (void)flags;
  struct ms_h2_stream *st = nghttp2_session_get_stream_user_data(session, id);
  if (st && st->connect) return tunnel_data(h2, st, data, len);
  struct ms_body *b = st && !st->status ? stream_body(st) : NULL;
  if (st && !st->started && !st->status && !b &&
      !(b = st->body = ms_body_new(0, 0)))
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (!b || b->done || b->error || b->discard) {
    nghttp2_session_consume(session, id, len);     /* dropped */
    return 0;
  }
  int status = b->total + len > s->opts.max_body_size ? 413
               : over_held(s, len) ? 503 : 0;
  if (status) {
    const char *why = status == 413 ? "request body too large" : busy;
    nghttp2_session_consume(session, id, len);
    if (st->started) {
      ms_conn_body_fail(st->req, status, why);
    } else {
      st->status = (uint16_t)status;
      st->why = why;
      stream_body_free(st);
    }
    return 0;
  }
  st->held += len;
  s->held += len;
  if (b->want == WANT_ALL) nghttp2_session_consume(session, id, len);
  else st->unconsumed += len;
  if (st->started) {
    ms_conn_body_data(st->req, data, len, 0);
  } else {
    if (ms_body_hold(b, data, len) < 0)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    b->total += len;
  }
  return 0;
}

static int stream_close_cb(nghttp2_session *session, int32_t id,
                           uint32_t error_code, void *user) {
  (void)error_code;
  (void)user;
  struct ms_h2_stream *st = nghttp2_session_get_stream_user_data(session, id);
  if (!st) return 0;
  nghttp2_session_set_stream_user_data(session, id, NULL);
  if (st->ws && st->req) {
    /* its WebSocket reads the end (1006 unless the closing handshake
     * came first) and frees the stream when it closes */
    st->closed = st->ended = 1;
    stream_wake(st);
    return 0;
  }
  stream_unlink(st);
  stream_detach(st, 1);          /* a request still waits: it is gone */
  if (st->ready) st->gone = 1;   /* freed by run_ready */
  else stream_free(st);
  return 0;
}

/* The answer's DATA: from its bytes, or read from its file. */
static ssize_t read_answer(nghttp2_session *session, int32_t id,
                           uint8_t *buf, size_t length, uint32_t *flags,
                           nghttp2_data_source *source, void *user) {
  struct ms_h2_stream *st = source->ptr;
  size_t n;
  (void)session;
  (void)id;
  (void)user;
  if (st->fd >= 0) {
    n = st->file_left < length ? st->file_left : length;
    ssize_t r = n ? pread(st->fd, buf, n, st->file_off) : 0;
    if (r < 0 || (r == 0 && n))      /* unreadable, or shrank under us */
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    n = (size_t)r;
    st->file_off += (off_t)n;
    st->file_left -= n;
    if (!st->file_left) *flags |= NGHTTP2_DATA_FLAG_EOF;
  } else {
    n = st->out_len - st->out_sent;
    if (n > length) n = length;
    memcpy(buf, st->out + st->out_sent, n);
    st->out_sent += n;
    st->h2->unsent -= n;
    if (st->out_sent == st->out_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return (ssize_t)n;
}

/* A DATA frame with its header fills a TLS record (16 KiB, RFC 8446
 * section 5.1), no more: a frame of the largest payload would take a
 * record and a 9-byte one, two writes where one does.  nghttp2 then
 * keeps it within the windows. */
static ssize_t data_length_cb(nghttp2_session *session, uint8_t frame_type,
                              int32_t id, int32_t session_window,
                              int32_t stream_window, uint32_t max_frame,
                              void *user) {
  (void)session;
  (void)frame_type;
  (void)id;
  (void)session_window;
  (void)stream_window;
  (void)user;
  size_t record = 16384 - 9;           /* a frame header: 9 bytes */
  return (ssize_t)(max_frame < record ? max_frame : record);
}

/* A WebSocket's DATA: the bytes staged from its queue (stream_write);
 * deferred while there are none, until its end. */
static ssize_t read_ws(nghttp2_session *session, int32_t id, uint8_t *buf,
                       size_t length, uint32_t *flags,
                       nghttp2_data_source *source, void *user) {
  struct ms_h2_stream *st = source->ptr;
  size_t n = st->staged_len - st->staged_off;
  (void)session;
  (void)id;
  (void)user;
  if (n > length) n = length;
  if (n) {
    memcpy(buf, st->staged + st->staged_off, n);
    st->staged_off += n;
  }
  if (st->staged_off < st->staged_len) return (ssize_t)n;
  free(st->staged);                  /* an idle WebSocket keeps none */
  st->staged = NULL;
  st->staged_len = st->staged_off = 0;
  if (st->req && !outq_empty(&st->req->out))
    ms_conn_mark_pending(st->req);   /* it stages more */
  if (!st->shut) return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
  *flags |= NGHTTP2_DATA_FLAG_EOF;   /* END_STREAM (RFC 8441 5.1) */
  st->eof = 1;
  if (st->reset) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
  return (ssize_t)n;
}

/* An answer is complete (END_STREAM) while its request's body is
 * still coming (413, or a handler that did not read it): RST_STREAM
 * NO_ERROR asks the client to stop sending it (section 8.1), rather
 * than have it read and dropped.  A WebSocket's last DATA is out: a
 * failed one, or one whose socket is gone while the peer's side is
 * still open, resets its stream. */
static int frame_send_cb(nghttp2_session *session, const nghttp2_frame *frame,
                         void *user) {
  (void)user;
  if (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  struct ms_h2_stream *st =
    nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!st) return 0;
  if (!st->ws) {
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !st->ended)
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id,
                                NGHTTP2_NO_ERROR);
    return 0;
  }
  if (frame->hd.type != NGHTTP2_DATA || !st->eof) return 0;
  if (st->reset || (!st->req && !st->ended))
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_CANCEL);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Requests to the pipeline                                            */
/* ------------------------------------------------------------------ */

/* The head as HTTP/1.1 text: "METHOD PATH HTTP/1.1", Host from
 * :authority, the cookies joined, the fields. */
static int build_head(struct ms_h2_stream *st, struct text *head) {
  static const char version[] = " HTTP/1.1\r\n";
  /* an extended CONNECT stands for the GET that asks for an upgrade
   * (RFC 8441 section 5); HTTP/2 forbids the fields that mark it
   * (section 8.2.2), so only an extended CONNECT has them */
  static const char upgrade[] = "upgrade: websocket\r\n"
                                "connection: upgrade\r\n";
  if ((st->connect ? text_add(head, "GET", 3)
                   : text_add(head, st->method.p, st->method.len)) < 0 ||
      text_add(head, " ", 1) < 0 ||
      text_add(head, st->path.p, st->path.len) < 0 ||
      text_add(head, version, sizeof version - 1) < 0)
    return -1;
  if (st->connect && text_add(head, upgrade, sizeof upgrade - 1) < 0)
    return -1;
  if (st->authority.len &&
      (text_add(head, "host: ", 6) < 0 ||
       text_add(head, st->authority.p, st->authority.len) < 0 ||
       text_add(head, "\r\n", 2) < 0))
    return -1;
  if (st->cookie.len &&
      (text_add(head, "cookie: ", 8) < 0 ||
       text_add(head, st->cookie.p, st->cookie.len) < 0 ||
       text_add(head, "\r\n", 2) < 0))
    return -1;
  if (st->fields.len && text_add(head, st->fields.p, st->fields.len) < 0)
    return -1;
  return text_add(head, "\r\n", 2);
}

static const char *status_why(int status) {
  return status == 431 ? "request head too large"
         : status == 414 ? "request line too long"
         : "malformed request";
}

/* Run the pipeline for a request whose head is in (its body streams to
 * it), on a connection of its own. */
static void run_request(struct ms_h2 *h2, struct ms_h2_stream *st) {
  struct ms_conn *c = h2->conn;
  struct ms_server *s = c->server;
  struct ms_conn *rc = ms_event_accept(s);
  if (!rc) {
    nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_INTERNAL_ERROR);
    return;
  }
  ms_conn_start_request(rc, c, &ms_transport_h2_stream);
  rc->h2s = st;
  st->req = rc;
  if (st->has_body && !st->status) {   /* read as it comes */
    if (!st->body && !(st->body = ms_body_new(0, 0))) {
      ms_conn_respond_error(rc, 500, "out of memory", 0);
      return;
    }
    rc->body = st->body;
    st->body = NULL;
    rc->body->done = st->ended;
    rc->body->serial = ++s->bodies;
    if (!st->ended)
      rc->body->deadline = ev_now(s->module->loop) + s->opts.body_timeout;
  }
  if (st->status) {
    ms_conn_respond_error(rc, st->status, st->why, 0);
    return;
  }
  struct text head = { 0 };
  /* CONNECT to a host (section 8.5) is no proxy's here; an extended
   * CONNECT (RFC 8441) opens a WebSocket, no other protocol */
  if (st->connect && !st->protocol.len) {
    ms_conn_respond_error(rc, 501, "CONNECT is not served", 0);
    return;
  }
  if (st->connect && !http_ieq(st->protocol.p, st->protocol.len,
                               "websocket")) {
    ms_conn_respond_error(rc, 501, "only the websocket protocol is served",
                          0);
    return;
  }
  if (!st->method.len || !st->path.len) {
    ms_conn_respond_error(rc, 400, "malformed request", 0);
    return;
  }
  if (build_head(st, &head) < 0) {
    ms_conn_respond_error(rc, 500, "out of memory", 0);
    return;
  }
  stream_head_free(st);
  struct http_header headers[s->limits.max_headers];
  struct http_request req;
  req.headers = headers;
  long r = http_parse_request(head.p, head.len, 0, &s->limits, &req);
  if (r <= 0)
    ms_conn_respond_error(rc, r ? (int)-r : 400, status_why((int)-r), 0);
  else if (s->closing)
    ms_conn_respond_error(rc, 503, "the server is shutting down", 0);
  else {
    rc->flags |= CF_IN_REQUEST;
    ms_event_request(rc, &req);
    rc->flags &= ~CF_IN_REQUEST;
    if (rc->state == CS_HTTP && (rc->flags & CF_WAITING))
      rc->deadline = ev_now(s->module->loop) + s->opts.request_timeout;
    else if (rc->state == CS_HTTP)     /* neither answered nor waiting */
      ms_conn_abort(rc, 0);
  }
  text_free(&head);
}

/* The requests whose heads a read completed, in order.  A request may
 * close the connection (its handler shuts the server down at once,
 * say): then the session is gone, and so are the rest.  While the
 * answers the peer has not taken hold more than max_backpressure, the
 * next request waits for them to go out (ms_h2_written): a peer that
 * opens many streams and reads none of their answers holds about that
 * much, as a pipeline over HTTP/1.1 does, not every answer at once. */
static void run_ready(struct ms_conn *c) {
  while (c->state == CS_H2 && c->h2->ready) {
    struct ms_h2 *h2 = c->h2;
    struct ms_h2_stream *st = h2->ready;
    if (!st->gone && !h2->closing_since &&
        h2->unsent > c->server->opts.max_backpressure)
      return;
    h2->ready = st->next_ready;
    if (!h2->ready) h2->ready_tail = &h2->ready;
    st->ready = 0;
    st->next_ready = NULL;
    st->started = 1;
    if (st->gone) stream_free(st);
    else if (!h2->closing_since) run_request(h2, st);
  }
}

/* ------------------------------------------------------------------ */
/* Answers                                                             */
/* ------------------------------------------------------------------ */

/* Fields a handler may not send over HTTP/2 (section 8.2.2), beside
 * those the core writes; name is lowercase.  By length first. */
static int connection_field(const char *name, size_t len) {
  switch (len) {
  case 7: return memcmp(name, "upgrade", 7) == 0;
  case 10: return memcmp(name, "connection", 10) == 0 ||
                  memcmp(name, "keep-alive", 10) == 0;
  case 14: return memcmp(name, "content-length", 14) == 0;
  case 16: return memcmp(name, "proxy-connection", 16) == 0;
  case 17: return memcmp(name, "transfer-encoding", 17) == 0;
  default: return 0;
  }
}

static nghttp2_nv make_nv(const char *name, size_t nl, const char *value,
                          size_t vl) {
  nghttp2_nv nv = { (uint8_t *)name, (uint8_t *)value, nl, vl,
                    NGHTTP2_NV_FLAG_NONE };
  return nv;
}

/* The decimal digits of v at p; returns the end. */
static char *put_decimal(char *p, size_t v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *p++ = tmp[--n];
  return p;
}

/* An answer's fields, on the stack when they are few and short (most
 * are), else on the heap. */
#define NV_SMALL 24
#define COPY_SMALL 2048

static void answer_free(char *copy, nghttp2_nv *nv, int file) {
  free(copy);
  free(nv);
  if (file >= 0) close(file);
}

void ms_h2_respond(struct ms_conn *c, int status, const char *headers,
                   size_t headers_len, const char *body, size_t body_len,
                   int file, int is_head) {
  struct ms_h2_stream *st = c->h2s;
  if (ms_conn_body(c) && c->body->error) {
    ms_body_drop(c->body);      /* kept: its reader is told why it failed */
  } else if (ms_conn_body(c)) { /* read, or no longer to be: done */
    ms_body_free(c->body);
    c->body = NULL;
  }
  if (!st || st->answered) {
    if (file >= 0) close(file);
    ms_conn_abort(c, 0);
    return;
  }
  if (st->connect && status >= 200 && status < 300) {
    /* a 2xx would tell the client its WebSocket is open (RFC 8441
     * section 5): a path that answers without one has none */
    if (file >= 0) close(file);
    ms_conn_respond_error(c, 404, "no WebSocket at this path", 0);
    return;
  }
  struct ms_h2 *h2 = st->h2;
  /* "Name: value\r\n" lines, the names lowercased (section 8.2.1) */
  size_t lines = 0;
  for (const char *q = headers, *end = headers + headers_len;
       (q = memchr(q, '\n', (size_t)(end - q))); q++)
    lines++;
  char copy_small[COPY_SMALL];
  nghttp2_nv nv_small[NV_SMALL];
  char *copy_heap = NULL;
  nghttp2_nv *nv_heap = NULL;
  if (headers_len > sizeof copy_small)
    copy_heap = malloc(headers_len);
  if (lines + 2 > NV_SMALL)
    nv_heap = malloc((lines + 2) * sizeof *nv_heap);
  if ((headers_len > sizeof copy_small && !copy_heap) ||
      (lines + 2 > NV_SMALL && !nv_heap)) {
    answer_free(copy_heap, nv_heap, file);
    ms_conn_abort(c, 0);
    return;
  }
  char *copy = copy_heap ? copy_heap : copy_small;
  nghttp2_nv *nv = nv_heap ? nv_heap : nv_small;
  if (headers_len) memcpy(copy, headers, headers_len);
  size_t n = 0;
  char code[3] = { (char)('0' + status / 100 % 10),
                   (char)('0' + status / 10 % 10),
                   (char)('0' + status % 10) };
  char length[24];
  nv[n++] = make_nv(":status", 7, code, 3);
  int bodiless = status == 204 || status == 304;
  if (!bodiless)
    nv[n++] = make_nv("content-length", 14, length,
                      (size_t)(put_decimal(length, body_len) - length));
  for (char *p = copy, *end = copy + headers_len; p < end;) {
    char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) break;
    char *line_end = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
    char *colon = memchr(p, ':', (size_t)(line_end - p));
    if (colon) {
      char *v = colon + 1;
      while (v < line_end && (*v == ' ' || *v == '\t')) v++;
      for (char *k = p; k < colon; k++)
        if (*k >= 'A' && *k <= 'Z') *k = (char)(*k + 32);
      if (!connection_field(p, (size_t)(colon - p)))
        nv[n++] = make_nv(p, (size_t)(colon - p), v,
                          (size_t)(line_end - v));
    }
    p = eol + 1;
  }
  int with_data = !is_head && !bodiless && body_len;
  if (with_data && file >= 0) {
    st->fd = file;
    st->file_left = body_len;
    file = -1;
  } else if (with_data) {
    if (!(st->out = malloc(body_len))) {
      answer_free(copy_heap, nv_heap, file);
      ms_conn_abort(c, 0);
      return;
    }
    memcpy(st->out, body, body_len);
    st->out_len = body_len;
    h2->unsent += body_len;
  }
  nghttp2_data_provider data = { .source.ptr = st,
                                 .read_callback = read_answer };
  int rv = nghttp2_submit_response(h2->session, st->id, nv, n,
                                   with_data ? &data : NULL);
  answer_free(copy_heap, nv_heap, file);   /* nghttp2 copied them */
  st->answered = 1;
  if (rv != 0)
    nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_INTERNAL_ERROR);
  stream_detach(st, 1);
  ms_conn_mark_pending(h2->conn);
}

/* ------------------------------------------------------------------ */
/* A request's transport, and a WebSocket's (RFC 8441)                 */
/* ------------------------------------------------------------------ */

int ms_h2_upgrade(struct ms_conn *c, const char *protocol, const char *ext) {
  struct ms_h2_stream *st = c->h2s;
  if (!st || st->answered) return -1;
  struct ms_h2 *h2 = st->h2;
  nghttp2_nv nv[3];
  size_t n = 0;
  nv[n++] = make_nv(":status", 7, "200", 3);
  if (protocol)
    nv[n++] = make_nv("sec-websocket-protocol", 22, protocol,
                      strlen(protocol));
  if (*ext)
    nv[n++] = make_nv("sec-websocket-extensions", 24, ext, strlen(ext));
  nghttp2_data_provider data = { .source.ptr = st, .read_callback = read_ws };
  if (nghttp2_submit_response(h2->session, st->id, nv, n, &data) != 0)
    return -1;
  st->answered = st->ws = 1;
  ms_conn_mark_pending(h2->conn);
  if (st->in_len > st->in_off || st->ended) ms_conn_mark_pending(c);
  return 0;
}

struct ms_h2_peer *ms_h2_peer(struct ms_conn *c) {
  struct ms_h2_stream *st = c->h2s;
  return st ? &st->h2->peer : NULL;
}

void ms_h2_body_read(struct ms_conn *c, size_t n) {
  struct ms_h2_stream *st = c->h2s;
  struct ms_body *b = ms_conn_body(c);
  if (!st || st->ws) return;
  if (n > st->held) n = st->held;
  st->held -= n;
  c->server->held -= n;
  size_t back = b && b->want == WANT_ALL ? st->unconsumed
                : n < st->unconsumed ? n : st->unconsumed;
  if (!back) return;
  nghttp2_session_consume(st->h2->session, st->id, back);
  st->unconsumed -= back;
  ms_conn_mark_pending(st->h2->conn);           /* WINDOW_UPDATE */
}

/* A request reads nothing; a WebSocket reads its stream's DATA, and
 * each read gives as much of the stream's window back.  0 once the
 * peer ended the stream (END_STREAM, RST_STREAM) and all is read. */
static ssize_t stream_read(struct ms_conn *c, void *buf, size_t n) {
  struct ms_h2_stream *st = c->h2s;
  if (!st) return 0;
  if (!st->ws) return MS_IO_AGAIN;
  size_t have = st->in_len - st->in_off;
  if (!have && st->ended) st->end_read = 1;
  if (!have) return st->ended ? 0 : MS_IO_AGAIN;
  if (n > have) n = have;
  memcpy(buf, st->in + st->in_off, n);
  st->in_off += n;
  st->held -= n;
  c->server->held -= n;
  if (st->in_off == st->in_len) {    /* an idle WebSocket keeps none */
    free(st->in);
    st->in = NULL;
    st->in_len = st->in_off = 0;
  }
  if (!st->closed) {
    nghttp2_session_consume_stream(st->h2->session, st->id, n);
    ms_conn_mark_pending(st->h2->conn);     /* WINDOW_UPDATE */
  }
  return (ssize_t)n;
}

/* The end is told once, as a socket's EOF wakes a reader once: a
 * WebSocket draining its close frame into a shut window would else be
 * woken again at every flush, before the loop sleeps, for ever.  Once
 * nghttp2 is done with the stream it is told again, to end it. */
static int stream_pending(const struct ms_conn *c) {
  const struct ms_h2_stream *st = c->h2s;
  return st && st->ws && (st->in_len > st->in_off || st->closed ||
                          (st->ended && !st->end_read));
}

/* A WebSocket's queue into DATA: what the peer's windows (the stream's
 * and the connection's) let through, staged for read_ws.  0 when they
 * are shut: the rest stays queued until WINDOW_UPDATE. */
static ssize_t stream_write(struct ms_conn *c, size_t budget) {
  struct ms_h2_stream *st = c->h2s;
  if (!st || st->closed) return MS_IO_ERROR;
  if (!st->ws) return 0;
  nghttp2_session *session = st->h2->session;
  int32_t window = nghttp2_session_get_stream_remote_window_size(session,
                                                                 st->id);
  size_t staged = st->staged_len - st->staged_off;
  if (window < 0 || (size_t)window <= staged || staged >= STAGE_MAX)
    return 0;
  size_t want = (size_t)window - staged;
  if (want > STAGE_MAX - staged) want = STAGE_MAX - staged;
  if (want > budget) want = budget;
  struct outq_span head;
  outq_head(&c->out, &head);
  if (head.fd >= 0) return MS_IO_ERROR;      /* a WebSocket sends none */
  if (want > head.len) want = head.len;
  if (!want) return 0;
  if (!st->staged && !(st->staged = malloc(STAGE_MAX))) return MS_IO_ERROR;
  if (st->staged_off) {
    memmove(st->staged, st->staged + st->staged_off, staged);
    st->staged_off = 0;
    st->staged_len = staged;
  }
  memcpy(st->staged + st->staged_len, head.data, want);
  st->staged_len += want;
  nghttp2_session_resume_data(session, st->id);
  ms_conn_mark_pending(st->h2->conn);
  return (ssize_t)want;
}

/* A WebSocket's last bytes are staged: END_STREAM follows them; a
 * failed one (section 7.1.7 of RFC 6455) resets its stream instead,
 * with CANCEL (RFC 8441 section 5.1), the others untouched. */
static void stream_shutdown(struct ms_conn *c) {
  struct ms_h2_stream *st = c->h2s;
  if (!st || !st->ws || st->closed) return;
  st->shut = 1;
  st->reset = c->why == WHY_ERROR;
  nghttp2_session_resume_data(st->h2->session, st->id);
  ms_conn_mark_pending(st->h2->conn);
}

/* A request closed unanswered (timed out, shutting down) resets its
 * stream.  A WebSocket's stream ends as the WebSocket did: what is
 * staged goes out with END_STREAM (then RST_STREAM if the peer's side
 * is still open); else, unless the stream is over, RST_STREAM. */
static void stream_close(struct ms_conn *c) {
  struct ms_h2_stream *st = c->h2s;
  c->io.fd = -1;                 /* the session's: not ours to close */
  if (!st) return;
  stream_detach(st, 0);
  struct ms_h2 *h2 = st->h2;
  if (st->ws && st->closed) {    /* nghttp2 is done with it: ours too */
    stream_unlink(st);
    stream_free(st);
    return;
  }
  if (st->ws && st->shut && !st->eof) {
    ms_conn_mark_pending(h2->conn);  /* read_ws, then frame_send_cb */
    return;
  }
  if (st->answered && (!st->ws || (st->eof && st->ended)))
    return;                        /* the stream ends, or has ended */
  nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, st->id,
                            NGHTTP2_CANCEL);
  if (h2->conn->state == CS_H2) ms_conn_mark_pending(h2->conn);
}

const struct ms_transport ms_transport_h2_stream = {
  .name = "h2 stream",
  .whole_writes = 0,
  .read = stream_read,
  .discard = stream_read,
  .pending = stream_pending,
  .write = stream_write,
  .shutdown = stream_shutdown,
  .delivered = NULL,
  .close = stream_close,
};

/* ------------------------------------------------------------------ */
/* The session                                                         */
/* ------------------------------------------------------------------ */

int ms_h2_preface(const uint8_t *p, size_t n) {
  static const char line[] = "PRI * HTTP/2.0\r\n";
  return n >= sizeof line - 1 && memcmp(p, line, sizeof line - 1) == 0;
}

/* A port without HTTP/2 answers the preface in HTTP/2, so that the
 * client understands: an empty SETTINGS (section 3.4), then GOAWAY
 * HTTP_1_1_REQUIRED for stream 0 (sections 6.8, 7). */
static const uint8_t refusal[] = {
  0, 0, 0, NGHTTP2_SETTINGS, 0, 0, 0, 0, 0,
  0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, NGHTTP2_HTTP_1_1_REQUIRED,
};

static nghttp2_session *session_new(struct ms_h2 *h2) {
  nghttp2_session_callbacks *cb;
  nghttp2_option *opt;
  nghttp2_session *session = NULL;
  if (nghttp2_session_callbacks_new(&cb) != 0) return NULL;
  if (nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cb);
    return NULL;
  }
  nghttp2_session_callbacks_set_send_callback(cb, send_cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb,
                                                          begin_headers_cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, header_cb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, frame_recv_cb);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, data_cb);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb,
                                                         stream_close_cb);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, frame_send_cb);
  nghttp2_session_callbacks_set_data_source_read_length_callback(
    cb, data_length_cb);
  /* closed streams are not kept for priorities: memory is bounded by
   * the open ones */
  nghttp2_option_set_no_closed_streams(opt, 1);
  /* windows are given back as data is used: a body at once, a
   * WebSocket's stream as it reads (flow control is its back-pressure) */
  nghttp2_option_set_no_auto_window_update(opt, 1);
  if (nghttp2_session_server_new2(&session, cb, h2, opt) != 0)
    session = NULL;
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  return session;
}

void ms_h2_start(struct ms_conn *c, const uint8_t *p, size_t n) {
  struct ms_server *s = c->server;
  if (!s->http2) {
    ms_log(s, MS_LOG_INFO, "HTTP/2 preface on a port without HTTP/2: "
           "GOAWAY HTTP_1_1_REQUIRED");
    if (outq_copy(&c->out, &s->chunks, refusal, sizeof refusal) < 0) {
      ms_conn_abort(c, 0);
      return;
    }
    ms_conn_mark_pending(c);
    ms_conn_drain(c);
    return;
  }
  struct ms_h2 *h2 = calloc(1, sizeof *h2);
  if (!h2 || !(h2->session = session_new(h2))) {
    free(h2);
    ms_log(s, MS_LOG_ERROR, "cannot start an HTTP/2 session");
    ms_conn_abort(c, 0);
    return;
  }
  h2->conn = c;
  h2->ready_tail = &h2->ready;
  h2->reset_tokens = 2.0 * (double)s->opts.max_concurrent_streams;
  h2->reset_at = ev_now(s->module->loop);
  c->h2 = h2;
  c->flags |= CF_H2;
  c->flags &= ~(uint32_t)CF_KEEP_ALIVE;
  c->state = CS_H2;
  /* section 6.5.2, and RFC 8441 section 3: WebSockets on streams.  A
   * stream holds at most its window unread (what an HTTP/1.1 body holds
   * before the app asks); the connection's window lets every stream
   * have its own, so that one that is not read stalls no other
   * (section 5.2). */
  nghttp2_settings_entry iv[] = {
    { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
      (uint32_t)s->opts.max_concurrent_streams },
    { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
      (uint32_t)s->opts.max_header_size },
    { NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1 },
    { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, MS_BODY_HOLD },
  };
  uint64_t window = (uint64_t)MS_BODY_HOLD * s->opts.max_concurrent_streams;
  if (window > NGHTTP2_MAX_WINDOW_SIZE) window = NGHTTP2_MAX_WINDOW_SIZE;
  if (nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, iv,
                              sizeof iv / sizeof iv[0]) != 0 ||
      nghttp2_session_set_local_window_size(h2->session, NGHTTP2_FLAG_NONE,
                                            0, (int32_t)window) != 0) {
    ms_conn_abort(c, 0);
    return;
  }
  ms_h2_recv(c, p, n);
}

void ms_h2_recv(struct ms_conn *c, const uint8_t *p, size_t n) {
  struct ms_h2 *h2 = c->h2;
  ssize_t r = nghttp2_session_mem_recv(h2->session, p, n);
  if (r < 0) {
    /* a bad preface, a flood (nghttp2's limits), memory: the rest is
     * not worth an answer */
    ms_log(c->server, MS_LOG_INFO, "HTTP/2 connection failed: %s",
           nghttp2_strerror((int)r));
    ms_conn_abort(c, 0);
    return;
  }
  run_ready(c);
  if (c->state == CS_H2) ms_conn_mark_pending(c);
}

/* Whether a WebSocket on the session has yet to get its close frame
 * into DATA. */
static int closes_pending(const struct ms_h2 *h2) {
  for (const struct ms_h2_stream *st = h2->streams; st; st = st->next)
    if (st->ws && st->req && (st->req->state == CS_OPEN ||
                              !outq_empty(&st->req->out) ||
                              st->staged_off < st->staged_len))
      return 1;
  return 0;
}

static void submit_goaway(struct ms_h2 *h2) {
  nghttp2_session *session = h2->session;
  h2->goaway_due = 0;
  nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session),
                        NGHTTP2_NO_ERROR, NULL, 0);
}

int ms_h2_pull(struct ms_conn *c) {
  struct ms_h2 *h2 = c->h2;
  h2->blocked = 0;
  h2->pulled = 0;
  if (nghttp2_session_send(h2->session) != 0) return -1;
  /* GOAWAY goes after the WebSockets' 1001: nghttp2 sends it before
   * any DATA still waiting */
  if (h2->goaway_due && !closes_pending(h2)) {
    submit_goaway(h2);
    if (nghttp2_session_send(h2->session) != 0) return -1;
  }
  /* while the peer does not take our frames, its requests wait */
  if (h2->blocked) ms_conn_pause(c);
  /* it took some when this pull found room */
  if (!h2->blocked) h2->stuck_since = 0;
  else if (h2->pulled || !h2->stuck_since)
    h2->stuck_since = ev_now(c->server->module->loop);
  return 0;
}

void ms_h2_written(struct ms_conn *c) {
  struct ms_h2 *h2 = c->h2;
  nghttp2_session *session = h2->session;
  if (c->flags & CF_PAUSED) ms_conn_resume_reading(c);
  if (h2->ready && h2->unsent <= c->server->opts.max_backpressure) {
    run_ready(c);                  /* the requests that waited for that */
    if (c->state != CS_H2) return;
  }
  /* more once the last frames are out (not when the session wants to
   * write but the windows let nothing through) */
  if (h2->pulled && nghttp2_session_want_write(session)) {
    ms_conn_mark_pending(c);
  } else if (!nghttp2_session_want_read(session)) {
    ms_conn_drain(c);              /* GOAWAY is out, every stream done */
  }
}

/* Whether st has bytes for the peer (an answer's, a WebSocket's, or
 * its close frame still staged after it closed) that the peer's
 * windows hold back: the stream's or the connection's is shut. */
static int stream_stalled(struct ms_h2 *h2, const struct ms_h2_stream *st) {
  int wants = st->ws ? st->staged_off < st->staged_len ||
                       (st->req && !outq_empty(&st->req->out))
                     : st->answered && ((st->fd >= 0 && st->file_left) ||
                                        st->out_sent < st->out_len);
  if (!wants || st->closed) return 0;
  return nghttp2_session_get_stream_remote_window_size(h2->session,
                                                       st->id) <= 0 ||
         nghttp2_session_get_remote_window_size(h2->session) <= 0;
}

/* A peer that never sends WINDOW_UPDATE would hold a stream, its
 * queue and its file forever: after send_window_timeout the stream is
 * reset (RST_STREAM CANCEL) and its WebSocket told 1006, as for a lost
 * connection; the other streams go on. */
static void sweep_windows(struct ms_h2 *h2, double now) {
  struct ms_server *s = h2->conn->server;
  double limit = s->opts.send_window_timeout;
  struct ms_h2_stream *st, *next;
  for (st = h2->streams; st; st = next) {
    next = st->next;
    if (!stream_stalled(h2, st)) {
      st->stalled_since = 0;
      continue;
    }
    if (!st->stalled_since) st->stalled_since = now;
    if (now - st->stalled_since < limit) continue;
    st->stalled_since = 0;
    ms_log(s, MS_LOG_INFO, "HTTP/2: stream %d: the peer's window stayed "
           "shut for send_window_timeout (%g s): RST_STREAM CANCEL",
           (int)st->id, limit);
    if (st->req && st->ws) {   /* its transport's close resets it */
      ms_conn_abort_with(st->req, 1006, "", WHY_TIMEOUT);
    } else {
      nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, st->id,
                                NGHTTP2_CANCEL);
    }
    ms_conn_mark_pending(h2->conn);
  }
}

void ms_h2_sweep(struct ms_conn *c, double now) {
  struct ms_h2 *h2 = c->h2;
  const struct ms_options *o = &c->server->opts;
  if (h2->closing_since) {
    if (now - h2->closing_since >= o->close_timeout) ms_conn_abort(c, 0);
    return;
  }
  /* a peer that reads nothing holds every stream whatever its windows
   * say: the connection goes */
  if (h2->stuck_since && now - h2->stuck_since >= o->send_window_timeout) {
    ms_log(c->server, MS_LOG_INFO, "HTTP/2: the peer read nothing for "
           "send_window_timeout (%g s): closed", o->send_window_timeout);
    ms_conn_abort(c, 0);
    return;
  }
  /* a header block the peer began and did not end (its CONTINUATION
   * never came) holds the connection, which can take no other frame:
   * closed without an answer, as an HTTP/1.1 head is (slowloris) */
  for (struct ms_h2_stream *st = h2->streams; st; st = st->next) {
    if (st->started || st->ready ||
        now - st->begun < o->handshake_timeout)
      continue;
    ms_log(c->server, MS_LOG_INFO, "HTTP/2: a request head did not arrive "
           "within handshake_timeout (%g s): closed", o->handshake_timeout);
    ms_conn_abort(c, 0);
    return;
  }
  sweep_windows(h2, now);
  if (c->state != CS_H2) return;
  if (h2->nstreams || now - c->last_read < o->handshake_timeout) return;
  nghttp2_session_terminate_session(h2->session, NGHTTP2_NO_ERROR);
  h2->closing_since = now;
  ms_conn_mark_pending(c);
}

void ms_h2_shutdown(struct ms_conn *c) {
  struct ms_h2 *h2 = c->h2;
  if (h2->closing_since) return;
  h2->closing_since = ev_now(c->server->module->loop);
  h2->goaway_due = 1;              /* sent by ms_h2_pull */
  ms_conn_mark_pending(c);
}

void ms_h2_free(struct ms_conn *c, int close_requests) {
  struct ms_h2 *h2 = c->h2;
  c->h2 = NULL;
  c->flags &= ~(uint32_t)CF_H2;
  nghttp2_session_del(h2->session);   /* calls nothing back */
  h2->session = NULL;
  struct ms_h2_stream *st, *next;
  for (st = h2->ready; st; st = next) {
    next = st->next_ready;
    if (st->gone) stream_free(st);
  }
  for (st = h2->streams; st; st = next) {
    next = st->next;
    stream_detach(st, close_requests);
    stream_free(st);
  }
  free(h2);
}
