/* tls.c - the load generator's TLS client over OpenSSL 3: a context,
 * the handshake and records, all non-blocking on the run's epoll loop */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#include "tls.h"

SSL_CTX *tls_ctx_new(int tls12) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  char why[256];
  if (!ctx) goto fail;
  int version = tls12 ? TLS1_2_VERSION : TLS1_3_VERSION;
  if (!SSL_CTX_set_min_proto_version(ctx, version) ||
      !SSL_CTX_set_max_proto_version(ctx, version))
    goto fail;
  /* No certificate verification: this is a load generator talking to
   * a server it started, with a self-signed certificate.  The handshake
   * still checks the server's signature, so its cost is all there. */
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  /* No session resumption: every handshake is a full one, which is
   * what the handshake test means to measure.  (A TLS 1.3 server still
   * sends its tickets; they are read and dropped.) */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION |
                      SSL_OP_IGNORE_UNEXPECTED_EOF);
  /* Partial writes: the output buffer is flushed a record at a time and
   * may grow (move) between retries.  Read-ahead takes what the socket
   * has in one read; the client then asks SSL_has_pending before it
   * waits for epoll, which cannot see those bytes. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                   SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);
  return ctx;
fail:
  fprintf(stderr, "loadgen: cannot make a TLS context: %s\n",
          tls_error(why, sizeof why));
  SSL_CTX_free(ctx);
  return NULL;
}

SSL *tls_new(SSL_CTX *ctx, int fd) {
  SSL *ssl = SSL_new(ctx);
  if (!ssl) return NULL;
  if (SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    return NULL;
  }
  SSL_set_connect_state(ssl);
  return ssl;
}

static int result(SSL *ssl, int r) {
  switch (SSL_get_error(ssl, r)) {
  case SSL_ERROR_WANT_READ: return TLS_WANT_READ;
  case SSL_ERROR_WANT_WRITE: return TLS_WANT_WRITE;
  case SSL_ERROR_ZERO_RETURN: return TLS_CLOSED;
  case SSL_ERROR_SYSCALL:
    if (ERR_peek_error() == 0 && errno == 0) return TLS_CLOSED;
    return TLS_FAILED;
  default:
    return TLS_FAILED;
  }
}

int tls_handshake(SSL *ssl) {
  ERR_clear_error();
  errno = 0;
  int r = SSL_connect(ssl);
  if (r == 1) return TLS_DONE;
  r = result(ssl, r);
  return r == TLS_CLOSED ? TLS_FAILED : r;
}

ssize_t tls_read(SSL *ssl, void *buf, size_t n) {
  size_t got = 0;
  ERR_clear_error();
  errno = 0;
  if (SSL_read_ex(ssl, buf, n, &got) == 1) return (ssize_t)got;
  return result(ssl, 0);
}

ssize_t tls_write(SSL *ssl, const void *buf, size_t n) {
  size_t put = 0;
  ERR_clear_error();
  errno = 0;
  if (SSL_write_ex(ssl, buf, n, &put) == 1) return (ssize_t)put;
  int r = result(ssl, 0);
  return r == TLS_CLOSED ? TLS_FAILED : r;
}

const char *tls_error(char *buf, size_t len) {
  unsigned long e = ERR_get_error();
  if (e) ERR_error_string_n(e, buf, len);
  else snprintf(buf, len, "%s", errno ? strerror(errno)
                                      : "connection closed");
  ERR_clear_error();
  return buf;
}

void tls_describe(SSL *ssl, char *buf, size_t len) {
  const char *group = SSL_group_to_name(ssl,
                                       SSL_get_negotiated_group(ssl));
  snprintf(buf, len, "%s %s %s", SSL_get_version(ssl),
           SSL_get_cipher_name(ssl), group ? group : "?");
}
