/* log.c - the log: lines on stderr, what a peer sent escaped, repeated
 * errors and warnings counted rather than written */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "server.h"
#include "utf8.h"

/* How long an identical error or warning is counted rather than
 * written. */
#define LOG_WINDOW 10.0
#define LOG_CUT_MARK 32               /* room for "...(+N bytes)" */

/* Copy s[0..len) into out[0..size) for a log line, NUL-terminated, so
 * that what a peer sent can neither forge a line nor reach a terminal:
 * control characters (C0, DEL, C1) become \n, \r, \t or \xNN and a byte
 * that is not UTF-8 (RFC 3629) \xNN.  MS_ESCAPE_TEXT keeps newlines and
 * tabs (a traceback); MS_ESCAPE_FIELD escapes them, and a backslash and
 * a double quote too.  What does not fit is cut at a character and marked
 * "...(+N bytes)".  size must exceed LOG_CUT_MARK.  Returns out. */
char *ms_log_escape(char *out, size_t size, const char *s, size_t len,
                    enum ms_log_escape_mode mode) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t o = 0, i = 0, keep_o = 0, keep_i = 0;
  while (i < len) {
    unsigned b = p[i];
    char esc[4] = { '\\', 'x', hex[b >> 4], hex[b & 15] };
    const char *src = esc;
    size_t n = 4, used = 1;
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
      n = mode == MS_ESCAPE_FIELD ? 2 : 1;
      src = mode == MS_ESCAPE_FIELD ? esc : s + i;
    } else if (b >= 0x20 && b < 0x7f) {
      src = s + i;
      n = 1;
    } else if (b >= 0x80) {
      uint32_t st = utf8_validate(UTF8_ACCEPT, p + i, 1);
      while (st != UTF8_ACCEPT && st != UTF8_REJECT && i + used < len)
        st = utf8_validate(st, p + i + used++, 1);
      if (st == UTF8_ACCEPT && !(b == 0xc2 && p[i + 1] < 0xa0)) {
        src = s + i;                  /* a character, not C1 */
        n = used;
      } else {
        used = 1;
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

/* One line on stderr: "moonsocket: LEVEL message", and after a run of
 * repeats " (N similar lines suppressed)" (of its first line). */
static void log_write(int level, const char *msg, size_t len,
                      unsigned suppressed) {
  static const char *const names[] = { "", "error", "warn", "info",
                                       "debug" };
  /* one write per line: workers share the stream */
  char line[MS_LOG_LINE + 96];
  if (suppressed) len = strcspn(msg, "\n");
  int n = snprintf(line, sizeof line - 1, "moonsocket: %s %.*s",
                   names[level], (int)len, msg);
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
  if (r->suppressed) log_write(r->level, r->line, r->len, r->suppressed);
  r->suppressed = 0;
}

static void log_window_end(struct ev_loop *loop, ev_timer *w, int revents) {
  struct ms_module *m = (struct ms_module *)((char *)w -
                         offsetof(struct ms_module, log.window));
  (void)revents;
  ev_ref(loop);                        /* it stopped, unref'ed */
  ms_log_flush(m);
}

/* A line on stderr, when the server's log_level lets it through
 * (without a server, at info and above), escaped as text.  An error or
 * warning identical to the last one written, within LOG_WINDOW seconds
 * of it, is only counted; the count is written when the window ends,
 * before the next different error or warning, or at a shutdown. */
void ms_log(struct ms_server *s, int level, const char *fmt, ...) {
  if (level > (s ? s->opts.log_level : MS_LOG_INFO)) return;
  char raw[MS_LOG_LINE], msg[MS_LOG_LINE];
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(raw, sizeof raw, fmt, ap);
  va_end(ap);
  if (k < 0) return;
  size_t len = (size_t)k < sizeof raw ? (size_t)k : sizeof raw - 1;
  len = strlen(ms_log_escape(msg, sizeof msg, raw, len, MS_ESCAPE_TEXT));
  struct ms_module *m = s ? s->module : NULL;
  if (!m || level > MS_LOG_WARN) {
    log_write(level, msg, len, 0);
    return;
  }
  struct ms_log_repeat *r = &m->log;
  ev_tstamp now = ev_now(m->loop);
  if (r->level == level && r->len == len && now - r->since < LOG_WINDOW &&
      memcmp(r->line, msg, len) == 0) {
    if (r->suppressed++ == 0) {        /* the window's end writes it */
      ev_timer_set(&r->window, r->since + LOG_WINDOW - now, 0);
      ev_timer_start(m->loop, &r->window);
      ev_unref(m->loop);               /* it keeps no loop going */
    }
    return;
  }
  ms_log_flush(m);
  log_write(level, msg, len, 0);
  memcpy(r->line, msg, len);
  r->len = len;
  r->level = level;
  r->since = now;
}

void ms_log_init(struct ms_module *m) {
  ev_init(&m->log.window, log_window_end);
}
