/* socket.c - client sockets: the receive buffer, non-blocking connects,
 * reads and writes over TCP, Unix sockets or TLS, and the keep-alive
 * pool */
#define _GNU_SOURCE
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "server.h"
#include "socket.h"
#include "tls.h"

/* One read takes up to this much; the scratch block it borrows while
 * the buffer is empty is as large (LuaSocket reads 8 KiB). */
#define READ_CHUNK 16384

/* A connection kept alive in the pool. */
struct ms_pooled {
  ev_timer idle;                /* closes it after the idle time */
  struct ms_module *m;
  struct ms_pooled *prev, *next;  /* in the pool, newest first */
  SSL *ssl;
  int fd;
  int timed;                    /* idle is armed (and unref'ed) */
  unsigned reused;
  size_t keylen;
  char key[];
};

/* What the module's sockets share, made when the first needs it. */
struct ms_sockets {
  SSL_CTX *verify, *noverify;   /* TLS contexts with the system's CAs */
  struct ms_pooled *pool;
  char scratch[READ_CHUNK];     /* an empty buffer reads here */
};

static struct ms_sockets *shared(struct ms_module *m) {
  if (!m->sockets) m->sockets = calloc(1, sizeof *m->sockets);
  return m->sockets;
}

/* ------------------------------------------------------------------ */
/* The buffer                                                          */
/* ------------------------------------------------------------------ */

/* Room for a read of at least half a chunk after b's bytes; -1 without
 * memory.  A few bytes left over from the last call go back to the
 * scratch block, so that small leftovers never grow a block of their
 * own; more than half a chunk grow theirs. */
static int make_room(struct ms_module *m, struct ms_sockbuf *b) {
  size_t room = b->data ? b->cap - b->start - b->len : 0;
  if (room >= READ_CHUNK / 2) return 0;
  if (!b->borrowed && b->len <= READ_CHUNK / 2) {
    struct ms_sockets *x = shared(m);
    if (!x) return -1;
    if (b->len) memcpy(x->scratch, b->data + b->start, b->len);
    free(b->data);
    b->data = x->scratch;
    b->cap = sizeof x->scratch;
    b->start = 0;
    b->borrowed = 1;
    return 0;
  }
  if (b->start > 0 && b->len <= b->cap / 2) {
    memmove(b->data, b->data + b->start, b->len);
    b->start = 0;
    return 0;
  }
  size_t cap = b->cap * 2;
  char *p = malloc(cap);
  if (!p) return -1;
  memcpy(p, b->data + b->start, b->len);
  if (!b->borrowed) free(b->data);
  b->data = p;
  b->cap = cap;
  b->start = 0;
  b->borrowed = 0;
  return 0;
}

void ms_sockbuf_consume(struct ms_sockbuf *b, size_t n) {
  b->start += n;
  b->len -= n;
  if (b->len == 0) b->start = 0;
}

int ms_sockbuf_settle(struct ms_sockbuf *b) {
  if (b->len == 0) {
    ms_sockbuf_free(b);
    return 0;
  }
  if (!b->borrowed) return 0;
  char *p = malloc(b->len);
  if (!p) {
    memset(b, 0, sizeof *b);
    return -1;
  }
  memcpy(p, b->data + b->start, b->len);
  b->data = p;
  b->cap = b->len;
  b->start = 0;
  b->borrowed = 0;
  return 0;
}

void ms_sockbuf_free(struct ms_sockbuf *b) {
  if (!b->borrowed) free(b->data);
  memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------ */
/* Reading and writing                                                 */
/* ------------------------------------------------------------------ */

static ssize_t tls_result(ssize_t r, int *err) {
  switch (r) {
  case MS_TLS_WANT_READ: return MS_SOCK_WANT_READ;
  case MS_TLS_WANT_WRITE: return MS_SOCK_WANT_WRITE;
  case 0: return MS_SOCK_EOF;
  default:
    if (r > 0) return r;
    *err = errno && errno != EAGAIN ? errno : EPROTO;
    ERR_clear_error();
    return MS_SOCK_ERROR;
  }
}

ssize_t ms_sock_read(struct ms_module *m, int fd, SSL *ssl,
                     struct ms_sockbuf *b, int *err) {
  if (make_room(m, b) < 0) {
    *err = ENOMEM;
    return MS_SOCK_ERROR;
  }
  char *at = b->data + b->start + b->len;
  size_t room = b->cap - b->start - b->len;
  ssize_t r;
  if (ssl) {
    r = tls_result(ms_tls_read(ssl, at, room), err);
  } else {
    do r = recv(fd, at, room, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return MS_SOCK_WANT_READ;
      *err = errno;
      return MS_SOCK_ERROR;
    }
  }
  if (r > 0) b->len += (size_t)r;
  return r;
}

ssize_t ms_sock_write(int fd, SSL *ssl, const char *p, size_t n,
                      int *err) {
  if (ssl) {
    ssize_t r = tls_result(ms_tls_write(ssl, p, n), err);
    if (r == MS_SOCK_EOF) {
      *err = EPIPE;
      return MS_SOCK_ERROR;
    }
    return r;
  }
  ssize_t r;
  do r = send(fd, p, n, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  if (r >= 0) return r;
  if (errno == EAGAIN || errno == EWOULDBLOCK) return MS_SOCK_WANT_WRITE;
  *err = errno;
  return MS_SOCK_ERROR;
}

const char *ms_sock_strerror(int err) {
  switch (err) {
  case ECONNRESET: case EPIPE: case ECONNABORTED: return "closed";
  case ECONNREFUSED: return "connection refused";
  case ETIMEDOUT: return "timeout";
  case EISCONN: return "already connected";
  case EADDRINUSE: return "address already in use";
  case EACCES: return "permission denied";
  default: return strerror(err);
  }
}

/* ------------------------------------------------------------------ */
/* Connecting                                                          */
/* ------------------------------------------------------------------ */

int ms_sock_connect(const struct sockaddr *sa, socklen_t len, int *err) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK |
                  SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  int r;
  do r = connect(fd, sa, len);
  while (r < 0 && errno == EINTR);
  if (r == 0 || errno == EINPROGRESS) {
    *err = r == 0 ? 0 : EINPROGRESS;
    return fd;
  }
  *err = errno == EAGAIN ? ECONNREFUSED : errno;  /* a Unix socket's
                                                     backlog is full */
  close(fd);
  return -1;
}

int ms_sock_connect_result(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
  return err;
}

/* ------------------------------------------------------------------ */
/* TLS                                                                 */
/* ------------------------------------------------------------------ */

SSL *ms_sock_tls_new(struct ms_module *m, int fd, const char *name,
                     int verify, const char *cafile, char *err,
                     size_t errlen) {
  struct ms_sockets *x = shared(m);
  if (!x) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  SSL_CTX *ctx;
  int own = verify && cafile;         /* the system's are cached */
  if (own) {
    ctx = ms_tls_client_ctx(1, cafile, "", err, errlen);
  } else {
    SSL_CTX **cached = verify ? &x->verify : &x->noverify;
    if (!*cached)
      *cached = ms_tls_client_ctx(verify, NULL, "", err, errlen);
    ctx = *cached;
  }
  if (!ctx) return NULL;
  SSL *ssl = SSL_new(ctx);
  if (own) SSL_CTX_free(ctx);           /* the SSL holds a reference */
  if (!ssl || SSL_set_fd(ssl, fd) != 1) {
    snprintf(err, errlen, "TLS: out of memory");
    SSL_free(ssl);
    return NULL;
  }
  struct in6_addr addr;
  int literal = name && (inet_pton(AF_INET, name, &addr) == 1 ||
                         inet_pton(AF_INET6, name, &addr) == 1);
  /* SNI carries names only (RFC 6066 section 3) */
  if (name && !literal) SSL_set_tlsext_host_name(ssl, name);
  if (verify && name) {
    X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (literal ? X509_VERIFY_PARAM_set1_ip_asc(p, name) != 1
                : X509_VERIFY_PARAM_set1_host(p, name, 0) != 1) {
      snprintf(err, errlen, "cannot check the name '%s'", name);
      SSL_free(ssl);
      return NULL;
    }
  }
  SSL_set_connect_state(ssl);
  return ssl;
}

int ms_sock_tls_handshake(SSL *ssl, char *err, size_t errlen) {
  ERR_clear_error();
  errno = 0;
  int r = SSL_do_handshake(ssl);
  if (r == 1) return 1;
  int e = SSL_get_error(ssl, r);
  if (e == SSL_ERROR_WANT_READ) return MS_SOCK_WANT_READ;
  if (e == SSL_ERROR_WANT_WRITE) return MS_SOCK_WANT_WRITE;
  long v = SSL_get_verify_result(ssl);
  char why[160];
  if (v != X509_V_OK)
    snprintf(err, errlen, "certificate verify failed: %s",
             X509_verify_cert_error_string(v));
  else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
    snprintf(err, errlen, "handshake failed: %s",
             errno ? ms_sock_strerror(errno) : "closed");
  else
    snprintf(err, errlen, "handshake failed: %s",
             ms_tls_error(why, sizeof why));
  ERR_clear_error();
  return MS_SOCK_ERROR;
}

int ms_sock_idle_check(int fd, SSL *ssl) {
  char c;
  if (ssl) {
    size_t n;
    ERR_clear_error();
    int r = SSL_peek_ex(ssl, &c, 1, &n);  /* reads tickets, alerts */
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ) return MS_IDLE_OK;
    return e == SSL_ERROR_NONE ? MS_IDLE_UNREAD : MS_IDLE_CLOSED;
  }
  ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return MS_IDLE_OK;
  return r > 0 ? MS_IDLE_UNREAD : MS_IDLE_CLOSED;
}

/* ------------------------------------------------------------------ */
/* The pool                                                            */
/* ------------------------------------------------------------------ */

static void unlink_pooled(struct ms_pooled *p) {
  struct ms_sockets *x = p->m->sockets;
  if (p->prev) p->prev->next = p->next;
  else x->pool = p->next;
  if (p->next) p->next->prev = p->prev;
  if (p->timed) {
    ev_ref(p->m->loop);                 /* as it was unref'ed */
    ev_timer_stop(p->m->loop, &p->idle);
    p->timed = 0;
  }
}

static void close_pooled(struct ms_pooled *p, int polite) {
  unlink_pooled(p);
  if (p->ssl) {
    if (polite) ms_tls_shutdown(p->ssl);
    SSL_free(p->ssl);
  }
  close(p->fd);
  free(p);
}

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  close_pooled((struct ms_pooled *)w, 1);
}

int ms_pool_put(struct ms_module *m, const char *key, size_t keylen,
                int fd, SSL *ssl, unsigned reused, double idle,
                size_t size) {
  struct ms_sockets *x = shared(m);
  struct ms_pooled *p = x ? malloc(sizeof *p + keylen + 1) : NULL;
  if (!p) return -1;
  /* the oldest of this key go beyond size */
  size_t same = 0;
  struct ms_pooled *last = NULL;
  for (struct ms_pooled *q = x->pool; q; q = q->next) {
    last = q;
    if (q->keylen == keylen && memcmp(q->key, key, keylen) == 0) same++;
  }
  for (struct ms_pooled *q = last; q && same >= size;) {
    struct ms_pooled *prev = q->prev;
    if (q->keylen == keylen && memcmp(q->key, key, keylen) == 0) {
      close_pooled(q, 1);
      same--;
    }
    q = prev;
  }
  memset(p, 0, sizeof *p);
  p->m = m;
  p->fd = fd;
  p->ssl = ssl;
  p->reused = reused;
  p->keylen = keylen;
  memcpy(p->key, key, keylen);
  p->key[keylen] = '\0';
  if (idle > 0) {
    ev_timer_init(&p->idle, idle_cb, idle, 0);
    ev_timer_start(m->loop, &p->idle);
    ev_unref(m->loop);                  /* an idle one keeps no loop */
    p->timed = 1;
  }
  p->next = x->pool;
  if (p->next) p->next->prev = p;
  x->pool = p;
  return 0;
}

int ms_pool_take(struct ms_module *m, const char *key, size_t keylen,
                 int *fd, SSL **ssl, unsigned *reused) {
  struct ms_sockets *x = m->sockets;
  struct ms_pooled *p = x ? x->pool : NULL;
  while (p) {
    struct ms_pooled *next = p->next;
    if (p->keylen == keylen && memcmp(p->key, key, keylen) == 0) {
      if (ms_sock_idle_check(p->fd, p->ssl) != MS_IDLE_OK) {
        close_pooled(p, 0);             /* closed, or in doubt */
      } else {
        unlink_pooled(p);
        *fd = p->fd;
        *ssl = p->ssl;
        *reused = p->reused;
        free(p);
        return 1;
      }
    }
    p = next;
  }
  return 0;
}

void ms_pool_close_all(struct ms_module *m, int polite) {
  struct ms_sockets *x = m->sockets;
  while (x && x->pool) close_pooled(x->pool, polite);
}

void ms_sockets_free(struct ms_module *m) {
  struct ms_sockets *x = m->sockets;
  if (!x) return;
  ms_pool_close_all(m, 1);
  SSL_CTX_free(x->verify);
  SSL_CTX_free(x->noverify);
  free(x);
  m->sockets = NULL;
}
