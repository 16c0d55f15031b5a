/* log.h - the log: lines on stderr, what a peer sent escaped, repeated
 * errors and warnings counted rather than written */
#ifndef MS_LOG_H
#define MS_LOG_H

#include <stddef.h>

#include <ev.h>

struct ms_module;
struct ms_server;

enum ms_log_level {
  MS_LOG_OFF, MS_LOG_ERROR, MS_LOG_WARN, MS_LOG_INFO, MS_LOG_DEBUG
};

/* log_format: "moonsocket: LEVEL message" lines, or a JSON object per
 * line. */
enum ms_log_format { MS_LOG_TEXT, MS_LOG_JSON };

/* The last error or warning written, and how many identical ones came
 * within a window after it and were only counted (in ms_module). */
#define MS_LOG_LINE 1024        /* a line's message, at most */
struct ms_log_repeat {
  ev_timer window;              /* its end writes the count */
  ev_tstamp since;              /* when the line was written */
  unsigned suppressed;
  int level;
  int format;                   /* enum ms_log_format */
  size_t len;
  char line[MS_LOG_LINE];       /* the message, escaped */
};

/* The room for an escaped peer-supplied field of a log line, with its
 * NUL. */
#define MS_LOG_FIELD_MAX 256

/* MS_ESCAPE_TEXT keeps newlines and tabs (a traceback); MS_ESCAPE_FIELD
 * escapes them, and a backslash and a double quote too; MS_ESCAPE_JSON
 * makes the inside of a JSON string (RFC 8259 section 7). */
enum ms_log_escape_mode { MS_ESCAPE_TEXT, MS_ESCAPE_FIELD, MS_ESCAPE_JSON };

/* Copy s[0..len) into out[0..size) for a log line, escaped, cut to fit;
 * size must exceed 32.  Returns out. */
char *ms_log_escape(char *out, size_t size, const char *s, size_t len,
                    enum ms_log_escape_mode mode);

/* A line on stderr, when the server's log_level lets it through
 * (without a server, at info and above), in its log_format. */
void ms_log(struct ms_server *s, int level, const char *fmt, ...);
/* A line of no server, at info and above, in the log_format of m's
 * first server (m may be NULL: text). */
void ms_log_module(struct ms_module *m, int level, const char *fmt, ...);
/* An event of s's log_format "json" at level: a JSON object with time,
 * level, "message": event, then the fields fmt makes (",\"key\":..."),
 * which the caller escaped (MS_ESCAPE_JSON). */
void ms_log_json(struct ms_server *s, int level, const char *event,
                 const char *fmt, ...);

struct ms_conn;
/* The access log's line of an answer (access_log): the request's method
 * and target when its head is known (s->answering), the status, the
 * body's bytes, the time since the head came, the peer's address. */
void ms_log_access(struct ms_conn *c, int status, size_t bytes);

/* Ready m's count of repeats (before the first line). */
void ms_log_init(struct ms_module *m);
/* Write the count of the repeats of the last line, if any. */
void ms_log_flush(struct ms_module *m);

#endif
