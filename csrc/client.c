/* client.c - the client side: connecting, TLS, the opening handshake
 * (RFC 6455 section 4.1) and the context that owns client connections */
#define _GNU_SOURCE
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "client.h"
#include "events.h"
#include "frame.h"
#include "transport.h"

/* A server without a listener: client connections share its receive
 * buffer, output chunks, write batching and timeout sweep. */
struct client_ctx {
  struct ms_server server;
  SSL_CTX *verify, *noverify;   /* made when first needed */
  size_t rand_used;
  uint8_t rand[4096];           /* masking keys, refilled as a block */
  struct ms_metrics metrics;    /* the client's, apart from the servers' */
};

static struct client_ctx *ctx_of(struct ms_server *s) {
  return (struct client_ctx *)((char *)s - offsetof(struct client_ctx,
                                                    server));
}

/* ------------------------------------------------------------------ */
/* The context                                                         */
/* ------------------------------------------------------------------ */

/* The server's prepare, then stop watching while there is nothing to
 * watch, so that the loop can end when the last client has closed. */
static void ctx_prepare_cb(struct ev_loop *loop, ev_prepare *w,
                           int revents) {
  struct ms_server *s = (struct ms_server *)((char *)w -
                         offsetof(struct ms_server, prepare));
  ms_server_prepare_cb(loop, w, revents);
  if (!s->conns && !s->pending && !s->released) {
    ev_prepare_stop(loop, &s->prepare);
    ev_timer_stop(loop, &s->sweep);
    s->sweep.repeat = 1.0;
  }
}

struct ms_server *ms_client_context(struct ms_module *m) {
  if (m->client) return m->client;
  struct client_ctx *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  struct ms_server *s = &x->server;
  ms_options_defaults(&s->opts);
  s->opts.log_level = MS_LOG_WARN;       /* no line per connection */
  s->limits.max_head = s->opts.max_header_size;
  s->limits.max_line = s->opts.max_request_line;
  s->limits.max_headers = s->opts.max_headers;
  if (!(s->rbuf = malloc(s->opts.receive_buffer_size))) {
    free(x);
    return NULL;
  }
  s->module = m;
  s->metrics = &x->metrics;
  s->listener.fd = -1;
  s->on_request = s->ref = s->ws_routes = LUA_NOREF;
  x->rand_used = sizeof x->rand;      /* empty: filled on first use */
  ev_prepare_init(&s->prepare, ctx_prepare_cb);
  ev_timer_init(&s->sweep, ms_server_sweep_cb, 1.0, 1.0);
  m->client = s;
  return s;
}

void ms_client_context_free(struct ms_module *m) {
  struct ms_server *s = m->client;
  if (!s) return;
  struct client_ctx *x = ctx_of(s);
  ev_prepare_stop(m->loop, &s->prepare);
  ev_timer_stop(m->loop, &s->sweep);
  free(s->rbuf);
  s->rbuf = NULL;
  ms_server_free_chunks(s);
  deflate_buf_free(&s->zbuf);
  SSL_CTX_free(x->verify);
  SSL_CTX_free(x->noverify);
  OPENSSL_cleanse(x->rand, sizeof x->rand);
  free(x);
  m->client = NULL;
}

void ms_client_shutdown(struct ms_module *m) {
  struct ms_server *s = m->client;
  if (!s || !s->conns) return;
  struct ms_conn *c = s->conns;
  for (size_t i = 0, n = s->nconns; i < n && s->conns; i++) {
    struct ms_conn *next = c->next;
    if (c->state == CS_OPEN)
      ms_conn_close(c, 1001, "going away", 10, WHY_SHUTDOWN);
    else if (c->state == CS_HTTP)
      ms_conn_abort_with(c, 1006, "shutdown", WHY_SHUTDOWN);
    c = next;
  }
}

void ms_client_forget(struct ms_module *m) {
  struct ms_server *s = m->client;
  while (s && s->conns) {
    struct ms_conn *c = s->conns;
    c->flags |= CF_NOTIFIED;           /* its events are the master's */
    ms_conn_abort(c, 1006);            /* closes this copy, writes nothing */
  }
}

int ms_client_random(struct ms_server *s, uint8_t *key, size_t n) {
  struct client_ctx *x = ctx_of(s);
  /* one RAND_bytes per 4 KiB: a thousand masking keys, not a call (or
   * a syscall) per frame */
  if (x->rand_used + n > sizeof x->rand) {
    if (RAND_bytes(x->rand, (int)sizeof x->rand) != 1) return -1;
    x->rand_used = 0;
  }
  memcpy(key, x->rand + x->rand_used, n);
  x->rand_used += n;
  return 0;
}

int ms_client_new_key(struct ms_client *cl, char *key) {
  uint8_t nonce[16];                  /* section 4.1: 16 random bytes */
  if (ms_client_random(cl->conn.server, nonce, sizeof nonce) < 0)
    return -1;
  EVP_EncodeBlock((unsigned char *)key, nonce, sizeof nonce);
  key[24] = '\0';
  if (handshake_accept_key(key, 24, cl->accept) < 0) return -1;
  cl->accept[WS_ACCEPT_LEN] = '\0';
  return 0;
}

/* ------------------------------------------------------------------ */
/* Connecting                                                          */
/* ------------------------------------------------------------------ */

static int start_next(struct ms_client *cl);

static void set_io(struct ms_conn *c, int events) {
  struct ev_loop *loop = c->server->module->loop;
  if ((c->io.events & (EV_READ | EV_WRITE)) == events) return;
  ev_io_stop(loop, &c->io);
  ev_io_set(&c->io, c->io.fd, events);
  ev_io_start(loop, &c->io);
}

static void connect_failed(struct ms_conn *c, const char *what,
                           const char *detail) {
  char why[320];
  snprintf(why, sizeof why, "%s: %s", what, detail);
  ms_conn_abort_with(c, 1006, why, WHY_ERROR);
}

static void send_request(struct ms_conn *c) {
  size_t len;
  const char *request = ms_event_client_request(c, &len);
  ms_conn_connected(c, request, len);
}

/* The TLS handshake, driven by readiness until it is done. */
static void tls_step(struct ms_client *cl) {
  struct ms_conn *c = &cl->conn;
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    send_request(c);
    return;
  }
  switch (SSL_get_error(c->ssl, r)) {
  case SSL_ERROR_WANT_READ:
    set_io(c, EV_READ);
    return;
  case SSL_ERROR_WANT_WRITE:
    set_io(c, EV_WRITE);
    return;
  default: {
    char why[120];
    long v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK)
      snprintf(why, sizeof why, "%s", X509_verify_cert_error_string(v));
    else
      ms_tls_error(why, sizeof why);
    connect_failed(c, "TLS handshake", why);
  }
  }
}

static void client_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  struct ms_client *cl = (struct ms_client *)w;
  struct ms_conn *c = &cl->conn;
  if (revents & EV_CUSTOM) {
    ms_conn_abort_with(c, 1006, cl->error, WHY_ERROR);
    return;
  }
  if (!cl->tcp_done) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
      err = errno;
    if (err && cl->next_addr < cl->addrs.n) {
      /* the next of the host's addresses */
      ev_io_stop(loop, &c->io);
      close(c->io.fd);
      c->io.fd = -1;
      if (start_next(cl) < 0)
        ms_conn_abort_with(c, 1006, cl->error, WHY_ERROR);
      return;
    }
    if (err) {
      connect_failed(c, "connect", strerror(err));
      return;
    }
    cl->tcp_done = 1;
    int one = 1;         /* frames are batched already: no Nagle delay */
    setsockopt(c->io.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!c->ssl) {
      send_request(c);
      return;
    }
  }
  tls_step(cl);
}

static SSL_CTX *new_tls_ctx(int verify, const char *cafile, char *err,
                            size_t errlen) {
  SSL_CTX *ctx = ms_tls_client_ctx(verify, cafile, "TLS: ", err, errlen);
  /* the WebSocket handshake is HTTP/1.1 (RFC 7301 ALPN) */
  if (ctx)
    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x08http/1.1", 9);
  return ctx;
}

/* An SSL for host, checking its certificate's name when verifying. */
static SSL *new_ssl(struct client_ctx *x, const char *host,
                    const struct ms_client_tls *tls, char *err,
                    size_t errlen) {
  SSL_CTX *ctx;
  int own = tls->verify && tls->cafile;
  if (own) {
    ctx = new_tls_ctx(1, tls->cafile, err, errlen);
  } else {
    SSL_CTX **cached = tls->verify ? &x->verify : &x->noverify;
    if (!*cached) *cached = new_tls_ctx(tls->verify, NULL, err, errlen);
    ctx = *cached;
  }
  if (!ctx) return NULL;
  SSL *ssl = SSL_new(ctx);
  if (own) SSL_CTX_free(ctx);           /* the SSL holds a reference */
  if (!ssl) {
    snprintf(err, errlen, "TLS: out of memory");
    return NULL;
  }
  struct in6_addr addr;
  int literal = inet_pton(AF_INET, host, &addr) == 1 ||
                inet_pton(AF_INET6, host, &addr) == 1;
  /* SNI carries names only (RFC 6066 section 3) */
  if (!literal) SSL_set_tlsext_host_name(ssl, host);
  if (tls->verify) {
    X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (literal ? X509_VERIFY_PARAM_set1_ip_asc(p, host) != 1
                : X509_VERIFY_PARAM_set1_host(p, host, 0) != 1) {
      snprintf(err, errlen, "TLS: cannot check the name '%s'", host);
      SSL_free(ssl);
      return NULL;
    }
  }
  SSL_set_connect_state(ssl);
  return ssl;
}

/* A non-blocking socket connecting to a; -1 with errno when it cannot
 * even begin. */
static int connect_to(const union ms_sockaddr *a) {
  int fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK |
                  SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, &a->sa, ms_sockaddr_len(a)) == 0 || errno == EINPROGRESS)
    return fd;
  int saved = errno;
  close(fd);
  errno = saved;
  return -1;
}

/* Connect to the next of the host's addresses that takes the attempt
 * and watch its socket (the connection's io is stopped); -1 with
 * cl->error set when none is left. */
static int start_next(struct ms_client *cl) {
  struct ms_conn *c = &cl->conn;
  int fd = -1, saved = EADDRNOTAVAIL;
  while (fd < 0 && cl->next_addr < cl->addrs.n)
    if ((fd = connect_to(&cl->addrs.addr[cl->next_addr++])) < 0)
      saved = errno;
  if (fd < 0) {
    snprintf(cl->error, sizeof cl->error, "connect: %s", strerror(saved));
    return -1;
  }
  if (c->ssl && SSL_set_fd(c->ssl, fd) != 1) {
    snprintf(cl->error, sizeof cl->error, "TLS: cannot use the socket");
    close(fd);
    return -1;
  }
  ev_io_set(&c->io, fd, EV_WRITE);
  ev_io_start(c->server->module->loop, &c->io);
  return 0;
}

/* While the host name resolves there is no socket: nothing is read or
 * written, and closing the connection (handshake_timeout, ws:close,
 * shutdown, a worker forgetting the master's clients) gives up the
 * lookup. */
static ssize_t resolving_read(struct ms_conn *c, void *buf, size_t n) {
  (void)c;
  (void)buf;
  (void)n;
  return MS_IO_AGAIN;
}

static ssize_t resolving_write(struct ms_conn *c, size_t budget) {
  (void)c;
  (void)budget;
  return MS_IO_ERROR;        /* nothing is queued before the socket */
}

static void resolving_shutdown(struct ms_conn *c) {
  (void)c;
}

static void resolving_close(struct ms_conn *c) {
  struct ms_client *cl = (struct ms_client *)c;
  ms_resolve_cancel(cl->lookup);
  cl->lookup = NULL;
  SSL_free(c->ssl);
  c->ssl = NULL;
}

static const struct ms_transport transport_resolving = {
  .name = "resolving",
  .whole_writes = 0,
  .read = resolving_read,
  .discard = resolving_read,
  .pending = NULL,
  .write = resolving_write,
  .shutdown = resolving_shutdown,
  .delivered = NULL,
  .close = resolving_close,
};

/* The host's addresses, or why there are none. */
static void resolved(void *arg, int status, const char *why,
                     const struct ms_addrs *addrs) {
  struct ms_client *cl = arg;
  struct ms_conn *c = &cl->conn;
  cl->lookup = NULL;
  ms_transport_set(c, c->ssl ? &ms_transport_tls : &ms_transport_tcp);
  if (status != MS_RESOLVE_OK) {
    char msg[320];
    snprintf(msg, sizeof msg, "cannot resolve '%s': %s", cl->host, why);
    ms_conn_abort_with(c, 1006, msg, WHY_ERROR);
    return;
  }
  cl->addrs = *addrs;
  cl->next_addr = 0;
  if (start_next(cl) < 0) ms_conn_abort_with(c, 1006, cl->error, WHY_ERROR);
}

void ms_client_connect(struct ms_client *cl, struct ms_server *ctx,
                       const char *host, int port,
                       const struct ms_client_tls *tls) {
  struct ms_conn *c = &cl->conn;
  struct ms_module *m = ctx->module;
  int failed = 0;
  snprintf(cl->host, sizeof cl->host, "%s", host);
  ms_conn_start_client(c, ctx, -1, client_io_cb);
  if (tls->enabled) {
    if ((c->ssl = new_ssl(ctx_of(ctx), host, tls, cl->error,
                          sizeof cl->error)))
      ms_transport_set(c, &ms_transport_tls);
    else
      failed = 1;
  }
  if (!failed && ms_resolve_literal(host, AF_UNSPEC, (unsigned)port,
                                    cl->addrs.addr)) {
    cl->addrs.n = 1;                   /* an address: no lookup */
    failed = start_next(cl) < 0;
  } else if (!failed) {
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    ms_transport_set(c, &transport_resolving);
    if (!(cl->lookup = ms_resolve(m, host, service, AF_UNSPEC, resolved,
                                  cl))) {
      ms_transport_set(c, c->ssl ? &ms_transport_tls : &ms_transport_tcp);
      snprintf(cl->error, sizeof cl->error, "out of memory");
      failed = 1;
    }
  }
  if (!ev_is_active(&ctx->prepare)) ev_prepare_start(m->loop, &ctx->prepare);
  /* a failure is told in the loop, after connect has returned the ws */
  if (failed) ev_feed_event(m->loop, &c->io, EV_CUSTOM);
}

/* ------------------------------------------------------------------ */
/* The server's handshake (section 4.1, the client's checks)           */
/* ------------------------------------------------------------------ */

static const struct http_header *one_header(const struct http_request *r,
                                            const char *name, int *count) {
  const struct http_header *found = NULL;
  *count = 0;
  for (size_t i = 0; i < r->nheaders; i++)
    if (http_ieq(r->headers[i].name, r->headers[i].name_len, name)) {
      if (!found) found = &r->headers[i];
      (*count)++;
    }
  return found;
}

/* Every Sec-WebSocket-Extensions field joined (RFC 7230 3.2.2) into
 * buf; its length, or -1 when it does not fit. */
static long joined_extensions(const struct http_request *r, char *buf,
                              size_t cap) {
  size_t len = 0;
  for (size_t i = 0; i < r->nheaders; i++) {
    const struct http_header *h = &r->headers[i];
    if (!http_ieq(h->name, h->name_len, "sec-websocket-extensions"))
      continue;
    if (len + h->value_len + 2 > cap) return -1;
    if (len) {
      memcpy(buf + len, ", ", 2);
      len += 2;
    }
    memcpy(buf + len, h->value, h->value_len);
    len += h->value_len;
  }
  return (long)len;
}

/* Check the response; NULL when the WebSocket may open, else why not.
 * Fills *params and sets *deflate when compression was accepted. */
static const char *check_response(struct ms_client *cl, int status,
                                  const struct http_request *r,
                                  struct deflate_params *params,
                                  int *deflate, char *buf, size_t cap) {
  struct ms_conn *c = &cl->conn;
  int n;
  if (status != 101) {
    snprintf(buf, cap, "handshake: the server answered %d", status);
    return buf;
  }
  int upgrade = 0, connection = 0;
  for (size_t i = 0; i < r->nheaders; i++) {
    const struct http_header *h = &r->headers[i];
    if (http_ieq(h->name, h->name_len, "upgrade"))
      upgrade |= http_has_token(h->value, h->value_len, "websocket");
    if (http_ieq(h->name, h->name_len, "connection"))
      connection |= http_has_token(h->value, h->value_len, "upgrade");
  }
  if (!upgrade) return "handshake: no 'Upgrade: websocket'";
  if (!connection) return "handshake: no 'Connection: Upgrade'";
  const struct http_header *a = one_header(r, "sec-websocket-accept", &n);
  if (!a || n != 1 || a->value_len != WS_ACCEPT_LEN ||
      memcmp(a->value, cl->accept, WS_ACCEPT_LEN) != 0)
    return "handshake: wrong Sec-WebSocket-Accept";
  char ext[1024];
  long elen = joined_extensions(r, ext, sizeof ext);
  *deflate = 0;
  if (elen != 0) {
    /* only what we offered may come back (section 4.1, 9.1) */
    if (elen < 0 || !c->opts->deflate.enabled ||
        !deflate_accept_response(ext, (size_t)elen, &c->opts->deflate,
                                 params))
      return "handshake: an extension we did not offer";
    *deflate = 1;
  }
  const struct http_header *p = one_header(r, "sec-websocket-protocol",
                                           &n);
  int rc = n > 1 ? -1 : ms_event_client_protocol(c, p ? p->value : NULL,
                                               p ? p->value_len : 0);
  if (rc == -2) return "out of memory";
  if (rc < 0) return "handshake: a subprotocol we did not offer";
  return NULL;
}

size_t ms_client_response(struct ms_conn *c, const uint8_t *p, size_t n) {
  struct ms_client *cl = (struct ms_client *)c;
  struct ms_server *s = c->server;
  struct http_header headers[s->limits.max_headers];
  struct http_request r;
  r.headers = headers;
  int status = 0;
  long used = http_parse_response((const char *)p, n, &s->limits, &r,
                                  &status);
  if (used == 0) return 0;
  char buf[80];
  struct deflate_params params;
  int deflate = 0;
  const char *why = used < 0 ? "handshake: malformed response head"
                    : check_response(cl, status, &r, &params, &deflate,
                                     buf, sizeof buf);
  if (!why && deflate) {
    if (!(c->deflate = calloc(1, sizeof *c->deflate))) why = "out of memory";
    else c->deflate->params = params;
  }
  if (why) {
    ms_conn_abort_with(c, 1006, why, WHY_ERROR);
    return n;
  }
  c->state = CS_OPEN;
  c->opened = ev_now(s->module->loop);
  c->deadline = c->opened + c->opts->keep_alive_interval;
  ms_event_open(c);
  return (size_t)used;          /* what follows the head are frames */
}
