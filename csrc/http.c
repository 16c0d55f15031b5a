/* http.c - HTTP/1.1 request head parser */
#include <string.h>

#include "http.h"

/* tchar, RFC 7230 section 3.2.6 */
static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
      (c >= '0' && c <= '9'))
    return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-content: VCHAR, obs-text, SP and HTAB; never CR, LF or NUL */
static int is_field_char(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7F);
}

static int to_lower(int c) {
  return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

int http_ieq(const char *a, size_t n, const char *b) {
  size_t i = 0;
  for (; i < n; i++)
    if (!b[i] || to_lower((unsigned char)a[i]) != to_lower((unsigned char)b[i]))
      return 0;
  return b[i] == '\0';
}

int http_is_token(const char *p, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_tchar((unsigned char)p[i])) return 0;
  return 1;
}

int http_is_field_value(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!is_field_char((unsigned char)p[i])) return 0;
  return 1;
}

int http_has_token(const char *v, size_t n, const char *token) {
  size_t i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t start = i;
    while (i < n && v[i] != ',') i++;
    size_t end = i;
    while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t')) end--;
    if (end > start && http_ieq(v + start, end - start, token)) return 1;
  }
  return 0;
}

/* Find CRLF CRLF at or after from; returns the offset after it or 0. */
static size_t find_head_end(const char *p, size_t n, size_t from) {
  for (size_t i = from; i + 3 < n; i++) {
    const char *q = memchr(p + i, '\r', n - i - 3);
    if (!q) return 0;
    i = (size_t)(q - p);
    if (q[1] == '\n' && q[2] == '\r' && q[3] == '\n') return i + 4;
  }
  return 0;
}

/* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), RFC 3986 3.1 */
static int is_scheme_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
}

/* Split the target into authority and path (see http.h); -400 for an
 * absolute-form without a host (RFC 9110 section 4.2.1) or with
 * userinfo (section 4.2.4). */
static long split_target(struct http_request *req) {
  const char *t = req->target, *end = t + req->target_len, *q = t;
  req->path = t;
  req->path_len = req->target_len;
  req->authority = NULL;
  req->authority_len = 0;
  if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z'))) return 0;
  while (q < end && is_scheme_char((unsigned char)*q)) q++;
  if (end - q < 3 || memcmp(q, "://", 3) != 0) return 0;
  const char *a = q + 3, *ae = a;
  while (ae < end && *ae != '/' && *ae != '?') ae++;
  if (ae == a || *a == ':' || memchr(a, '@', (size_t)(ae - a)))
    return -400;
  req->authority = a;
  req->authority_len = (size_t)(ae - a);
  req->path = ae;
  req->path_len = (size_t)(end - ae);
  return 0;
}

static long parse_request_line(const char *p, const char *eol,
                               struct http_request *req) {
  const char *q = p;
  while (q < eol && is_tchar((unsigned char)*q)) q++;
  if (q == p || q == eol || *q != ' ') return -400;
  req->method = p;
  req->method_len = (size_t)(q - p);
  const char *t = ++q;
  while (q < eol && (unsigned char)*q > 0x20 && *q != 0x7F) q++;
  if (q == t || q == eol || *q != ' ') return -400;
  req->target = t;
  req->target_len = (size_t)(q - t);
  q++;
  if (eol - q != 8 || memcmp(q, "HTTP/", 5) != 0 ||
      q[5] < '0' || q[5] > '9' || q[6] != '.' || q[7] < '0' || q[7] > '9')
    return -400;
  if (q[5] != '1') return -505;
  req->minor_version = q[7] - '0';
  return split_target(req);
}

/* The header fields from line up to end (the empty line's CRLF). */
static long parse_fields(const char *line, const char *end,
                         const struct http_limits *limits,
                         struct http_request *req) {
  req->nheaders = 0;
  while (line < end) {
    const char *q = line;
    while (is_tchar((unsigned char)*q)) q++;
    /* no empty names, no space before the colon, no obs-fold (3.2.4) */
    if (q == line || *q != ':') return -400;
    if (req->nheaders == limits->max_headers) return -431;
    struct http_header *h = &req->headers[req->nheaders++];
    h->name = line;
    h->name_len = (size_t)(q - line);
    q++;
    while (*q == ' ' || *q == '\t') q++;
    const char *v = q;
    while (is_field_char((unsigned char)*q)) q++;
    if (q[0] != '\r' || q[1] != '\n') return -400;
    const char *ve = q;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    h->value = v;
    h->value_len = (size_t)(ve - v);
    line = q + 2;
  }
  return 0;
}

/* The request line's length: the bytes before its CR or LF, or all of
 * p[0..n) while neither has come. */
static size_t request_line_len(const char *p, size_t n) {
  size_t i = 0;
  while (i < n && p[i] != '\r' && p[i] != '\n') i++;
  return i;
}

long http_parse_request(const char *p, size_t n, size_t scanned,
                        const struct http_limits *limits,
                        struct http_request *req) {
  size_t from = scanned > 3 ? scanned - 3 : 0;
  size_t head = find_head_end(p, n, from);
  size_t seen = n < limits->max_line + 1 ? n : limits->max_line + 1;
  if (request_line_len(p, seen) > limits->max_line) return -414;
  if (!head) return n > limits->max_head ? -431 : 0;
  if (head > limits->max_head) return -431;
  const char *end = p + head - 2;    /* at the CRLF of the empty line */
  const char *eol = memchr(p, '\r', head);
  if (eol[1] != '\n') return -400;
  long r = parse_request_line(p, eol, req);
  if (r) return r;
  r = parse_fields(eol + 2, end, limits, req);
  if (r) return r;
  req->head_len = head;
  return (long)head;
}

long http_parse_response(const char *p, size_t n,
                         const struct http_limits *limits,
                         struct http_request *req, int *status) {
  size_t head = find_head_end(p, n, 0);
  if (!head) return n > limits->max_head ? -431 : 0;
  if (head > limits->max_head) return -431;
  const char *eol = memchr(p, '\r', head);
  if (eol[1] != '\n') return -400;
  /* status-line = HTTP-version SP status-code SP reason-phrase (3.1.2) */
  if (eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' ||
      p[7] > '9' || p[8] != ' ' || (eol - p > 12 && p[12] != ' '))
    return -400;
  int code = 0;
  for (int i = 9; i < 12; i++) {
    if (p[i] < '0' || p[i] > '9') return -400;
    code = code * 10 + (p[i] - '0');
  }
  req->method = req->target = req->path = req->authority = NULL;
  req->method_len = req->target_len = req->path_len = 0;
  req->authority_len = 0;
  req->minor_version = p[7] - '0';
  long r = parse_fields(eol + 2, p + head - 2, limits, req);
  if (r) return r;
  *status = code;
  req->head_len = head;
  return (long)head;
}
