/* transport_tls.c - a connection's byte stream over TLS (tls.c's
 * OpenSSL calls): records read and written, files sent through a
 * buffer */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport.h"

static ssize_t tls_read(struct ms_conn *c, void *buf, size_t n) {
  ssize_t got = ms_tls_read(c->ssl, buf, n);
  if (got >= 0) return got;
  switch (got) {
  case MS_TLS_WANT_READ:
    return MS_IO_AGAIN;
  case MS_TLS_WANT_WRITE:               /* a handshake to answer */
    return MS_IO_WANT_WRITE;
  case MS_TLS_PLAIN_HTTP:
    /* answered in plain text: the stream is plain from here on, so
     * that the answer is queued and the close lingers like any other
     * (an immediate close with the request unread would reset) */
    SSL_free(c->ssl);
    c->ssl = NULL;
    ms_transport_set(c, &ms_transport_tcp);
    c->server->metrics->closed[MS_KIND_HTTP][MS_CARRIER_TLS]++;
    c->server->metrics->opened[MS_KIND_HTTP][MS_CARRIER_TCP]++;
    return MS_IO_PLAIN_HTTP;
  default: {
    char why[160];
    if (!SSL_is_init_finished(c->ssl)) c->server->metrics->tls_failed++;
    ms_log(c->server, MS_LOG_INFO, "TLS connection failed: %s",
           ms_tls_error(why, sizeof why));
    return MS_IO_ERROR;
  }
  }
}

static int tls_pending(const struct ms_conn *c) {
  return SSL_pending(c->ssl) > 0;
}

/* One record write from the head chunk (a file's through a buffer).  A
 * retry after WANT_WRITE repeats the same length, as OpenSSL requires;
 * the budget is not needed, a record being at most 16 KiB. */
static ssize_t tls_write(struct ms_conn *c, size_t budget) {
  struct outq_span head;
  uint8_t file[16384];
  (void)budget;
  outq_head(&c->out, &head);
  const void *data = head.data;
  size_t want = head.len;
  if (head.fd >= 0) {
    if (want > sizeof file) want = sizeof file;
    ssize_t r = pread(head.fd, file, want, head.offset);
    if (r <= 0) return MS_IO_ERROR;  /* unreadable, or shrank under us */
    data = file;
    want = (size_t)r;
  }
  if (want == 0) return 0;
  ssize_t w = ms_tls_write(c->ssl, data, want);
  if (w == MS_TLS_WANT_READ) c->flags |= CF_WRITE_WANTS_READ;
  if (w == MS_TLS_WANT_READ || w == MS_TLS_WANT_WRITE) return 0;
  if (w <= 0) {
    char why[160];
    ms_log(c->server, MS_LOG_DEBUG, "TLS write failed: %s",
           ms_tls_error(why, sizeof why));
    return MS_IO_ERROR;
  }
  return w;
}

static void tls_shutdown(struct ms_conn *c) {
  ms_tls_shutdown(c->ssl);
  shutdown(c->io.fd, SHUT_WR);
}

static void tls_close(struct ms_conn *c) {
  SSL_free(c->ssl);
  c->ssl = NULL;
  close(c->io.fd);
  c->io.fd = -1;
}

const struct ms_transport ms_transport_tls = {
  .name = "tls",
  .whole_writes = 1,
  .read = tls_read,
  .discard = ms_transport_tcp_read,   /* lingering reads raw */
  .pending = tls_pending,
  .write = tls_write,
  .shutdown = tls_shutdown,
  .delivered = ms_transport_tcp_delivered,
  .close = tls_close,
};
