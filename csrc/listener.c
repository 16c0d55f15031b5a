/* listener.c - listening sockets and accepting connections */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "events.h"
#include "server.h"

#define ACCEPTS_PER_EVENT 64

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents) {
  struct ms_server *s = (struct ms_server *)w;
  (void)revents;
  for (int i = 0; i < ACCEPTS_PER_EVENT && !s->closing; i++) {
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        /* out of descriptors: stop accepting until the next sweep
         * rather than spin on a readable listener */
        ms_log(s, MS_LOG_ERROR, "accept: %s; pausing accepts",
               strerror(errno));
        ev_io_stop(loop, w);
      }
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int full = s->nconns >= s->opts.max_connections;
    struct ms_conn *c = ms_event_accept(s);
    if (!c) {
      close(fd);
      return;
    }
    ms_conn_start(c, s, fd);
    if (full) {
      s->metrics->refused++;
      /* answered at once, then closed once the answer is out */
      ms_log(s, MS_LOG_WARN, "max_connections (%zu) reached: 503",
             s->opts.max_connections);
      ms_conn_respond_error(c, 503, "too many connections", 0);
    }
  }
}

int ms_server_listen(struct ms_server *s, const char *host, int port,
                     int backlog, enum ms_listen_mode mode,
                     const char **err) {
  struct addrinfo hints, *res, *ai;
  char service[16];
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  snprintf(service, sizeof service, "%d", port);
  int rc = getaddrinfo(host, service, &hints, &res);
  if (rc != 0) {
    *err = gai_strerror(rc);
    return -1;
  }
  int fd = -1, saved = 0;
  for (ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0) {
      saved = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (mode != MS_LISTEN_ALONE)
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
        (mode == MS_LISTEN_RESERVE || listen(fd, backlog) == 0))
      break;
    saved = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    *err = strerror(saved);
    return -1;
  }
  if (s->listener.fd >= 0) close(s->listener.fd);   /* the reservation */
  s->backlog = backlog;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &len);
  void *addr = ss.ss_family == AF_INET6
    ? (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
    : (void *)&((struct sockaddr_in *)&ss)->sin_addr;
  inet_ntop(ss.ss_family, addr, s->host, sizeof s->host);
  s->port = ntohs(ss.ss_family == AF_INET6
                  ? ((struct sockaddr_in6 *)&ss)->sin6_port
                  : ((struct sockaddr_in *)&ss)->sin_port);
  ev_io_init(&s->listener, accept_cb, fd, EV_READ);
  if (mode != MS_LISTEN_RESERVE) ev_io_start(s->module->loop, &s->listener);
  return 0;
}

void ms_server_stop_accepting(struct ms_server *s) {
  if (s->listener.fd >= 0) {
    ev_io_stop(s->module->loop, &s->listener);
    close(s->listener.fd);
    s->listener.fd = -1;
  }
}
