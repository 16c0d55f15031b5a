/* tls.h - TLS for a server's connections with OpenSSL: contexts built
 * from certificate files (reloadable, several by server name), and the
 * non-blocking reads and writes the connection code uses instead of
 * read() and sendmsg() */
#ifndef MS_TLS_H
#define MS_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#define MS_TLS_MAX_SNI 32

struct ms_tls_cert {
  char *name;                  /* server name (SNI); NULL: the default */
  char *cert, *key, *password; /* PEM chain file, key file, passphrase */
  SSL_CTX *ctx;
};

struct ms_tls {
  int min_version;             /* TLS1_2_VERSION by default */
  char *ciphers;               /* TLS 1.2 cipher list */
  char *ciphersuites;          /* TLS 1.3 suites */
  int http2;                   /* ALPN offers h2 before http/1.1 */
  size_t ncerts;               /* certs[0] is the default */
  struct ms_tls_cert certs[1 + MS_TLS_MAX_SNI];
};

/* Build every context from its files.  On failure the contexts in use
 * stay, and err says which file and why. */
int ms_tls_load(struct ms_tls *t, char *err, size_t errlen);
void ms_tls_free(struct ms_tls *t);

/* A connection's TLS state over fd, in the accepting role. */
SSL *ms_tls_accept(struct ms_tls *t, int fd);

/* Results of ms_tls_read and ms_tls_write besides a byte count */
enum {
  MS_TLS_WANT_READ = -1,    /* retry when the socket is readable */
  MS_TLS_WANT_WRITE = -2,   /* retry when the socket is writable */
  MS_TLS_ERROR = -3,        /* failed: ms_tls_error says why */
  MS_TLS_PLAIN_HTTP = -4    /* the peer spoke plain HTTP to this port */
};

/* Bytes read (0 at the end of the stream), or one of the above. */
ssize_t ms_tls_read(SSL *ssl, void *buf, size_t n);
ssize_t ms_tls_write(SSL *ssl, const void *buf, size_t n);

/* Send close_notify, without waiting for the peer's. */
void ms_tls_shutdown(SSL *ssl);

/* A client context (TLS 1.2 or later, partial writes), checking the
 * peer's chain against cafile's CAs, or the system's, when verify.
 * NULL with err set when it cannot be made; a CA file that cannot be
 * loaded is told with ca_prefix before "cannot load CA certificates". */
SSL_CTX *ms_tls_client_ctx(int verify, const char *cafile,
                           const char *ca_prefix, char *err, size_t errlen);

/* The latest OpenSSL error as text (and the queue cleared). */
const char *ms_tls_error(char *buf, size_t len);

#endif
