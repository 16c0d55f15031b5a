/* client.h - one WebSocket client connection of the load generator:
 * connect, upgrade, masked frames out, echoes in and checked, close */
#ifndef BENCH_CLIENT_H
#define BENCH_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "payload.h"
#include "pmd.h"
#include "prng.h"

enum client_state {
  CL_IDLE,         /* no socket */
  CL_CONNECTING,   /* non-blocking connect in progress */
  CL_TLS,          /* TLS handshake in progress (--tls) */
  CL_HANDSHAKE,    /* request sent, reading the 101 */
  CL_OPEN,
  CL_CLOSING,      /* our close frame queued, waiting for the server's */
  CL_WAIT_EOF,     /* close frames exchanged: the server closes TCP */
  CL_DONE          /* socket closed */
};

/* Errors by kind; the first few of each run are also printed. */
enum client_error {
  ERR_CONNECT,     /* socket, connect */
  ERR_HANDSHAKE,   /* not 101, bad Sec-WebSocket-Accept, ... */
  ERR_PROTOCOL,    /* a frame RFC 6455 forbids from a server */
  ERR_VERIFY,      /* an echo differs from what was sent */
  ERR_CLOSED,      /* reset, EOF or close frame we did not ask for */
  ERR_TIMEOUT,     /* still unfinished when the run ended */
  ERR_TLS,         /* TLS handshake or record failure */
  ERR_KINDS
};

extern const char *const client_error_names[ERR_KINDS];

struct client;

/* What a connection tells the run driving it.  done() is the last
 * thing a connection does in a callback: it may be restarted after.
 * data (optional) takes the bytes of every data message as they come,
 * at c->msg_pos in it (c->msg_op its opcode), instead of checking them
 * as the echo of what was sent; it returns -1 after client_fail.  Its
 * message() follows with rtt_ns 0. */
struct client_events {
  void (*open)(struct client *c);
  void (*message)(struct client *c, uint64_t rtt_ns);
  void (*done)(struct client *c, int ok);
  int (*data)(struct client *c, const uint8_t *p, size_t n);
};

/* What the connections of a run share. */
struct client_ctx {
  int epfd;
  struct sockaddr_storage addr;
  socklen_t addrlen;
  char request_head[512];       /* the upgrade request up to the key */
  size_t request_head_len;
  const struct payload *payload;
  unsigned opcode;              /* 1 text, 2 binary */
  uint32_t depth;               /* messages in flight per connection */
  struct prng rng;
  uint8_t *rbuf;                /* one receive buffer for every socket */
  size_t rbuf_size;
  const struct client_events *events;
  void *user;
  uint64_t errors[ERR_KINDS];
  unsigned errors_printed;
  SSL_CTX *tls;                 /* NULL: plain TCP */
  char tls_info[96];            /* what the first handshake negotiated */
  int deflate;                  /* permessage-deflate offered */
  int deflate_level;            /* our compressor's zlib level */
  char deflate_info[128];       /* the first 101's extension answer */
  uint8_t *zout;                /* one compressed message, to be framed */
  size_t zout_cap;
  uint8_t *zin;                 /* inflated bytes, checked as they come */
  size_t zin_size;
  /* data message payload bytes over the run: the messages' own, and
   * what went over the wire (compressed); each way */
  uint64_t plain_sent, wire_sent, plain_received, wire_received;
};

struct in_flight {
  uint32_t ticket;
  uint64_t sent_ns;
};

struct client {
  struct client_ctx *ctx;
  int fd;
  uint8_t state;
  uint8_t opened;               /* reached CL_OPEN */
  uint8_t in_frame, frame_op, frame_fin, in_message;
  uint8_t msg_op;               /* the opcode of the message being read */
  uint8_t in_compressed;        /* the message being read had RSV1 */
  uint8_t hdr_len;
  uint8_t hdr[14];              /* a frame header split over reads */
  uint8_t ctl_len;
  uint8_t ctl[125];             /* a control frame's payload */
  uint64_t frame_left;
  size_t msg_pos;               /* bytes of the current echo checked */
  uint8_t *out;                 /* queued bytes, out[out_off..out_len) */
  size_t out_off, out_len, out_cap;
  int write_wait;               /* EPOLLOUT is armed */
  char *head;                   /* the response head while upgrading */
  size_t head_len;
  char accept[29];              /* the Sec-WebSocket-Accept expected */
  struct in_flight *ring;       /* depth slots */
  uint32_t ring_head, ring_count;
  uint64_t started_ns;
  uint64_t sent, received;
  size_t index;                 /* for the run's own use */
  SSL *ssl;                     /* --tls: this connection's TLS */
  uint8_t tls_closed;           /* close_notify read: wait for TCP EOF */
  uint8_t tls_read_wants_write; /* retry the read when writable */
  uint8_t tls_write_wants_read; /* retry the flush when readable */
  struct pmd *pmd;              /* negotiated compression, or NULL */
};

/* host is numeric (an IPv4 or IPv6 address); returns -1 with a message
 * on stderr when it is not.  deflate: offer permessage-deflate and
 * insist on it.  The rest of the fields are the caller's (tls,
 * deflate_level, ...). */
int client_ctx_init(struct client_ctx *ctx, const char *host, int port,
                    const char *path, int deflate);
void client_ctx_free(struct client_ctx *ctx);
uint64_t client_ctx_errors(const struct client_ctx *ctx);

/* Connect and upgrade; open() follows, or done(c, 0). */
void client_start(struct client *c, struct client_ctx *ctx);
/* Handle what epoll reported for c. */
void client_event(struct client *c, uint32_t events);
/* Queue a message (ticket names its payload); caller flushes. */
void client_send(struct client *c, uint32_t ticket);
/* Queue a message of the caller's bytes: nothing is expected back for
 * it (events->data reads what comes); caller flushes. */
void client_send_bytes(struct client *c, unsigned opcode,
                       const uint8_t *data, size_t len);
/* Queue a close frame (1000) and wait for the server's; caller flushes. */
void client_close(struct client *c);
/* Drop the connection at once, as a lost network would: no close frame,
 * the socket closed, done(c, 1); nothing is counted as an error. */
void client_abort(struct client *c);
/* Write what is queued; arms EPOLLOUT when the kernel refuses bytes. */
void client_flush(struct client *c);
/* Count an error of that kind against c, print it while few have been,
 * close the socket and report done(c, 0). */
void client_fail(struct client *c, enum client_error kind, const char *what);
void client_free(struct client *c);

/* The many-connection tests' common steps, over subs[0..n) and then
 * one more client, `last` (a publisher), when it is not NULL. */
/* Queue and flush a close frame on each one open. */
void clients_close(struct client *subs, size_t n, struct client *last);
/* Fail (ERR_TIMEOUT, "not closed in time") each one not done or idle. */
void clients_fail_unclosed(struct client *subs, size_t n,
                           struct client *last);
/* Wait at most ms for ctx's sockets and handle what came: 0, or -1
 * when epoll_wait failed. */
int clients_wait(struct client_ctx *ctx, int ms);

#endif
