/* client.c - the load generator's WebSocket client: RFC 6455 from the
 * client's side, every echo checked against what was sent */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "client.h"
#include "stats.h"
#include "tls.h"

const char *const client_error_names[ERR_KINDS] = {
  "connect", "handshake", "protocol", "verify", "closed", "timeout", "tls"
};

#define MAX_HEAD 2048           /* a 101 response head larger is refused */
#define ERRORS_PRINTED 5        /* per run; the rest are only counted */
#define READ_ROUNDS 4           /* reads per socket per event (fairness) */
#define TLS_READ_ROUNDS 64      /* records, each at most 16 KiB */
#define INFLATE_SCRATCH 65536   /* inflated bytes checked per piece */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ======================================================================
 * Context
 * ====================================================================== */

int client_ctx_init(struct client_ctx *ctx, const char *host, int port,
                    const char *path, int deflate) {
  struct sockaddr_in *v4 = (struct sockaddr_in *)&ctx->addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ctx->addr;
  char host_header[INET6_ADDRSTRLEN + 2];
  memset(&ctx->addr, 0, sizeof ctx->addr);
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    ctx->addrlen = sizeof *v4;
    snprintf(host_header, sizeof host_header, "%s", host);
  } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    ctx->addrlen = sizeof *v6;
    snprintf(host_header, sizeof host_header, "[%s]", host);
  } else {
    fprintf(stderr, "loadgen: host must be a numeric address: %s\n", host);
    return -1;
  }
  int n = snprintf(ctx->request_head, sizeof ctx->request_head,
                   "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Version: 13\r\n%s"
                   "Sec-WebSocket-Key: ", path, host_header, port,
                   deflate ? "Sec-WebSocket-Extensions: " PMD_OFFER "\r\n"
                           : "");
  if (n < 0 || (size_t)n >= sizeof ctx->request_head - 32) {
    fprintf(stderr, "loadgen: path too long\n");
    return -1;
  }
  ctx->request_head_len = (size_t)n;
  ctx->rbuf_size = 256 * 1024;
  ctx->rbuf = malloc(ctx->rbuf_size);
  if (!ctx->rbuf) return -1;
  ctx->deflate = deflate;
  ctx->zout = NULL;
  ctx->zout_cap = 0;
  ctx->zin_size = deflate ? INFLATE_SCRATCH : 0;
  ctx->zin = deflate ? malloc(ctx->zin_size) : NULL;
  if (deflate && !ctx->zin) return -1;
  ctx->tls_info[0] = ctx->deflate_info[0] = '\0';
  ctx->plain_sent = ctx->wire_sent = 0;
  ctx->plain_received = ctx->wire_received = 0;
  memset(ctx->errors, 0, sizeof ctx->errors);
  ctx->errors_printed = 0;
  return 0;
}

void client_ctx_free(struct client_ctx *ctx) {
  free(ctx->rbuf);
  free(ctx->zout);
  free(ctx->zin);
  ctx->rbuf = ctx->zout = ctx->zin = NULL;
}

uint64_t client_ctx_errors(const struct client_ctx *ctx) {
  uint64_t sum = 0;
  for (int i = 0; i < ERR_KINDS; i++) sum += ctx->errors[i];
  return sum;
}

/* ======================================================================
 * Output
 * ====================================================================== */

static int out_reserve(struct client *c, size_t n) {
  if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (c->out_len + n <= c->out_cap) return 0;
  size_t cap = c->out_cap ? c->out_cap : 256;
  while (cap < c->out_len + n) cap *= 2;
  uint8_t *p = realloc(c->out, cap);
  if (!p) return -1;
  c->out = p;
  c->out_cap = cap;
  return 0;
}

static void set_write_wait(struct client *c, int on) {
  struct epoll_event ev;
  if (c->write_wait == on) return;
  ev.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0);
  ev.data.ptr = c;
  epoll_ctl(c->ctx->epfd, EPOLL_CTL_MOD, c->fd, &ev);
  c->write_wait = on;
}

/* What the transport functions return besides byte counts. */
enum {
  IO_WAIT_WRITABLE = -1,        /* try again on EPOLLOUT */
  IO_WAIT_READABLE = -2,        /* try again on EPOLLIN */
  IO_FAILED = -3                /* c has been failed */
};

/* Bytes out: to the socket, or as TLS records. */
static ssize_t transport_send(struct client *c, const uint8_t *p, size_t n) {
  char why[256];
  if (c->ssl) {
    ssize_t w = tls_write(c->ssl, p, n);
    if (w > 0) return w;
    if (w == TLS_WANT_WRITE) return IO_WAIT_WRITABLE;
    if (w == TLS_WANT_READ) {
      c->tls_write_wants_read = 1;
      return IO_WAIT_READABLE;
    }
    client_fail(c, ERR_TLS, tls_error(why, sizeof why));
    return IO_FAILED;
  }
  for (;;) {
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w >= 0) return w;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IO_WAIT_WRITABLE;
    client_fail(c, ERR_CLOSED, strerror(errno));
    return IO_FAILED;
  }
}

/* Bytes in (0 at the end of the stream): from the socket, or TLS
 * records.  After the server's close_notify only TCP's EOF is left,
 * read from the socket itself. */
static ssize_t transport_recv(struct client *c, uint8_t *p, size_t n) {
  char why[256];
  if (c->ssl && !c->tls_closed) {
    ssize_t r = tls_read(c->ssl, p, n);
    if (r > 0) return r;
    if (r == TLS_WANT_READ) return IO_WAIT_READABLE;
    if (r == TLS_WANT_WRITE) {
      c->tls_read_wants_write = 1;
      set_write_wait(c, 1);
      return IO_WAIT_WRITABLE;
    }
    if (r != TLS_CLOSED) {
      client_fail(c, ERR_TLS, tls_error(why, sizeof why));
      return IO_FAILED;
    }
    if (c->state != CL_WAIT_EOF) return 0;
    c->tls_closed = 1;
  }
  for (;;) {
    ssize_t r = recv(c->fd, p, n, 0);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IO_WAIT_READABLE;
    client_fail(c, ERR_CLOSED, strerror(errno));
    return IO_FAILED;
  }
}

void client_flush(struct client *c) {
  if (c->state == CL_DONE || c->state == CL_CONNECTING ||
      c->state == CL_TLS)
    return;
  c->tls_write_wants_read = 0;
  while (c->out_off < c->out_len) {
    ssize_t n = transport_send(c, c->out + c->out_off,
                               c->out_len - c->out_off);
    if (n == IO_FAILED) return;
    if (n < 0) {
      /* a TLS write that waits for a read is retried after the next
       * read (client_event flushes after reading), not on EPOLLOUT,
       * which would fire at once and spin */
      set_write_wait(c, n == IO_WAIT_WRITABLE || c->tls_read_wants_write);
      return;
    }
    c->out_off += (size_t)n;
  }
  c->out_off = c->out_len = 0;
  set_write_wait(c, c->tls_read_wants_write);
}

/* Copy n bytes masked with key (RFC 6455 5.3), a word at a time. */
static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                      const uint8_t key[4]) {
  uint8_t k8[8] = { key[0], key[1], key[2], key[3],
                    key[0], key[1], key[2], key[3] };
  uint64_t k, w;
  size_t i = 0;
  memcpy(&k, k8, 8);
  for (; i + 8 <= n; i += 8) {
    memcpy(&w, src + i, 8);
    w ^= k;
    memcpy(dst + i, &w, 8);
  }
  for (; i < n; i++) dst[i] = src[i] ^ key[i & 3];
}

/* A client frame: FIN, opcode, masked, a fresh key (RFC 6455 5.2);
 * rsv is PMD_RSV1 for a compressed message, else 0. */
static int queue_frame(struct client *c, unsigned opcode, unsigned rsv,
                       const uint8_t *data, size_t len) {
  if (out_reserve(c, len + 14) != 0) return -1;
  uint8_t *p = c->out + c->out_len;
  uint64_t key = prng_next(&c->ctx->rng);
  *p++ = (uint8_t)(0x80 | rsv | opcode);
  if (len < 126) {
    *p++ = (uint8_t)(0x80 | len);
  } else if (len < 65536) {
    *p++ = 0x80 | 126;
    *p++ = (uint8_t)(len >> 8);
    *p++ = (uint8_t)len;
  } else {
    *p++ = 0x80 | 127;
    for (int i = 7; i >= 0; i--) *p++ = (uint8_t)((uint64_t)len >> (8 * i));
  }
  memcpy(p, &key, 4);
  mask_copy(p + 4, data, len, p);
  c->out_len = (size_t)(p + 4 + len - c->out);
  return 0;
}

/* A data message, compressed when that was negotiated; -1 when c has
 * been failed. */
static int queue_message(struct client *c, unsigned opcode,
                         const uint8_t *data, size_t len) {
  struct client_ctx *ctx = c->ctx;
  unsigned rsv = 0;
  ctx->plain_sent += len;
  if (c->pmd) {                 /* RFC 7692 7.2.1, timed with the rest */
    long z = pmd_compress(c->pmd, data, len, &ctx->zout, &ctx->zout_cap);
    if (z < 0) {
      client_fail(c, ERR_CONNECT, "zlib cannot compress");
      return -1;
    }
    data = ctx->zout;
    len = (size_t)z;
    rsv = PMD_RSV1;
  }
  ctx->wire_sent += len;
  if (queue_frame(c, opcode, rsv, data, len) != 0) {
    client_fail(c, ERR_CONNECT, "out of memory");
    return -1;
  }
  c->sent++;
  return 0;
}

void client_send(struct client *c, uint32_t ticket) {
  struct client_ctx *ctx = c->ctx;
  if (c->state != CL_OPEN || c->ring_count == ctx->depth) return;
  struct in_flight *f =
      &c->ring[(c->ring_head + c->ring_count) % ctx->depth];
  f->ticket = ticket;
  f->sent_ns = now_ns();
  if (queue_message(c, ctx->opcode, payload_bytes(ctx->payload, ticket),
                    ctx->payload->size) == 0)
    c->ring_count++;
}

void client_send_bytes(struct client *c, unsigned opcode,
                       const uint8_t *data, size_t len) {
  if (c->state == CL_OPEN) queue_message(c, opcode, data, len);
}

void client_close(struct client *c) {
  static const uint8_t normal[2] = { 1000 >> 8, 1000 & 0xff };
  if (c->state != CL_OPEN) return;
  if (queue_frame(c, 8, 0, normal, 2) != 0) {
    client_fail(c, ERR_CONNECT, "out of memory");
    return;
  }
  c->state = CL_CLOSING;
}

/* ======================================================================
 * Life cycle
 * ====================================================================== */

/* The connection's TLS and compression state, gone with its socket. */
static void drop_session(struct client *c) {
  SSL_free(c->ssl);
  c->ssl = NULL;
  pmd_free(c->pmd);
  c->pmd = NULL;
}

static void finish(struct client *c, int ok) {
  drop_session(c);
  if (c->fd >= 0) {
    epoll_ctl(c->ctx->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
  }
  free(c->head);
  c->head = NULL;
  c->state = CL_DONE;
  c->ctx->events->done(c, ok);
}

void client_fail(struct client *c, enum client_error kind, const char *what) {
  struct client_ctx *ctx = c->ctx;
  if (c->state == CL_DONE) return;
  ctx->errors[kind]++;
  if (ctx->errors_printed < ERRORS_PRINTED) {
    ctx->errors_printed++;
    fprintf(stderr, "loadgen: connection %zu: %s error: %s\n", c->index,
            client_error_names[kind], what);
  }
  finish(c, 0);
}

void client_abort(struct client *c) {
  if (c->state != CL_DONE && c->state != CL_IDLE) finish(c, 1);
}

void client_free(struct client *c) {
  drop_session(c);
  free(c->out);
  free(c->ring);
  free(c->head);
  c->out = NULL;
  c->ring = NULL;
  c->head = NULL;
}

static void base64(char *dst, const uint8_t *src, size_t n) {
  EVP_EncodeBlock((unsigned char *)dst, src, (int)n);
}

void client_start(struct client *c, struct client_ctx *ctx) {
  uint8_t key_bytes[16];
  char key[25], both[64];
  uint8_t digest[SHA_DIGEST_LENGTH];
  uint64_t r1 = prng_next(&ctx->rng), r2 = prng_next(&ctx->rng);
  int one = 1;

  c->ctx = ctx;
  c->state = CL_CONNECTING;
  c->opened = 0;
  c->in_frame = c->in_message = c->in_compressed = 0;
  c->tls_closed = c->tls_read_wants_write = c->tls_write_wants_read = 0;
  c->hdr_len = c->ctl_len = 0;
  c->out_off = c->out_len = 0;
  c->write_wait = 1;
  c->head_len = 0;
  c->ring_head = c->ring_count = 0;
  c->sent = c->received = 0;
  c->started_ns = now_ns();
  if (!c->ring) c->ring = calloc(ctx->depth, sizeof *c->ring);
  if (!c->head) c->head = malloc(MAX_HEAD + 1);
  c->fd = socket(ctx->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0 || !c->ring || !c->head) {
    client_fail(c, ERR_CONNECT, c->fd < 0 ? strerror(errno)
                                          : "out of memory");
    return;
  }
  /* Frames go out at once: the latency figures are the server's. */
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  /* The key and the Accept it must come back as (RFC 6455 4.1). */
  memcpy(key_bytes, &r1, 8);
  memcpy(key_bytes + 8, &r2, 8);
  base64(key, key_bytes, 16);
  snprintf(both, sizeof both, "%s%s", key, ws_guid);
  SHA1((const unsigned char *)both, strlen(both), digest);
  base64(c->accept, digest, sizeof digest);
  if (out_reserve(c, ctx->request_head_len + 32) != 0) {
    client_fail(c, ERR_CONNECT, "out of memory");
    return;
  }
  memcpy(c->out, ctx->request_head, ctx->request_head_len);
  memcpy(c->out + ctx->request_head_len, key, 24);
  memcpy(c->out + ctx->request_head_len + 24, "\r\n\r\n", 4);
  c->out_len = ctx->request_head_len + 28;

  struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP,
                            .data.ptr = c };
  if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
    client_fail(c, ERR_CONNECT, strerror(errno));
    return;
  }
  if (connect(c->fd, (struct sockaddr *)&ctx->addr, ctx->addrlen) != 0 &&
      errno != EINPROGRESS) {
    client_fail(c, ERR_CONNECT, strerror(errno));
    return;
  }
}

/* ======================================================================
 * Handshake (RFC 6455 4.1: the client's checks of the server's answer)
 * ====================================================================== */

/* Does the comma-separated list hold token (case-insensitive)? */
static int has_token(const char *list, size_t len, const char *token) {
  size_t tlen = strlen(token), i = 0;
  while (i < len) {
    while (i < len && (list[i] == ' ' || list[i] == '\t' || list[i] == ','))
      i++;
    size_t start = i;
    while (i < len && list[i] != ',') i++;
    size_t end = i;
    while (end > start && (list[end - 1] == ' ' || list[end - 1] == '\t'))
      end--;
    if (end - start == tlen && strncasecmp(list + start, token, tlen) == 0)
      return 1;
  }
  return 0;
}

/* 0 when the head is a valid 101 for our key, else what is wrong.
 * With deflate offered, it must be accepted: *pmd is what it settled,
 * and *ext, *ext_len its header value. */
static const char *check_response(struct client *c, char *head, size_t len,
                                  struct pmd_params *pmd, const char **ext,
                                  size_t *ext_len) {
  int upgrade = 0, connection = 0, accept = 0;
  *ext = NULL;
  if (len < 12 || memcmp(head, "HTTP/1.1 101", 12) != 0) return "not 101";
  char *line = memchr(head, '\n', len);
  char *end = head + len;
  while (line && ++line < end) {
    char *eol = memchr(line, '\n', (size_t)(end - line));
    if (!eol) break;
    size_t llen = (size_t)(eol - line);
    if (llen && line[llen - 1] == '\r') llen--;
    char *colon = memchr(line, ':', llen);
    if (colon) {
      size_t nlen = (size_t)(colon - line);
      char *v = colon + 1;
      size_t vlen = llen - nlen - 1;
      while (vlen && (*v == ' ' || *v == '\t')) v++, vlen--;
      while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
      if (nlen == 7 && strncasecmp(line, "upgrade", 7) == 0)
        upgrade = vlen == 9 && strncasecmp(v, "websocket", 9) == 0;
      else if (nlen == 10 && strncasecmp(line, "connection", 10) == 0)
        connection = has_token(v, vlen, "upgrade");
      else if (nlen == 20 && strncasecmp(line, "sec-websocket-accept", 20)
               == 0)
        accept = vlen == 28 && memcmp(v, c->accept, 28) == 0;
      else if (nlen == 24 &&
               strncasecmp(line, "sec-websocket-extensions", 24) == 0) {
        if (!c->ctx->deflate) return "an extension we did not offer";
        if (*ext) return "two Sec-WebSocket-Extensions fields";
        const char *why = pmd_parse_response(v, vlen, pmd);
        if (why) return why;
        *ext = v;
        *ext_len = vlen;
      }
    }
    line = eol;
  }
  if (c->ctx->deflate && !*ext) return "permessage-deflate declined";
  if (!upgrade) return "no Upgrade: websocket";
  if (!connection) return "no Connection: upgrade";
  if (!accept) return "wrong or missing Sec-WebSocket-Accept";
  return NULL;
}

static int read_frames(struct client *c, const uint8_t *p, size_t n);

/* Bytes of the response head; what follows it are frames. */
static int read_head(struct client *c, const uint8_t *p, size_t n) {
  size_t old = c->head_len, take = n;
  if (take > MAX_HEAD - old) take = MAX_HEAD - old;
  memcpy(c->head + old, p, take);
  c->head_len += take;
  c->head[c->head_len] = '\0';
  char *end = strstr(c->head + (old > 3 ? old - 3 : 0), "\r\n\r\n");
  if (!end) {
    if (c->head_len == MAX_HEAD) {
      client_fail(c, ERR_HANDSHAKE, "response head too large");
      return -1;
    }
    return 0;
  }
  size_t head_len = (size_t)(end + 4 - c->head);
  struct pmd_params params;
  const char *ext;
  size_t ext_len = 0;
  const char *why = check_response(c, c->head, head_len, &params, &ext,
                                   &ext_len);
  if (!why && ext) {
    struct client_ctx *ctx = c->ctx;
    if (!ctx->deflate_info[0])
      snprintf(ctx->deflate_info, sizeof ctx->deflate_info, "%.*s",
               (int)ext_len, ext);
    if (!(c->pmd = pmd_new(&params, ctx->deflate_level)))
      why = "out of memory";
  }
  if (why) {
    char msg[160];
    int line = (int)strcspn(c->head, "\r\n");
    snprintf(msg, sizeof msg, "%s: %.*s", why, line < 60 ? line : 60,
             c->head);
    client_fail(c, ERR_HANDSHAKE, msg);
    return -1;
  }
  free(c->head);
  c->head = NULL;
  c->state = CL_OPEN;
  c->opened = 1;
  c->ctx->events->open(c);
  if (c->state == CL_DONE) return -1;
  size_t used = head_len - old;
  return read_frames(c, p + used, n - used);
}

/* ======================================================================
 * Frames from the server (RFC 6455 5.2), checked as they arrive
 * ====================================================================== */

static size_t header_size(const uint8_t *hdr) {
  size_t len7 = hdr[1] & 0x7f;
  return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0)
         + ((hdr[1] & 0x80) ? 4 : 0);
}

/* A whole header in c->hdr: check it and start its frame. */
static int start_frame(struct client *c) {
  const uint8_t *h = c->hdr;
  unsigned op = h[0] & 0x0f;
  uint64_t len = h[1] & 0x7f;
  /* RSV1 only on the first frame of a message, and only when
   * permessage-deflate was negotiated (RFC 7692 6.1) */
  int rsv1 = (h[0] & PMD_RSV1) != 0;
  if ((h[0] & 0x30) || (rsv1 && (!c->pmd || op == 0 || op >= 8)))
    return client_fail(c, ERR_PROTOCOL, "RSV bits set"), -1;
  if (h[1] & 0x80)          /* RFC 6455 5.1: servers must not mask */
    return client_fail(c, ERR_PROTOCOL, "masked server frame"), -1;
  if (len == 126) {
    len = (uint64_t)h[2] << 8 | h[3];
  } else if (len == 127) {
    len = 0;
    for (int i = 2; i < 10; i++) len = len << 8 | h[i];
  }
  c->frame_op = (uint8_t)op;
  c->frame_fin = (h[0] & 0x80) != 0;
  c->frame_left = len;
  c->ctl_len = 0;
  if (op < 8) c->ctx->wire_received += len;
  if (op >= 8) {
    if (op > 10) return client_fail(c, ERR_PROTOCOL, "unknown opcode"), -1;
    if (!c->frame_fin || len > 125)
      return client_fail(c, ERR_PROTOCOL, "bad control frame"), -1;
  } else if (op == 0) {
    if (!c->in_message)
      return client_fail(c, ERR_PROTOCOL, "continuation out of message"),
             -1;
  } else if (op == 1 || op == 2) {
    if (c->in_message)
      return client_fail(c, ERR_PROTOCOL, "new message inside a message"),
             -1;
    if (!c->ctx->events->data && op != c->ctx->opcode)
      return client_fail(c, ERR_VERIFY, "echo of another opcode"), -1;
    if (!c->ctx->events->data && c->ring_count == 0)
      return client_fail(c, ERR_VERIFY, "a message nobody sent"), -1;
    c->in_message = 1;
    c->msg_op = (uint8_t)op;
    c->in_compressed = (uint8_t)rsv1;
    c->msg_pos = 0;
  } else {
    return client_fail(c, ERR_PROTOCOL, "unknown opcode"), -1;
  }
  c->in_frame = 1;
  return 0;
}

static int end_message(struct client *c) {
  struct client_ctx *ctx = c->ctx;
  uint64_t rtt = 0;
  if (!ctx->events->data) {
    if (c->msg_pos != ctx->payload->size)
      return client_fail(c, ERR_VERIFY, "echo shorter than sent"), -1;
    rtt = now_ns() - c->ring[c->ring_head].sent_ns;
    c->ring_head = (c->ring_head + 1) % ctx->depth;
    c->ring_count--;
  }
  ctx->plain_received += c->msg_pos;
  c->in_message = 0;
  c->received++;
  ctx->events->message(c, rtt);
  return c->state == CL_DONE ? -1 : 0;
}

static int end_control(struct client *c) {
  switch (c->frame_op) {
  case 9:                           /* ping: pong with its payload */
    if (c->state == CL_OPEN &&
        queue_frame(c, 10, 0, c->ctl, c->ctl_len) != 0)
      return client_fail(c, ERR_CONNECT, "out of memory"), -1;
    return 0;
  case 10:
    return 0;
  default:                          /* close */
    if (c->state != CL_CLOSING)
      return client_fail(c, ERR_CLOSED, "server sent a close frame"), -1;
    if (c->ctl_len < 2 || ((c->ctl[0] << 8) | c->ctl[1]) != 1000)
      return client_fail(c, ERR_PROTOCOL, "close code not echoed"), -1;
    if (c->ring_count)
      return client_fail(c, ERR_VERIFY, "closed before every echo"), -1;
    c->state = CL_WAIT_EOF;
    return 0;
  }
}

/* Bytes of the echo being read, as they come (inflated when it was
 * compressed): each must be the next of what was sent.  A run with its
 * own events->data checks them there instead. */
static int check_echo(void *arg, const uint8_t *p, size_t n) {
  struct client *c = arg;
  const struct payload *pl = c->ctx->payload;
  if (c->ctx->events->data) {   /* not an echo: the run checks it */
    if (c->ctx->events->data(c, p, n) != 0) return -1;
    c->msg_pos += n;
    return 0;
  }
  const uint8_t *want = payload_bytes(pl, c->ring[c->ring_head].ticket);
  if (c->msg_pos + n > pl->size)
    return client_fail(c, ERR_VERIFY, "echo longer than sent"), -1;
  if (memcmp(want + c->msg_pos, p, n) != 0)
    return client_fail(c, ERR_VERIFY, "echo differs from sent"), -1;
  c->msg_pos += n;
  return 0;
}

/* A piece of a compressed echo; last ends the message (RFC 7692 7.2.2) */
static int inflate_echo(struct client *c, const uint8_t *p, size_t n,
                        int last) {
  struct client_ctx *ctx = c->ctx;
  const char *why = NULL;
  int rc = pmd_inflate(c->pmd, p, n, last, ctx->zin, ctx->zin_size,
                       check_echo, c, &why);
  if (rc < 0 && why) client_fail(c, ERR_PROTOCOL, why);
  return rc ? -1 : 0;
}

static int read_frames(struct client *c, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (c->state == CL_WAIT_EOF)
      return client_fail(c, ERR_PROTOCOL, "bytes after close frame"), -1;
    if (!c->in_frame) {
      size_t need = c->hdr_len < 2 ? 2 : header_size(c->hdr);
      while (c->hdr_len < need && n > 0) {
        c->hdr[c->hdr_len++] = *p++;
        n--;
        if (c->hdr_len == 2) need = header_size(c->hdr);
      }
      if (c->hdr_len < need) return 0;
      c->hdr_len = 0;
      if (start_frame(c) != 0) return -1;
    }
    size_t take = n < c->frame_left ? n : (size_t)c->frame_left;
    if (c->frame_op >= 8) {
      memcpy(c->ctl + c->ctl_len, p, take);
      c->ctl_len = (uint8_t)(c->ctl_len + take);
    } else if (take && (c->in_compressed ? inflate_echo(c, p, take, 0)
                                         : check_echo(c, p, take)) != 0) {
      return -1;
    }
    p += take;
    n -= take;
    c->frame_left -= take;
    if (c->frame_left == 0) {
      c->in_frame = 0;
      if (c->frame_op >= 8) {
        if (end_control(c) != 0) return -1;
      } else if (c->frame_fin) {
        if (c->in_compressed && inflate_echo(c, NULL, 0, 1) != 0) return -1;
        if (end_message(c) != 0) return -1;
      }
    }
  }
  return 0;
}

/* ======================================================================
 * Events
 * ====================================================================== */

static void on_readable(struct client *c) {
  struct client_ctx *ctx = c->ctx;
  c->tls_read_wants_write = 0;
  /* TLS: a record at a time, and epoll cannot see what read-ahead has
   * already taken from the socket, so that is always read too */
  for (int rounds = 0;
       rounds < (c->ssl ? TLS_READ_ROUNDS : READ_ROUNDS) ||
       (c->ssl && !c->tls_closed && SSL_has_pending(c->ssl));
       rounds++) {
    ssize_t n = transport_recv(c, ctx->rbuf, ctx->rbuf_size);
    if (n < 0) return;
    if (n == 0) {
      if (c->state == CL_WAIT_EOF) finish(c, 1);
      else client_fail(c, ERR_CLOSED, "server closed the connection");
      return;
    }
    int rc = c->state == CL_HANDSHAKE
                 ? read_head(c, ctx->rbuf, (size_t)n)
                 : read_frames(c, ctx->rbuf, (size_t)n);
    if (rc != 0 || (!c->ssl && (size_t)n < ctx->rbuf_size)) return;
  }
}

/* Drive the TLS handshake; once it is done, send the upgrade request. */
static void tls_step(struct client *c) {
  struct client_ctx *ctx = c->ctx;
  char why[256];
  int rc = tls_handshake(c->ssl);
  if (rc == TLS_WANT_READ || rc == TLS_WANT_WRITE) {
    set_write_wait(c, rc == TLS_WANT_WRITE);
    return;
  }
  if (rc != TLS_DONE) {
    client_fail(c, ERR_TLS, tls_error(why, sizeof why));
    return;
  }
  if (!ctx->tls_info[0])
    tls_describe(c->ssl, ctx->tls_info, sizeof ctx->tls_info);
  c->state = CL_HANDSHAKE;
  client_flush(c);
  if (c->state == CL_HANDSHAKE && SSL_has_pending(c->ssl)) on_readable(c);
}

void client_event(struct client *c, uint32_t events) {
  if (c->state == CL_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      client_fail(c, ERR_CONNECT, strerror(err));
      return;
    }
    if (c->ctx->tls) {
      if (!(c->ssl = tls_new(c->ctx->tls, c->fd))) {
        client_fail(c, ERR_TLS, "SSL_new failed");
        return;
      }
      c->state = CL_TLS;
      tls_step(c);
      return;
    }
    c->state = CL_HANDSHAKE;
    client_flush(c);
    return;
  }
  if (c->state == CL_TLS) {
    tls_step(c);
    return;
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ||
      c->tls_read_wants_write) {
    on_readable(c);
    if (c->state == CL_DONE) return;
  }
  client_flush(c);
}

void clients_close(struct client *subs, size_t n, struct client *last) {
  for (size_t i = 0; i <= n; i++) {
    struct client *c = i < n ? &subs[i] : last;
    if (c && c->state == CL_OPEN) {
      client_close(c);
      client_flush(c);
    }
  }
}

void clients_fail_unclosed(struct client *subs, size_t n,
                           struct client *last) {
  for (size_t i = 0; i <= n; i++) {
    struct client *c = i < n ? &subs[i] : last;
    if (c && c->state != CL_DONE && c->state != CL_IDLE)
      client_fail(c, ERR_TIMEOUT, "not closed in time");
  }
}

int clients_wait(struct client_ctx *ctx, int ms) {
  struct epoll_event evs[256];
  int n = epoll_wait(ctx->epfd, evs, 256, ms);
  if (n < 0 && errno != EINTR) {
    perror("loadgen: epoll_wait");
    return -1;
  }
  for (int i = 0; i < n; i++) client_event(evs[i].data.ptr, evs[i].events);
  return 0;
}
