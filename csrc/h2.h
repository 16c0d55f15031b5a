/* h2.h - HTTP/2 (RFC 9113) on a connection, with nghttp2: one session
 * per connection, each request a connection of its own for the Lua
 * pipeline */
#ifndef MS_H2_H
#define MS_H2_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

/* A connection that speaks HTTP/2 (CS_H2, CF_H2) keeps its socket, its
 * transport (TCP or TLS) and its output queue: the session reads what
 * conn.c reads, and its frames are copied into c->out, which the
 * connection flushes as it flushes HTTP/1.1 (one write per loop
 * iteration).  Each request, once its head is in, becomes a connection
 * of its own (CF_H2_STREAM, transport ms_transport_h2_stream) that goes
 * through ms_event_request like an HTTP/1.1 request, its body streaming
 * to it (ms_conn_body_data); ms_conn_respond hands its answer to
 * ms_h2_respond, which submits it on the stream. */

/* Whether p[0..n) begins with the request line of the client connection
 * preface, "PRI * HTTP/2.0" (RFC 9113 section 3.4). */
int ms_h2_preface(const uint8_t *p, size_t n);

/* c, reading its first request head, received the preface p[0..n):
 * with s->http2 it becomes an HTTP/2 connection and the session gets
 * the bytes; without, it is refused (SETTINGS, then GOAWAY
 * HTTP_1_1_REQUIRED) and closes. */
void ms_h2_start(struct ms_conn *c, const uint8_t *p, size_t n);

/* Bytes read from an HTTP/2 connection. */
void ms_h2_recv(struct ms_conn *c, const uint8_t *p, size_t n);

/* Before c->out is written: the session's frames move into it, up to a
 * bound (the session keeps the rest).  -1 when the session failed. */
int ms_h2_pull(struct ms_conn *c);

/* c->out is empty: more frames, or the end of the session. */
void ms_h2_written(struct ms_conn *c);

/* The sweep: an idle session closes (GOAWAY) after handshake_timeout,
 * as an idle HTTP/1.1 connection does. */
void ms_h2_sweep(struct ms_conn *c, double now);

/* Graceful shutdown: GOAWAY; the streams begun are answered. */
void ms_h2_shutdown(struct ms_conn *c);

/* Free the session (the connection closes); with close_requests, its
 * requests still waiting for the app are closed (not while lua_close
 * collects them). */
void ms_h2_free(struct ms_conn *c, int close_requests);

/* The answer of a request of an HTTP/2 connection (ms_conn_respond's
 * arguments): HEADERS, then DATA from body or from the file, which the
 * stream then owns.  The request's connection closes. */
void ms_h2_respond(struct ms_conn *c, int status, const char *headers,
                   size_t headers_len, const char *body, size_t body_len,
                   int file, int is_head);

/* The WebSocket of an extended CONNECT (RFC 8441), its handshake done
 * by ms_conn_upgrade: :status 200 with the subprotocol and extensions
 * chosen (protocol may be NULL, ext ""), the stream left open for its
 * frames.  -1 out of memory. */
int ms_h2_upgrade(struct ms_conn *c, const char *protocol, const char *ext);

/* The peer of an HTTP/2 connection, as a request's table gives it: its
 * address as text ("" until asked of the socket) and its port. */
struct ms_h2_peer {
  char addr[46];                       /* INET6_ADDRSTRLEN */
  int port;
};

/* Where the connection of the request c (CF_H2_STREAM) keeps its peer,
 * so that it is asked of the socket once, not per stream; NULL when
 * the connection is gone. */
struct ms_h2_peer *ms_h2_peer(struct ms_conn *c);

/* The app took n bytes of the body of the request c (or asked for
 * all of it): they are no longer held, and as much of the stream's and
 * the connection's windows is given back (all of them when the app
 * waits for the whole body). */
void ms_h2_body_read(struct ms_conn *c, size_t n);

#endif
