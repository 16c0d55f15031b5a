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
 * Plain TCP (transport_tcp.c) and TLS over it (transport_tls.c) are the
 * two.  A third, one stream of an HTTP/2 connection (RFC 8441 WebSocket
 * over HTTP/2, with nghttp2), would plug in so:
 *  - its state (the session, the stream id, the stream's received DATA
 *    not yet read) goes in the slot c->ssl uses, made a union;
 *  - read hands out the stream's DATA; discard drops it; pending says
 *    whether DATA is buffered, so that the connection reads on without
 *    the socket signalling (as TLS records do);
 *  - write moves bytes from the head of c->out into the session
 *    (nghttp2's data provider reads them when the stream's flow-control
 *    window allows), returning 0 when the window is shut; whole_writes
 *    stays 0: the session copies what it takes;
 *  - shutdown ends the stream (END_STREAM), close resets it
 *    (RST_STREAM) unless it ended, and frees the state: the session's
 *    socket stays open for its other streams;
 *  - the session's own ev_io watches the socket; c->io is never
 *    started.  The connection's readiness (set_events in conn.c, today
 *    ev_io on c->io) then becomes an operation here too: for a stream,
 *    "wants to read" is a window update, "wants to write" a resumed
 *    data provider, both done by the session.
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
  /* Free the state and close the descriptor (c->io.fd becomes -1). */
  void (*close)(struct ms_conn *c);
};

extern const struct ms_transport ms_transport_tcp;
extern const struct ms_transport ms_transport_tls;
/* A request of an HTTP/2 connection (h2.c): no bytes of its own; its
 * close resets its stream when it was not answered. */
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

#endif
