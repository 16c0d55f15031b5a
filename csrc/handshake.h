/* handshake.h - the server's side of the opening handshake, RFC 6455
 * section 4.2 */
#ifndef MS_HANDSHAKE_H
#define MS_HANDSHAKE_H

#include <stddef.h>

#include "http.h"

#define WS_ACCEPT_LEN 28   /* base64 of a SHA-1 digest */

/* Whether the request asks for a WebSocket (an Upgrade header whose
 * token list holds "websocket"). */
int handshake_wanted(const struct http_request *req);

/* Check an upgrade request against section 4.2.1.  Returns 0 and fills
 * accept (WS_ACCEPT_LEN chars and a NUL) when it is valid, else the HTTP
 * status to answer with: 400, or 426 for a version other than 13.  *why
 * names the failed rule.  With accept NULL (an extended CONNECT over
 * HTTP/2, RFC 8441 section 5) Sec-WebSocket-Key is not asked for. */
int handshake_check(const struct http_request *req, char *accept,
                    const char **why);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (section 4.2.2 step 5.4).
 * Returns 0, or -1 when the key does not decode to 16 bytes. */
int handshake_accept_key(const char *key, size_t len, char *accept);

#endif
