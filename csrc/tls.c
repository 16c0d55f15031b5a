/* tls.c - OpenSSL contexts and non-blocking record I/O */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "tls.h"

/* Safe defaults: forward secrecy and AEAD ciphers only for TLS 1.2;
 * OpenSSL's own TLS 1.3 suites are all sound. */
#define DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"

const char *ms_tls_error(char *buf, size_t len) {
  unsigned long e = ERR_get_error();
  if (!e) snprintf(buf, len, "%s", errno ? strerror(errno) : "unknown");
  else ERR_error_string_n(e, buf, len);
  ERR_clear_error();
  return buf;
}

static int password_cb(char *buf, int size, int rwflag, void *user) {
  const char *password = user;
  (void)rwflag;
  if (!password) return 0;
  size_t n = strlen(password);
  if (n > (size_t)size) return 0;
  memcpy(buf, password, n);
  return (int)n;
}

/* ALPN (RFC 7301): this server speaks HTTP/2 (when on) in preference to
 * HTTP/1.1 (RFC 9113 section 3.2); a client that offers only other
 * protocols goes on without ALPN. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg) {
  static const unsigned char both[] = "\x02h2\x08http/1.1";
  const struct ms_tls *t = arg;
  const unsigned char *ours = t->http2 ? both : both + 3;
  unsigned ours_len = t->http2 ? sizeof both - 1 : sizeof both - 4;
  (void)ssl;
  if (SSL_select_next_proto((unsigned char **)out, outlen, ours, ours_len,
                            in, inlen) == OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_OK;
  return SSL_TLSEXT_ERR_NOACK;
}

/* SNI (RFC 6066 section 3): switch to the certificate of that name. */
static int servername_cb(SSL *ssl, int *alert, void *arg) {
  struct ms_tls *t = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  (void)alert;
  if (!name) return SSL_TLSEXT_ERR_OK;
  for (size_t i = 1; i < t->ncerts; i++)
    if (strcasecmp(t->certs[i].name, name) == 0) {
      SSL_set_SSL_CTX(ssl, t->certs[i].ctx);
      break;
    }
  return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *build_ctx(struct ms_tls *t, struct ms_tls_cert *c, char *err,
                          size_t errlen) {
  char why[256];
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    snprintf(err, errlen, "cannot create a TLS context: %s",
             ms_tls_error(why, sizeof why));
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, t->min_version);
  /* no renegotiation (a DoS lever), no compression (CRIME) */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                      SSL_OP_CIPHER_SERVER_PREFERENCE |
                      SSL_OP_IGNORE_UNEXPECTED_EOF);
  /* partial writes from queued buffers; buffers freed while idle */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                   SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(ctx, password_cb);
  SSL_CTX_set_default_passwd_cb_userdata(ctx, c->password);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, t);
  SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
  SSL_CTX_set_tlsext_servername_arg(ctx, t);
  if (!SSL_CTX_set_cipher_list(ctx, t->ciphers ? t->ciphers
                                               : DEFAULT_CIPHERS)) {
    snprintf(err, errlen, "invalid ciphers '%s': %s", t->ciphers,
             ms_tls_error(why, sizeof why));
  } else if (t->ciphersuites &&
             !SSL_CTX_set_ciphersuites(ctx, t->ciphersuites)) {
    snprintf(err, errlen, "invalid ciphersuites '%s': %s", t->ciphersuites,
             ms_tls_error(why, sizeof why));
  } else if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1) {
    snprintf(err, errlen, "cannot load certificate chain '%s': %s", c->cert,
             ms_tls_error(why, sizeof why));
  } else if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) !=
             1) {
    snprintf(err, errlen, "cannot load private key '%s': %s", c->key,
             ms_tls_error(why, sizeof why));
  } else if (SSL_CTX_check_private_key(ctx) != 1) {
    snprintf(err, errlen, "private key '%s' does not match certificate "
             "'%s'", c->key, c->cert);
  } else if (X509_cmp_current_time(
                 X509_get0_notAfter(SSL_CTX_get0_certificate(ctx))) < 0) {
    snprintf(err, errlen, "certificate '%s' has expired", c->cert);
  } else {
    return ctx;
  }
  SSL_CTX_free(ctx);
  return NULL;
}

int ms_tls_load(struct ms_tls *t, char *err, size_t errlen) {
  SSL_CTX *fresh[1 + MS_TLS_MAX_SNI];
  for (size_t i = 0; i < t->ncerts; i++) {
    fresh[i] = build_ctx(t, &t->certs[i], err, errlen);
    if (!fresh[i]) {
      while (i--) SSL_CTX_free(fresh[i]);
      return -1;
    }
  }
  /* connections hold a reference to their context: freeing ours only
   * drops it once they are gone */
  for (size_t i = 0; i < t->ncerts; i++) {
    SSL_CTX_free(t->certs[i].ctx);
    t->certs[i].ctx = fresh[i];
  }
  return 0;
}

void ms_tls_free(struct ms_tls *t) {
  for (size_t i = 0; i < t->ncerts; i++) {
    struct ms_tls_cert *c = &t->certs[i];
    SSL_CTX_free(c->ctx);
    free(c->name);
    free(c->cert);
    free(c->key);
    free(c->password);
  }
  free(t->ciphers);
  free(t->ciphersuites);
  t->ncerts = 0;
}

SSL *ms_tls_accept(struct ms_tls *t, int fd) {
  SSL *ssl = SSL_new(t->certs[0].ctx);
  if (!ssl) return NULL;
  if (SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    return NULL;
  }
  SSL_set_accept_state(ssl);
  return ssl;
}

static ssize_t result(SSL *ssl, int r) {
  switch (SSL_get_error(ssl, r)) {
  case SSL_ERROR_WANT_READ: return MS_TLS_WANT_READ;
  case SSL_ERROR_WANT_WRITE: return MS_TLS_WANT_WRITE;
  case SSL_ERROR_ZERO_RETURN: return 0;          /* close_notify */
  case SSL_ERROR_SYSCALL:
    if (ERR_peek_error() == 0 && (errno == 0 || errno == ECONNRESET))
      return 0;                      /* the peer left without notice */
    return MS_TLS_ERROR;
  case SSL_ERROR_SSL:
    if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_HTTP_REQUEST)
      return MS_TLS_PLAIN_HTTP;
    return MS_TLS_ERROR;
  default:
    return MS_TLS_ERROR;
  }
}

ssize_t ms_tls_read(SSL *ssl, void *buf, size_t n) {
  size_t got = 0;
  ERR_clear_error();
  errno = 0;
  int r = SSL_read_ex(ssl, buf, n, &got);
  return r == 1 ? (ssize_t)got : result(ssl, r);
}

ssize_t ms_tls_write(SSL *ssl, const void *buf, size_t n) {
  size_t put = 0;
  ERR_clear_error();
  errno = 0;
  int r = SSL_write_ex(ssl, buf, n, &put);
  return r == 1 ? (ssize_t)put : result(ssl, r);
}

void ms_tls_shutdown(SSL *ssl) {
  ERR_clear_error();
  if (SSL_is_init_finished(ssl)) SSL_shutdown(ssl);
  ERR_clear_error();
}

SSL_CTX *ms_tls_client_ctx(int verify, const char *cafile,
                           const char *ca_prefix, char *err, size_t errlen) {
  char why[160];
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    snprintf(err, errlen, "TLS: %s", ms_tls_error(why, sizeof why));
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                      SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                   SSL_MODE_RELEASE_BUFFERS);
  if (verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = cafile ? SSL_CTX_load_verify_locations(ctx, cafile, NULL)
                    : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
      snprintf(err, errlen, "%scannot load CA certificates%s%s: %s",
               ca_prefix, cafile ? " from " : "", cafile ? cafile : "",
               ms_tls_error(why, sizeof why));
      SSL_CTX_free(ctx);
      return NULL;
    }
  }
  return ctx;
}
