/* transport_tcp.c - a connection's byte stream over plain TCP: reads,
 * writev-style sends of the output queue, and sendfile for files */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "transport.h"

#define IOV_BATCH 64          /* chunks per sendmsg */

ssize_t ms_transport_tcp_read(struct ms_conn *c, void *buf, size_t n) {
  ssize_t got = read(c->io.fd, buf, n);
  if (got >= 0) return got;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
    return MS_IO_AGAIN;
  return MS_IO_ERROR;
}

/* Write once: a file chunk by sendfile, else the memory chunks up to the
 * next file chunk by one sendmsg. */
static ssize_t tcp_write(struct ms_conn *c, size_t budget) {
  struct iovec iov[IOV_BATCH];
  ssize_t w;
  int n = outq_iov(&c->out, iov, IOV_BATCH, budget);
  if (n > 0) {
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
    do w = sendmsg(c->io.fd, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
  } else {                             /* a file at the head */
    struct outq_span head;
    outq_head(&c->out, &head);
    off_t off = head.offset;
    size_t want = head.len < budget ? head.len : budget;
    do w = sendfile(c->io.fd, head.fd, &off, want);
    while (w < 0 && errno == EINTR);
    if (w == 0 && want) return MS_IO_ERROR;  /* it shrank under us */
  }
  if (w < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : MS_IO_ERROR;
  return w;
}

static void tcp_shutdown(struct ms_conn *c) {
  shutdown(c->io.fd, SHUT_WR);
}

/* Our FIN acknowledged (FIN_WAIT2: every byte before it was too), and
 * nothing unread: a close with bytes unread would send a reset. */
int ms_transport_tcp_delivered(const struct ms_conn *c) {
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  int unread = 0;
  if (getsockopt(c->io.fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
      len < offsetof(struct tcp_info, tcpi_unacked) + sizeof ti.tcpi_unacked)
    return 0;
  if (ti.tcpi_state != TCP_FIN_WAIT2 || ti.tcpi_unacked != 0) return 0;
  return ioctl(c->io.fd, FIONREAD, &unread) == 0 && unread == 0;
}

static void tcp_close(struct ms_conn *c) {
  close(c->io.fd);
  c->io.fd = -1;
}

const struct ms_transport ms_transport_tcp = {
  .name = "tcp",
  .whole_writes = 0,
  .read = ms_transport_tcp_read,
  .discard = ms_transport_tcp_read,
  .pending = NULL,
  .write = tcp_write,
  .shutdown = tcp_shutdown,
  .delivered = ms_transport_tcp_delivered,
  .close = tcp_close,
};
