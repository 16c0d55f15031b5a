/* tls.h - the load generator's TLS client: one context per run, and the
 * non-blocking handshake and record I/O of one connection */
#ifndef BENCH_TLS_H
#define BENCH_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

/* What the calls below return besides byte counts.  WANT_* name the
 * socket event to wait for before calling again. */
enum {
  TLS_DONE = 0,          /* tls_handshake: finished */
  TLS_WANT_READ = -1,
  TLS_WANT_WRITE = -2,
  TLS_CLOSED = -3,       /* tls_read: close_notify, or EOF without it */
  TLS_FAILED = -4        /* tls_error says why */
};

/* A client context: TLS 1.3 only, or 1.2 only when tls12; no
 * certificate verification and no session resumption (see tls.c).
 * NULL with a message on stderr when OpenSSL refuses. */
SSL_CTX *tls_ctx_new(int tls12);
/* A connection over the connected socket fd, or NULL. */
SSL *tls_new(SSL_CTX *ctx, int fd);
/* Drive the handshake: TLS_DONE, TLS_WANT_READ, TLS_WANT_WRITE or
 * TLS_FAILED. */
int tls_handshake(SSL *ssl);
/* Bytes read (> 0), or TLS_WANT_READ, TLS_WANT_WRITE, TLS_CLOSED,
 * TLS_FAILED. */
ssize_t tls_read(SSL *ssl, void *buf, size_t n);
/* Bytes written (> 0, at most one record's worth), or TLS_WANT_READ,
 * TLS_WANT_WRITE, TLS_FAILED.  A call after WANT_* must pass at least
 * the bytes of the one before, as OpenSSL requires; they may move. */
ssize_t tls_write(SSL *ssl, const void *buf, size_t n);
/* The reason for the last TLS_FAILED, in buf. */
const char *tls_error(char *buf, size_t len);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519": what was negotiated. */
void tls_describe(SSL *ssl, char *buf, size_t len);

#endif
