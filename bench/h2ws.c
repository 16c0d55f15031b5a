/* h2ws.c - WebSockets over HTTP/2 (RFC 8441) from the client's side,
 * for the HTTP/2 benchmarks (h2_ws.py): the time to open one on an
 * existing connection against a new TLS connection, echo over the
 * streams of one connection, memory per idle WebSocket on a stream.
 *
 * Blocking sockets, one thread: each test drives one connection at a
 * time, always with something in flight, so that a blocking read
 * returns.  The messages are small (a frame fits the windows), which a
 * blocking writer needs: the server never waits for us to read while
 * we wait for it to read. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "stats.h"

#define MAX_STREAMS 100     /* moonsocket's max_concurrent_streams */

struct ws {
  int32_t id;
  int status;                /* :status, or 101 over HTTP/1.1 */
  int open, closed, eof;     /* 200 seen; stream closed; END_STREAM
                                queued after out */
  uint8_t *out;              /* frames to send */
  size_t out_len, out_off, out_cap;
  uint8_t *in;               /* frames received, not yet parsed */
  size_t in_len, in_cap;
  uint64_t echoes;
  int inflight;
};

struct conn {
  int fd;
  SSL *ssl;
  nghttp2_session *session;  /* NULL over HTTP/1.1 */
};

struct opts {
  const char *host;
  int port, pid;
  long conns, depth, size, count;
  double seconds;
};

static SSL_CTX *ctx;
static const struct opts *O;
static uint8_t *message;     /* one masked client frame of O->size */
static size_t message_len;

static void die(const char *what) {
  fprintf(stderr, "h2ws: %s\n", what);
  exit(1);
}

static void *grow(void *p, size_t *cap, size_t need) {
  if (need <= *cap) return p;
  size_t n = *cap ? *cap : 256;
  while (n < need) n *= 2;
  p = realloc(p, n);
  if (!p) die("out of memory");
  *cap = n;
  return p;
}

static void out_add(struct ws *w, const uint8_t *p, size_t n) {
  if (w->out_off == w->out_len) w->out_off = w->out_len = 0;
  w->out = grow(w->out, &w->out_cap, w->out_len + n);
  memcpy(w->out + w->out_len, p, n);
  w->out_len += n;
}

/* A client frame (RFC 6455 5.2): FIN, opcode, masked payload. */
static size_t frame_build(uint8_t *f, int opcode, const uint8_t *p,
                          size_t n) {
  static const uint8_t key[4] = { 0x12, 0x34, 0x56, 0x78 };
  size_t h = 0;
  f[h++] = (uint8_t)(0x80 | opcode);
  if (n < 126) {
    f[h++] = (uint8_t)(0x80 | n);
  } else {
    f[h++] = 0x80 | 126;
    f[h++] = (uint8_t)(n >> 8);
    f[h++] = (uint8_t)n;
  }
  memcpy(f + h, key, 4);
  h += 4;
  for (size_t i = 0; i < n; i++) f[h + i] = p[i] ^ key[i & 3];
  return h + n;
}

/* ------------------------------------------------------------------ */
/* TLS                                                                 */
/* ------------------------------------------------------------------ */

static void conn_open(struct conn *c, int h2) {
  struct sockaddr_in a = { .sin_family = AF_INET,
                           .sin_port = htons((uint16_t)O->port) };
  inet_pton(AF_INET, O->host, &a.sin_addr);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0)
    die("connect failed");
  c->ssl = SSL_new(ctx);
  SSL_set_fd(c->ssl, c->fd);
  static const unsigned char h2alpn[] = "\x02h2";
  static const unsigned char h1alpn[] = "\x08http/1.1";
  if (h2) SSL_set_alpn_protos(c->ssl, h2alpn, sizeof h2alpn - 1);
  else SSL_set_alpn_protos(c->ssl, h1alpn, sizeof h1alpn - 1);
  if (SSL_connect(c->ssl) != 1) die("TLS handshake failed");
  c->session = NULL;
}

static void conn_close(struct conn *c) {
  if (c->session) nghttp2_session_del(c->session);
  SSL_shutdown(c->ssl);
  SSL_free(c->ssl);
  close(c->fd);
}

static void write_all(struct conn *c, const void *p, size_t n) {
  while (n) {
    int w = SSL_write(c->ssl, p, (int)n);
    if (w <= 0) die("write failed");
    p = (const uint8_t *)p + w;
    n -= (size_t)w;
  }
}

/* ------------------------------------------------------------------ */
/* WebSocket frames from the server (unmasked)                         */
/* ------------------------------------------------------------------ */

/* Whole frames of w->in: echoes counted (and answered with the next
 * message while echoing), a close frame answered. */
static void frames_parse(struct ws *w, int echo) {
  size_t off = 0;
  while (w->in_len - off >= 2) {
    const uint8_t *f = w->in + off;
    size_t have = w->in_len - off, h = 2;
    uint64_t n = f[1] & 0x7f;
    if (n == 126) {
      if (have < 4) break;
      n = (uint64_t)f[2] << 8 | f[3];
      h = 4;
    } else if (n == 127) {
      if (have < 10) break;
      n = 0;
      for (int i = 0; i < 8; i++) n = n << 8 | f[2 + i];
      h = 10;
    }
    if (have < h + n) break;
    int opcode = f[0] & 0x0f;
    if (opcode == 8) {
      w->closed = 1;
    } else if (opcode == 2) {
      if (n != (uint64_t)O->size) die("an echo of the wrong size");
      w->echoes++;
      w->inflight--;
      if (echo) {
        out_add(w, message, message_len);
        w->inflight++;
      }
    }
    off += h + (size_t)n;
  }
  memmove(w->in, w->in + off, w->in_len - off);
  w->in_len -= off;
}

static void in_add(struct ws *w, const uint8_t *p, size_t n) {
  w->in = grow(w->in, &w->in_cap, w->in_len + n);
  memcpy(w->in + w->in_len, p, n);
  w->in_len += n;
}

/* ------------------------------------------------------------------ */
/* HTTP/2 (nghttp2)                                                    */
/* ------------------------------------------------------------------ */

static int echoing;

static int on_header(nghttp2_session *s, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  (void)flags;
  (void)user;
  (void)valuelen;            /* nghttp2 ends value with a NUL */
  struct ws *w = nghttp2_session_get_stream_user_data(s,
                                                     frame->hd.stream_id);
  if (w && namelen == 7 && memcmp(name, ":status", 7) == 0)
    w->status = atoi((const char *)value);
  return 0;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *frame,
                    void *user) {
  (void)user;
  struct ws *w = nghttp2_session_get_stream_user_data(s,
                                                     frame->hd.stream_id);
  if (w && frame->hd.type == NGHTTP2_HEADERS && w->status == 200)
    w->open = 1;
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id,
                   const uint8_t *data, size_t len, void *user) {
  (void)flags;
  (void)user;
  struct ws *w = nghttp2_session_get_stream_user_data(s, id);
  if (!w) return 0;
  in_add(w, data, len);
  size_t before = w->out_len - w->out_off;
  frames_parse(w, echoing);
  if (w->out_len - w->out_off != before)
    nghttp2_session_resume_data(s, id);
  return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t error,
                    void *user) {
  (void)error;
  (void)user;
  struct ws *w = nghttp2_session_get_stream_user_data(s, id);
  if (w) w->closed = 2;
  return 0;
}

static ssize_t read_out(nghttp2_session *s, int32_t id, uint8_t *buf,
                        size_t length, uint32_t *flags,
                        nghttp2_data_source *source, void *user) {
  (void)s;
  (void)id;
  (void)user;
  struct ws *w = source->ptr;
  size_t n = w->out_len - w->out_off;
  if (n > length) n = length;
  memcpy(buf, w->out + w->out_off, n);
  w->out_off += n;
  if (w->out_off == w->out_len && w->eof) *flags |= NGHTTP2_DATA_FLAG_EOF;
  else if (!n) return NGHTTP2_ERR_DEFERRED;
  return (ssize_t)n;
}

/* Send what the session has, then read once (blocking) and feed it. */
static void pump(struct conn *c) {
  const uint8_t *p;
  ssize_t n;
  while ((n = nghttp2_session_mem_send(c->session, &p)) > 0)
    write_all(c, p, (size_t)n);
  if (n < 0) die("nghttp2 failed to send");
  uint8_t buf[65536];
  int r = SSL_read(c->ssl, buf, sizeof buf);
  if (r <= 0) die("the server closed the connection");
  if (nghttp2_session_mem_recv(c->session, buf, (size_t)r) != r)
    die("nghttp2 failed to read");
  while ((n = nghttp2_session_mem_send(c->session, &p)) > 0)
    write_all(c, p, (size_t)n);
}

static void h2_start(struct conn *c) {
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
  if (nghttp2_session_client_new(&c->session, cb, NULL) != 0)
    die("nghttp2_session_client_new");
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 } };
  nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 1);
  /* an extended CONNECT waits for SETTINGS_ENABLE_CONNECT_PROTOCOL */
  while (nghttp2_session_get_remote_settings(c->session,
           NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) != 1)
    pump(c);
}

static void ws_submit(struct conn *c, struct ws *w) {
  char authority[64];
  snprintf(authority, sizeof authority, "%s:%d", O->host, O->port);
#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, \
                   strlen(v), NGHTTP2_NV_FLAG_NONE }
  nghttp2_nv nv[] = {
    NV(":method", "CONNECT"), NV(":protocol", "websocket"),
    NV(":scheme", "https"), NV(":path", "/ws"),
    NV(":authority", authority), NV("sec-websocket-version", "13"),
  };
#undef NV
  nghttp2_data_provider data = { .source.ptr = w, .read_callback = read_out };
  memset(w, 0, sizeof *w);
  w->id = nghttp2_submit_request(c->session, NULL, nv,
                                 sizeof nv / sizeof nv[0], &data, w);
  if (w->id < 0) die("nghttp2_submit_request failed");
}

/* The closing handshake: our close frame and END_STREAM, then the
 * server's, until the stream is closed. */
static void ws_close_h2(struct conn *c, struct ws *w) {
  static const uint8_t code[2] = { 0x03, 0xe8 };       /* 1000 */
  uint8_t f[16];
  out_add(w, f, frame_build(f, 8, code, 2));
  w->eof = 1;
  nghttp2_session_resume_data(c->session, w->id);
  while (w->closed != 2) pump(c);
}

static void ws_free(struct ws *w) {
  free(w->out);
  free(w->in);
}

/* ------------------------------------------------------------------ */
/* HTTP/1.1 over a new TLS connection                                  */
/* ------------------------------------------------------------------ */

static void h1_upgrade(struct conn *c) {
  char req[256];
  int n = snprintf(req, sizeof req, "GET /ws HTTP/1.1\r\nHost: %s:%d\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n", O->host, O->port);
  write_all(c, req, (size_t)n);
  char buf[1024];
  size_t have = 0;
  while (!memmem(buf, have, "\r\n\r\n", 4)) {
    int r = SSL_read(c->ssl, buf + have, (int)(sizeof buf - have));
    if (r <= 0) die("no answer to the upgrade");
    have += (size_t)r;
  }
  if (have < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0)
    die("the upgrade was refused");
}

static void h1_close(struct conn *c) {
  static const uint8_t code[2] = { 0x03, 0xe8 };
  uint8_t f[16];
  write_all(c, f, frame_build(f, 8, code, 2));
  uint8_t buf[256];
  while (SSL_read(c->ssl, buf, sizeof buf) > 0) {}    /* until it closes */
}

/* ------------------------------------------------------------------ */
/* The tests                                                           */
/* ------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void print_times(const char *mode, uint64_t *t, long n,
                        double secs) {
  qsort(t, (size_t)n, sizeof *t, cmp_u64);
  printf("test=open mode=%s count=%ld open_p50_us=%.1f open_p99_us=%.1f "
         "cycles_per_s=%.1f\n", mode, n, (double)t[n / 2] / 1e3,
         (double)t[n * 99 / 100] / 1e3, (double)n / secs);
}

/* N WebSockets, one after another, on one HTTP/2 connection; then N
 * each on a new TLS connection (HTTP/1.1 upgrade).  The time to open is
 * from the request (or the connect) to the 200 (or the 101); a cycle
 * is that, the closing handshake and, over TLS, the connection's end. */
static void test_open(void) {
  uint64_t *t = calloc((size_t)O->count, sizeof *t);
  if (!t) die("out of memory");
  struct conn c;
  conn_open(&c, 1);
  h2_start(&c);
  uint64_t start = now_ns();
  for (long i = 0; i < O->count; i++) {
    struct ws w;
    uint64_t t0 = now_ns();
    ws_submit(&c, &w);
    while (!w.open) {
      pump(&c);
      if (w.status && w.status != 200) die("the CONNECT was refused");
    }
    t[i] = now_ns() - t0;
    ws_close_h2(&c, &w);
    ws_free(&w);
  }
  print_times("h2-stream", t, O->count, (double)(now_ns() - start) / 1e9);
  conn_close(&c);
  start = now_ns();
  for (long i = 0; i < O->count; i++) {
    uint64_t t0 = now_ns();
    conn_open(&c, 0);
    h1_upgrade(&c);
    t[i] = now_ns() - t0;
    h1_close(&c);
    conn_close(&c);
  }
  print_times("tls-connection", t, O->count,
              (double)(now_ns() - start) / 1e9);
  free(t);
}

/* C WebSockets on the streams of one connection, each with D messages
 * in flight, for the -T window after a second's warm-up. */
static void test_echo(void) {
  if (O->conns > MAX_STREAMS) die("at most 100 streams on a connection");
  struct conn c;
  struct ws *w = calloc((size_t)O->conns, sizeof *w);
  if (!w) die("out of memory");
  conn_open(&c, 1);
  h2_start(&c);
  for (long i = 0; i < O->conns; i++) ws_submit(&c, &w[i]);
  for (long i = 0; i < O->conns; i++)
    while (!w[i].open) pump(&c);
  echoing = 1;
  for (long i = 0; i < O->conns; i++) {
    for (long d = 0; d < O->depth; d++) out_add(&w[i], message, message_len);
    w[i].inflight = (int)O->depth;
    nghttp2_session_resume_data(c.session, w[i].id);
  }
  int pids[1] = { O->pid };
  uint64_t warm = now_ns() + 1000000000ull;
  while (now_ns() < warm) pump(&c);
  struct cpu_sample a, b;
  uint64_t e0 = 0, e1 = 0;
  for (long i = 0; i < O->conns; i++) e0 += w[i].echoes;
  cpu_sample(&a, pids, O->pid > 0);
  uint64_t end = a.t + (uint64_t)(O->seconds * 1e9);
  while (now_ns() < end) pump(&c);
  cpu_sample(&b, pids, O->pid > 0);
  for (long i = 0; i < O->conns; i++) e1 += w[i].echoes;
  double secs = (double)(b.t - a.t) / 1e9;
  double rate = (double)(e1 - e0) / secs;
  double server = cpu_server_pct(&a, &b);
  printf("test=echo mode=h2-streams conns=%ld depth=%ld size=%ld "
         "seconds=%.3f messages=%llu msgs_per_s=%.1f client_cpu=%.1f "
         "server_cpu=%.1f server_us_per_msg=%.2f\n", O->conns, O->depth,
         O->size, secs, (unsigned long long)(e1 - e0), rate,
         cpu_self_pct(&a, &b), server,
         server >= 0 && rate > 0 ? server / 100 * 1e6 / rate : -1);
  echoing = 0;
  conn_close(&c);                /* the server reads 1006: no matter */
  for (long i = 0; i < O->conns; i++) ws_free(&w[i]);
  free(w);
}

/* N idle WebSockets on streams, 100 to a connection: the server's RSS
 * before and after, per WebSocket. */
static void test_rss(void) {
  long nconn = (O->conns + MAX_STREAMS - 1) / MAX_STREAMS;
  struct conn *c = calloc((size_t)nconn, sizeof *c);
  struct ws *w = calloc((size_t)O->conns, sizeof *w);
  if (!c || !w) die("out of memory");
  long before = pid_rss_kib(O->pid);
  uint64_t t0 = now_ns();
  for (long k = 0; k < nconn; k++) {
    conn_open(&c[k], 1);
    h2_start(&c[k]);
    long first = k * MAX_STREAMS, last = first + MAX_STREAMS;
    if (last > O->conns) last = O->conns;
    for (long i = first; i < last; i++) ws_submit(&c[k], &w[i]);
    for (long i = first; i < last; i++)
      while (!w[i].open) pump(&c[k]);
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  sleep(1);
  long after = pid_rss_kib(O->pid);
  printf("test=rss mode=h2-streams websockets=%ld connections=%ld "
         "rss_before_kib=%ld rss_after_kib=%ld bytes_per_ws=%.0f "
         "open_seconds=%.3f\n", O->conns, nconn, before, after,
         (double)(after - before) * 1024 / (double)O->conns, secs);
  for (long k = 0; k < nconn; k++) conn_close(&c[k]);
  for (long i = 0; i < O->conns; i++) ws_free(&w[i]);
  free(c);
  free(w);
}

static void usage(void) {
  fprintf(stderr,
    "usage: h2ws [-H host] -P port [-p server-pid] open|echo|rss\n"
    "  open  -n N    N WebSockets one after another on one HTTP/2\n"
    "                connection, then N on new TLS connections\n"
    "  echo  -c C -d D -s S -T secs   C streams of one connection, D\n"
    "                messages of S bytes (< 65536) in flight each\n"
    "  rss   -c N    N idle WebSockets, 100 streams a connection\n");
  exit(2);
}

int main(int argc, char **argv) {
  struct opts o = { .host = "127.0.0.1", .conns = 100, .depth = 1,
                    .size = 16, .count = 1000, .seconds = 5 };
  const char *test = NULL;
  for (int i = 1; i < argc; i++) {
    if (argv[i][0] != '-') {
      test = argv[i];
      continue;
    }
    if (i + 1 >= argc) usage();
    char flag = argv[i][1];
    const char *v = argv[++i];
    switch (flag) {
    case 'H': o.host = v; break;
    case 'P': o.port = atoi(v); break;
    case 'p': o.pid = atoi(v); break;
    case 'c': o.conns = atol(v); break;
    case 'd': o.depth = atol(v); break;
    case 's': o.size = atol(v); break;
    case 'n': o.count = atol(v); break;
    case 'T': o.seconds = atof(v); break;
    default: usage();
    }
  }
  if (!test || !o.port || o.size < 1 || o.size >= 65536 ||
      o.conns < 1 || o.depth < 1 || o.count < 1)
    usage();
  O = &o;
  ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) die("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
  uint8_t *payload = malloc((size_t)o.size);
  message = malloc((size_t)o.size + 16);
  if (!payload || !message) die("out of memory");
  memset(payload, 'm', (size_t)o.size);
  message_len = frame_build(message, 2, payload, (size_t)o.size);
  free(payload);
  if (strcmp(test, "open") == 0) test_open();
  else if (strcmp(test, "echo") == 0) test_echo();
  else if (strcmp(test, "rss") == 0) test_rss();
  else usage();
  SSL_CTX_free(ctx);
  free(message);
  return 0;
}
