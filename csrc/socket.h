/* socket.h - the client sockets apps open (moonsocket.socket): the
 * receive buffer that exists only while it holds bytes, non-blocking
 * connects, reads and writes over TCP, Unix sockets or TLS, and the
 * pool of idle connections kept alive for reuse */
#ifndef MS_SOCKET_H
#define MS_SOCKET_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <openssl/ssl.h>

struct ms_module;

/* What a read into the buffer returns besides a count of bytes. */
enum {
  MS_SOCK_EOF = 0,
  MS_SOCK_WANT_READ = -1,    /* retry when the descriptor is readable */
  MS_SOCK_WANT_WRITE = -2,   /* retry when it is writable (TLS) */
  MS_SOCK_ERROR = -3         /* failed: *err holds an errno */
};

/* Bytes received and not yet taken: data[start .. start + len).  While
 * a call runs the buffer may borrow the module's scratch block; between
 * calls (ms_sockbuf_settle) it owns a block only while len > 0, so an
 * idle socket holds none. */
struct ms_sockbuf {
  char *data;
  size_t start, len, cap;
  int borrowed;
};

/* Read once into b what the descriptor (or TLS) has: a count, or one
 * of the values above.  -1 from malloc is MS_SOCK_ERROR with ENOMEM. */
ssize_t ms_sock_read(struct ms_module *m, int fd, SSL *ssl,
                     struct ms_sockbuf *b, int *err);
/* Write what the kernel takes of p[0..n): a count > 0, or
 * MS_SOCK_WANT_WRITE, MS_SOCK_WANT_READ (TLS), MS_SOCK_ERROR. */
ssize_t ms_sock_write(int fd, SSL *ssl, const char *p, size_t n,
                      int *err);
void ms_sockbuf_consume(struct ms_sockbuf *b, size_t n);
/* The end of a call: what is left moves to a block of its own (or the
 * block goes when nothing is).  -1 when memory runs out (bytes lost). */
int ms_sockbuf_settle(struct ms_sockbuf *b);
void ms_sockbuf_free(struct ms_sockbuf *b);

/* LuaSocket's words for an errno ("closed", "connection refused",
 * "timeout"), else strerror's. */
const char *ms_sock_strerror(int err);

/* A non-blocking socket of family connecting to sa: the descriptor,
 * *err 0 (connected) or EINPROGRESS; -1 with *err on failure. */
int ms_sock_connect(const struct sockaddr *sa, socklen_t len, int *err);
/* The outcome of a connect in progress: 0 or an errno. */
int ms_sock_connect_result(int fd);

/* A client TLS state over fd.  name (or NULL) is sent as SNI when it is
 * not an address, and with verify the certificate must name it (name
 * or address); cafile NULL: the system's CAs.  NULL with err filled. */
SSL *ms_sock_tls_new(struct ms_module *m, int fd, const char *name,
                     int verify, const char *cafile, char *err,
                     size_t errlen);
/* One step of the handshake: 1 done, MS_SOCK_WANT_READ or _WRITE, or
 * MS_SOCK_ERROR with err filled ("certificate verify failed: ..."). */
int ms_sock_tls_handshake(SSL *ssl, char *err, size_t errlen);

/* Whether an idle connection may be kept or reused: MS_IDLE_OK when
 * the peer has neither closed it nor sent anything meanwhile. */
enum { MS_IDLE_OK, MS_IDLE_UNREAD, MS_IDLE_CLOSED };
int ms_sock_idle_check(int fd, SSL *ssl);

/* The pool of idle connections, by key ("host:port", "unix:path" or a
 * name the app chose).  put keeps fd (and ssl) for up to idle seconds
 * (0: no limit), closing the oldest of that key beyond size; take hands
 * back the newest that is still fine (ms_sock_idle_check), closing the
 * others it meets, and returns 1, or 0 when there is none. */
int ms_pool_put(struct ms_module *m, const char *key, size_t keylen,
                int fd, SSL *ssl, unsigned reused, double idle,
                size_t size);
int ms_pool_take(struct ms_module *m, const char *key, size_t keylen,
                 int *fd, SSL **ssl, unsigned *reused);
/* Close every pooled connection (politely: TLS close_notify), or only
 * drop this process's copies (a worker just forked: they are the
 * master's). */
void ms_pool_close_all(struct ms_module *m, int polite);
/* Free the sockets' shared state: the pool, scratch, TLS contexts. */
void ms_sockets_free(struct ms_module *m);

#endif
