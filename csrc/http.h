/* http.h - HTTP/1.1 request and response head parser (RFC 7230 section 3): no
 * allocation, no I/O; the caller keeps the bytes and calls again with
 * more of them until the head is complete. */
#ifndef MS_HTTP_H
#define MS_HTTP_H

#include <stddef.h>

struct http_header {
  const char *name, *value;
  size_t name_len, value_len;
};

struct http_limits {
  size_t max_head;       /* whole head, request line included -> 431 */
  size_t max_line;       /* request line -> 414 */
  size_t max_headers;    /* header fields -> 431 */
};

struct http_request {
  const char *method, *target;
  size_t method_len, target_len;
  const char *path, *authority;    /* the target's path and query, and */
  size_t path_len, authority_len;  /* its authority: see below */
  int minor_version;               /* HTTP/1.x */
  size_t nheaders;
  struct http_header *headers;     /* caller's array of max_headers */
  size_t head_len;                 /* the whole head, from method on */
};

/* The target in origin-form ("/path?query") is its own path, and has no
 * authority (NULL).  In absolute-form ("http://host:port/path?query",
 * RFC 9112 section 3.2.2) authority is "host:port" and path the rest
 * ("/path?query"), which may be empty or start with '?': the path "/".
 * An absolute-form target without a host or with userinfo is a 400.
 * Other targets ("*") are their own path too. */

/* Parse the head at p[0..n).  Returns the head's size (request line,
 * headers and the empty line) when complete, 0 when incomplete, or the
 * negated HTTP status to answer with (-400, -414, -431, -505).
 * scanned is how many bytes an earlier call already saw (0 at first):
 * the search for the empty line resumes from there. */
long http_parse_request(const char *p, size_t n, size_t scanned,
                        const struct http_limits *limits,
                        struct http_request *req);

/* The same for a response head (a client's view): the status line
 * "HTTP/1.x NNN reason", then the header fields, which fill req (method
 * and target NULL); *status is the status code.  Returns the head's
 * size, 0 when incomplete, -431 or -400. */
long http_parse_response(const char *p, size_t n,
                         const struct http_limits *limits,
                         struct http_request *req, int *status);

/* Case-insensitive ASCII comparison of a[0..n) and the string b. */
int http_ieq(const char *a, size_t n, const char *b);

/* Whether p[0..n) is a token (RFC 9110 section 5.6.2): a field name. */
int http_is_token(const char *p, size_t n);

/* Whether p[0..n) may be a field value (RFC 9110 section 5.5): no
 * control character but HTAB, no DEL; obs-text passes. */
int http_is_field_value(const char *p, size_t n);

/* Whether the comma-separated list v[0..n) holds the token (RFC 7230
 * section 7), compared case-insensitively. */
int http_has_token(const char *v, size_t n, const char *token);

#endif
