/* transport.h - the byte stream under a connection: what the HTTP/1.1
 * and WebSocket code reads from and writes its output queue to */
#ifndef MS_TRANSPORT_H
#define MS_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>

#include "server.h"

/* The protocol code sees a byte stream with an output queue (c->out):
 * it reads what arrived, queues bytes, flushes, shuts down writing and
 * closes, and never asks which stream it is.  A transport is a table of
 * functions, one shared by all its connections; a connection's is in
 * c->io.data, which libev leaves to its user (so struct ms_conn does not
 * grow), and its per-connection state where TLS keeps its SSL (c->ssl).
 * Each call is one indirect call per read or per flush, none per
 * message.
 *
 * Plain TCP (transport_tcp.c) and TLS over it (transport_tls.c) carry
 * a socket.  The third, ms_transport_h2_stream (h2.c), is one stream of
 * an HTTP/2 connection: a request, then, after an extended CONNECT
 * (RFC 8441), a WebSocket, which conn.c runs as over TCP:
 *  - its state, the stream (its received DATA not yet read, its bytes
 *    staged for DATA frames), is in the slot c->ssl uses (c->h2s);
 *  - read hands out the stream's DATA and gives as much of the stream's
 *    window back (the connection's was given back on arrival); pending
 *    says whether DATA is held, and the end of the stream reads as 0;
 *  - write stages bytes from the head of c->out for nghttp2's data
 *    provider, no more than the peer's window lets through: 0 when it
 *    is shut, so that what the peer does not read stays queued, against
 *    max_backpressure, and WINDOW_UPDATE marks the stream pending;
 *  - shutdown ends the stream after the staged bytes (END_STREAM), or,
 *    for a failed WebSocket, resets it (RST_STREAM CANCEL); close resets
 *    it unless it ended: the socket stays open for the other streams;
 *  - c->io is never started (set_events in conn.c): the session's
 *    connection reads and writes for its streams, and marks a stream
 *    pending when it has DATA, an end or a window for it.
 */
/* What read, discard and write return besides a byte count */
enum {
  MS_IO_AGAIN = -1,        /* nothing to read yet: wait for EV_READ */
  MS_IO_WANT_WRITE = -2,   /* a read waits for the stream to be
                              writable (a TLS handshake to answer) */
  MS_IO_ERROR = -3,        /* failed, and logged: close at once */
  MS_IO_PLAIN_HTTP = -4    /* a TLS port was spoken plain HTTP to: the
                              stream is plain TCP from here on */
};

struct ms_transport {
  const char *name;
  /* A write once begun must be retried with the same bytes (OpenSSL's
   * rule): a cut of the queue keeps the whole head chunk. */
  int whole_writes;
  /* Read at most n bytes into buf: their count, 0 at the end of the
   * stream, or an MS_IO_ result. */
  ssize_t (*read)(struct ms_conn *c, void *buf, size_t n);
  /* The same while the connection lingers after its last answer: the
   * bytes are thrown away undecoded. */
  ssize_t (*discard)(struct ms_conn *c, void *buf, size_t n);
  /* Whether read has bytes the socket will not signal (decrypted TLS
   * records); NULL when it never has. */
  int (*pending)(const struct ms_conn *c);
  /* Write from the head of c->out, about budget bytes at most (once):
   * the count, 0 when the stream takes none now (with
   * CF_WRITE_WANTS_READ set when it waits to be readable, not
   * writable), or MS_IO_ERROR.  outq_flush consumes what was written. */
  ssize_t (*write)(struct ms_conn *c, size_t budget);
  /* All is written: shut down writing, keep reading. */
  void (*shutdown)(struct ms_conn *c);
  /* After shutdown: whether the peer has acknowledged every byte and
   * the end of the stream, and nothing unread waits here, so that
   * closing now neither loses what was sent nor resets; NULL when the
   * stream cannot tell (a graceful shutdown then waits for the peer's
   * end, as any close does). */
  int (*delivered)(const struct ms_conn *c);
  /* Free the state and close the descriptor (c->io.fd becomes -1). */
  void (*close)(struct ms_conn *c);
};

extern const struct ms_transport ms_transport_tcp;
extern const struct ms_transport ms_transport_tls;
/* A stream of an HTTP/2 connection (h2.c): a request, which has no
 * bytes of its own and resets its stream when closed unanswered, or a
 * WebSocket (RFC 8441), whose bytes are the stream's DATA. */
extern const struct ms_transport ms_transport_h2_stream;

static inline const struct ms_transport *
ms_transport_of(const struct ms_conn *c) {
  return (const struct ms_transport *)c->io.data;
}

static inline void ms_transport_set(struct ms_conn *c,
                                    const struct ms_transport *t) {
  c->io.data = (void *)t;      /* never written through */
}

/* TCP's read, for a transport whose lingering reads are raw (TLS). */
ssize_t ms_transport_tcp_read(struct ms_conn *c, void *buf, size_t n);
/* TCP's delivered, for a transport over a TCP socket (TLS: its
 * close_notify is among the bytes acknowledged). */
int ms_transport_tcp_delivered(const struct ms_conn *c);

#endif
