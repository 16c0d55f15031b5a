/* handshake.c - validate a WebSocket upgrade and compute its accept key */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "handshake.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int is_base64_char(int c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int handshake_accept_key(const char *key, size_t len, char *accept) {
  /* 16 bytes encode to 22 base64 characters and "==" (section 4.1) */
  if (len != 24 || key[22] != '=' || key[23] != '=') return -1;
  for (int i = 0; i < 22; i++)
    if (!is_base64_char((unsigned char)key[i])) return -1;
  unsigned char decoded[18];
  if (EVP_DecodeBlock(decoded, (const unsigned char *)key, 24) != 18)
    return -1;
  unsigned char buf[24 + sizeof ws_guid - 1];
  memcpy(buf, key, 24);
  memcpy(buf + 24, ws_guid, sizeof ws_guid - 1);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(buf, sizeof buf, digest);
  EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);
  return 0;
}

/* Whether header h is named name (lower case, len bytes): lengths
 * first, which rule out most headers without a compare. */
static int named(const struct http_header *h, const char *name, size_t len) {
  return h->name_len == len && http_ieq(h->name, len, name);
}

/* The only value of header name (a literal), or NULL; *count tells how
 * many. */
#define find_header(req, name, count) \
  find_named(req, name, sizeof name - 1, count)
static const struct http_header *find_named(const struct http_request *req,
                                            const char *name, size_t len,
                                            int *count) {
  const struct http_header *found = NULL;
  *count = 0;
  for (size_t i = 0; i < req->nheaders; i++) {
    const struct http_header *h = &req->headers[i];
    if (named(h, name, len)) {
      if (!found) found = h;
      (*count)++;
    }
  }
  return found;
}

/* Whether a header name (a literal) lists token. */
#define has_token(req, name, token) \
  has_named_token(req, name, sizeof name - 1, token)
static int has_named_token(const struct http_request *req, const char *name,
                           size_t len, const char *token) {
  for (size_t i = 0; i < req->nheaders; i++) {
    const struct http_header *h = &req->headers[i];
    if (named(h, name, len) &&
        http_has_token(h->value, h->value_len, token))
      return 1;
  }
  return 0;
}

int handshake_wanted(const struct http_request *req) {
  return has_token(req, "upgrade", "websocket");
}

int handshake_check(const struct http_request *req, char *accept,
                    const char **why) {
  int n;
  if (!http_ieq(req->method, req->method_len, "GET")) {
    *why = "the method of an upgrade request must be GET";
    return 400;
  }
  if (req->minor_version < 1) {
    *why = "an upgrade request must be HTTP/1.1";
    return 400;
  }
  if (!find_header(req, "host", &n) || n != 1) {
    *why = "an upgrade request needs one Host header";
    return 400;
  }
  if (!handshake_wanted(req)) {
    *why = "missing 'Upgrade: websocket'";
    return 400;
  }
  if (!has_token(req, "connection", "upgrade")) {
    *why = "missing 'Connection: Upgrade'";
    return 400;
  }
  const struct http_header *v = find_header(req, "sec-websocket-version", &n);
  if (!v || n != 1 || v->value_len != 2 || memcmp(v->value, "13", 2) != 0) {
    *why = "unsupported Sec-WebSocket-Version (13 is supported)";
    return 426;
  }
  if (!accept) return 0;          /* RFC 8441 section 5: no key */
  const struct http_header *k = find_header(req, "sec-websocket-key", &n);
  if (!k || n != 1 ||
      handshake_accept_key(k->value, k->value_len, accept) != 0) {
    *why = "Sec-WebSocket-Key must be one base64 value of 16 bytes";
    return 400;
  }
  accept[WS_ACCEPT_LEN] = '\0';
  return 0;
}
