/* log.c - the log: lines on stderr, what a peer sent escaped, repeated
 * errors and warnings counted rather than written */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include "log.h"
#include "server.h"
#include "utf8.h"

/* How long an identical error or warning is counted rather than
 * written. */
#define LOG_WINDOW 10.0
#define LOG_CUT_MARK 32               /* room for "...(+N bytes)" */

/* "\\uXXXX" of code point cp (at most U+FFFF) at esc; returns 6. */
static size_t json_u(char *esc, unsigned cp) {
  static const char hex[] = "0123456789abcdef";
  esc[0] = '\\';
  esc[1] = 'u';
  for (int k = 0; k < 4; k++) esc[2 + k] = hex[(cp >> (12 - 4 * k)) & 15];
  return 6;
}

/* Copy s[0..len) into out[0..size) for a log line, NUL-terminated, so
 * that what a peer sent can neither forge a line nor reach a terminal:
 * control characters (C0, DEL, C1) become \n, \r, \t or \xNN and a byte
 * that is not UTF-8 (RFC 3629) \xNN.  MS_ESCAPE_TEXT keeps newlines and
 * tabs (a traceback); MS_ESCAPE_FIELD escapes them, and a backslash and
 * a double quote too.  MS_ESCAPE_JSON writes the inside of a JSON string
 * (RFC 8259 section 7): control characters, U+2028 and U+2029 become
 * \uXXXX (\n, \r, \t kept short), a byte that is not UTF-8 U+FFFD.
 * What does not fit is cut at a character and marked "...(+N bytes)".
 * size must exceed LOG_CUT_MARK.  Returns out. */
char *ms_log_escape(char *out, size_t size, const char *s, size_t len,
                    enum ms_log_escape_mode mode) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  int json = mode == MS_ESCAPE_JSON;
  size_t o = 0, i = 0, keep_o = 0, keep_i = 0;
  while (i < len) {
    unsigned b = p[i];
    char esc[6] = { '\\', 'x', hex[b >> 4], hex[b & 15] };
    const char *src = esc;
    size_t n = json ? json_u(esc, b) : 4, used = 1;
    if (b == '\n' || b == '\t' || b == '\r') {
      if (mode == MS_ESCAPE_TEXT && b != '\r') {
        src = s + i;
        n = 1;
      } else {
        esc[1] = b == '\n' ? 'n' : b == '\t' ? 't' : 'r';
        n = 2;
      }
    } else if (b == '\\' || b == '"') {
      esc[1] = (char)b;
      n = mode != MS_ESCAPE_TEXT ? 2 : 1;
      src = mode != MS_ESCAPE_TEXT ? esc : s + i;
    } else if (b >= 0x20 && b < 0x7f) {
      src = s + i;
      n = 1;
    } else if (b >= 0x80) {
      uint32_t st = utf8_validate(UTF8_ACCEPT, p + i, 1);
      while (st != UTF8_ACCEPT && st != UTF8_REJECT && i + used < len)
        st = utf8_validate(st, p + i + used++, 1);
      if (st != UTF8_ACCEPT) {
        used = 1;
        if (json) n = json_u(esc, 0xfffd);
      } else if (b == 0xc2 && p[i + 1] < 0xa0) {
        if (json) n = json_u(esc, p[i + 1]);   /* C1, as \u0080.. */
        else used = 1;
      } else if (json && b == 0xe2 && p[i + 1] == 0x80 &&
                 (p[i + 2] == 0xa8 || p[i + 2] == 0xa9)) {
        n = json_u(esc, 0x2028u + (p[i + 2] - 0xa8u));   /* ends a line in JS */
      } else {
        src = s + i;                  /* a character */
        n = used;
      }
    }
    if (o + n > size - 1) break;
    memcpy(out + o, src, n);
    o += n;
    i += used;
    if (o + LOG_CUT_MARK <= size - 1) {
      keep_o = o;
      keep_i = i;
    }
  }
  if (i < len)
    snprintf(out + keep_o, size - keep_o, "...(+%zu bytes)", len - keep_i);
  else
    out[o] = '\0';
  return out;
}

static const char *const level_names[] = { "", "error", "warn", "info",
                                           "debug" };

/* The format lines of m are written in: its first server's. */
static int module_format(const struct ms_module *m) {
  return m && m->servers ? m->servers->opts.log_format : MS_LOG_TEXT;
}

/* The start of a JSON line at line[0..size): time (UTC, ms), level;
 * returns its length. */
static int json_head(char *line, size_t size, int level) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  char when[32];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  return snprintf(line, size, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\"",
                  when, ts.tv_nsec / 1000000, level_names[level]);
}

/* The end of a JSON line at line[n..size): the worker, when there are
 * workers, "}" and a newline; a line cut short loses its fields, never
 * its braces.  Returns the whole length. */
static size_t json_tail(char *line, size_t size, int n, int head,
                        const struct ms_module *m) {
  if (n < 0) return 0;
  if ((size_t)n > size - 24) n = head;     /* too long: only the head */
  if (m && m->nworkers > 1)
    n += snprintf(line + n, size - (size_t)n, ",\"worker\":%d", m->worker);
  line[n++] = '}';
  line[n++] = '\n';
  return (size_t)n;
}

/* One line on stderr.  Text: "moonsocket: LEVEL message", and after a
 * run of repeats " (N similar lines suppressed)" (of its first line).
 * JSON: {"time":..,"level":..,"message":..,"suppressed":N}; msg is
 * escaped for the format. */
static void log_write(const struct ms_module *m, int format, int level,
                      const char *msg, size_t len, unsigned suppressed) {
  /* one write per line: workers share the stream */
  char line[MS_LOG_LINE + 160];
  if (format == MS_LOG_JSON) {
    int head = json_head(line, sizeof line, level);
    int n = head + snprintf(line + head, sizeof line - (size_t)head,
                            ",\"message\":\"%.*s\"", (int)len, msg);
    if (suppressed && (size_t)n < sizeof line)
      n += snprintf(line + n, sizeof line - (size_t)n,
                    ",\"suppressed\":%u", suppressed);
    fwrite(line, 1, json_tail(line, sizeof line, n, head, m), stderr);
    return;
  }
  if (suppressed) len = strcspn(msg, "\n");
  int n = snprintf(line, sizeof line - 1, "moonsocket: %s %.*s",
                   level_names[level], (int)len, msg);
  if (n >= 0 && suppressed && (size_t)n < sizeof line - 1)
    n += snprintf(line + n, sizeof line - 1 - (size_t)n,
                  " (%u similar lines suppressed)", suppressed);
  if (n < 0) return;
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  fwrite(line, 1, (size_t)n, stderr);
}

void ms_log_flush(struct ms_module *m) {
  struct ms_log_repeat *r = &m->log;
  if (ev_is_active(&r->window)) {
    ev_ref(m->loop);                   /* as it was unref'ed */
    ev_timer_stop(m->loop, &r->window);
  }
  if (r->suppressed)
    log_write(m, r->format, r->level, r->line, r->len, r->suppressed);
  r->suppressed = 0;
}

static void log_window_end(struct ev_loop *loop, ev_timer *w, int revents) {
  struct ms_module *m = (struct ms_module *)((char *)w -
                         offsetof(struct ms_module, log.window));
  (void)revents;
  ev_ref(loop);                        /* it stopped, unref'ed */
  ms_log_flush(m);
}

/* A line on stderr in format, escaped for it.  An error or warning
 * identical to the last one written, within LOG_WINDOW seconds of it, is
 * only counted; the count is written when the window ends, before the
 * next different error or warning, or at a shutdown. */
static void log_line(struct ms_module *m, int format, int level,
                     const char *fmt, va_list ap) {
  char raw[MS_LOG_LINE], msg[MS_LOG_LINE];
  int k = vsnprintf(raw, sizeof raw, fmt, ap);
  if (k < 0) return;
  size_t len = (size_t)k < sizeof raw ? (size_t)k : sizeof raw - 1;
  len = strlen(ms_log_escape(msg, sizeof msg, raw, len,
    format == MS_LOG_JSON ? MS_ESCAPE_JSON : MS_ESCAPE_TEXT));
  if (!m || level > MS_LOG_WARN) {
    log_write(m, format, level, msg, len, 0);
    return;
  }
  struct ms_log_repeat *r = &m->log;
  ev_tstamp now = ev_now(m->loop);
  if (r->level == level && r->format == format && r->len == len &&
      now - r->since < LOG_WINDOW && memcmp(r->line, msg, len) == 0) {
    if (r->suppressed++ == 0) {        /* the window's end writes it */
      ev_timer_set(&r->window, r->since + LOG_WINDOW - now, 0);
      ev_timer_start(m->loop, &r->window);
      ev_unref(m->loop);               /* it keeps no loop going */
    }
    return;
  }
  ms_log_flush(m);
  log_write(m, format, level, msg, len, 0);
  memcpy(r->line, msg, len);
  r->len = len;
  r->level = level;
  r->format = format;
  r->since = now;
}

/* A line on stderr, when the server's log_level lets it through
 * (without a server, at info and above), in its log_format. */
void ms_log(struct ms_server *s, int level, const char *fmt, ...) {
  if (level > (s ? s->opts.log_level : MS_LOG_INFO)) return;
  va_list ap;
  va_start(ap, fmt);
  log_line(s ? s->module : NULL, s ? s->opts.log_format : MS_LOG_TEXT,
           level, fmt, ap);
  va_end(ap);
}

void ms_log_module(struct ms_module *m, int level, const char *fmt, ...) {
  if (level > MS_LOG_INFO) return;
  va_list ap;
  va_start(ap, fmt);
  log_line(m, module_format(m), level, fmt, ap);
  va_end(ap);
}

void ms_log_json(struct ms_server *s, int level, const char *event,
                 const char *fmt, ...) {
  if (level > s->opts.log_level) return;
  char line[MS_LOG_LINE + 160];
  int head = json_head(line, sizeof line, level);
  int n = head + snprintf(line + head, sizeof line - (size_t)head,
                          ",\"message\":\"%s\"", event);
  va_list ap;
  va_start(ap, fmt);
  if ((size_t)n < sizeof line)
    n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  fwrite(line, 1, json_tail(line, sizeof line, n, head, s->module), stderr);
}

/* The peer's address of c as text at addr, or "-". */
static void peer_text(const struct ms_conn *c, char *addr, size_t size) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  const void *in = NULL;
  if (getpeername(c->io.fd, (struct sockaddr *)&ss, &len) == 0)
    in = ss.ss_family == AF_INET6
       ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
       : ss.ss_family == AF_INET
       ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr : NULL;
  if (!in || !inet_ntop(ss.ss_family, in, addr, (socklen_t)size))
    snprintf(addr, size, "-");
}

void ms_log_access(struct ms_conn *c, int status, size_t bytes) {
  struct ms_server *s = c->server;
  if (s->opts.log_level < MS_LOG_INFO) return;
  const struct http_request *req = s->answering;
  int json = s->opts.log_format == MS_LOG_JSON;
  enum ms_log_escape_mode mode = json ? MS_ESCAPE_JSON : MS_ESCAPE_FIELD;
  char addr[INET6_ADDRSTRLEN], method[40], target[MS_LOG_FIELD_MAX];
  peer_text(c, addr, sizeof addr);
  if (req) {
    ms_log_escape(method, sizeof method, req->method, req->method_len, mode);
    ms_log_escape(target, sizeof target, req->target, req->target_len, mode);
  } else {
    strcpy(method, "-");
    strcpy(target, "-");
  }
  double took = req ? ev_time() - s->answer_began : 0;
  if (json)
    ms_log_json(s, MS_LOG_INFO, "request", ",\"remote\":\"%s\","
                "\"method\":\"%s\",\"target\":\"%s\",\"status\":%d,"
                "\"bytes\":%zu,\"duration\":%.6f", addr, method, target,
                status, bytes, took);
  else
    ms_log(s, MS_LOG_INFO, "request %s %s %s %d %zu %.6fs", addr, method,
           target, status, bytes, took);
}

void ms_log_init(struct ms_module *m) {
  ev_init(&m->log.window, log_window_end);
}
