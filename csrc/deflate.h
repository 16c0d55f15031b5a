/* deflate.h - permessage-deflate (RFC 7692): negotiation and payloads */
#ifndef MS_DEFLATE_H
#define MS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

struct deflate_stream;   /* a z_stream and its heap count (deflate.c) */

/* The RSV bit a compressed message carries on its first frame (section
 * 6), in the encoding of struct frame_header's rsv: RSV1 is 4. */
#define DEFLATE_RSV 4u

/* Room for the longest response deflate_negotiate writes, NUL included. */
#define DEFLATE_RESPONSE_MAX 160

/* Results of the payload functions.  The close code each one earns is
 * deflate_close_code's answer. */
enum {
  DEFLATE_OK = 0,
  DEFLATE_TOO_BIG = -1,     /* the message outgrew max_size: 1009 */
  DEFLATE_BAD_DATA = -2,    /* not a valid DEFLATE payload: 1007 */
  DEFLATE_NO_MEMORY = -3,   /* malloc or zlib ran out of memory: 1011 */
  DEFLATE_BAD_PARAMS = -4   /* params zlib refuses (a caller bug): 1011 */
};

/* The server's options.  Check them once with deflate_config_check. */
struct deflate_config {
  int enabled;                     /* 0: decline every offer */
  int server_max_window_bits;      /* 15; 8..15, and 8 acts as 9 */
  int client_max_window_bits;      /* 15; 8..15, asked of clients */
  int server_no_context_takeover;  /* 0 */
  int client_no_context_takeover;  /* 0 */
  int mem_level;                   /* 8; zlib memLevel 1..9 */
  int level;                       /* -1 (zlib's default, 6); -1..9 */
  size_t threshold;                /* 1024; smaller messages go plain */
};

#define DEFLATE_CONFIG_DEFAULT { 0, 15, 15, 0, 0, 8, -1, 1024 }

/* What one connection negotiated; deflate_negotiate fills it. */
struct deflate_params {
  uint8_t server_max_window_bits;      /* our LZ77 window, 9..15 */
  uint8_t client_max_window_bits;      /* the client's, 8..15 */
  uint8_t server_no_context_takeover;  /* reset after each sent message */
  uint8_t client_no_context_takeover;  /* reset after each received one */
  int8_t level;
  uint8_t mem_level;
  size_t threshold;
};

/* Per-connection compression state.  All zeros is a valid idle state;
 * a direction's stream exists only while it holds context.  The struct
 * may be moved: nothing points back into it. */
struct deflate_state {
  struct deflate_stream *compress;    /* server -> client, or NULL */
  struct deflate_stream *decompress;  /* client -> server, or NULL */
  uint8_t got_input;  /* the incoming message has had payload bytes */
  uint8_t ended;      /* it held a final (BFINAL) block: skip the rest */
};

/* A growable output buffer; functions append after len and realloc
 * data as they need.  Start it as all zeros. */
struct deflate_buf {
  uint8_t *data;
  size_t len, cap;
};

/* Returns 0 when every field is in range, else -1 with *why naming the
 * field and its accepted range. */
int deflate_config_check(const struct deflate_config *cfg, const char **why);

/* Section 5 and 7.1: choose the first acceptable permessage-deflate
 * offer in the Sec-WebSocket-Extensions value[0..len) (repeated headers
 * joined with ", ").  Offers that are malformed, or whose parameters are
 * unknown, repeated or out of range, are declined one by one; the
 * handshake never fails here.  Returns 1 and fills *out and response (a
 * NUL-terminated header value) when one is accepted, 0 when none is, -1
 * when response_size is below DEFLATE_RESPONSE_MAX. */
int deflate_negotiate(const char *value, size_t len,
                      const struct deflate_config *cfg,
                      struct deflate_params *out,
                      char *response, size_t response_size);

/* The offer a client sends (section 5): it lets the server limit our
 * window (7.1.2.2). */
#define DEFLATE_CLIENT_OFFER "permessage-deflate; client_max_window_bits"

/* The client's side of section 7.1: check the server's response
 * value[0..len) to DEFLATE_CLIENT_OFFER.  Returns 1 and fills *out, in
 * which "server" names our sending direction and "client" our
 * receiving one, or 0 when the response is not acceptable and the
 * connection must fail. */
int deflate_accept_response(const char *value, size_t len,
                            const struct deflate_config *cfg,
                            struct deflate_params *out);

/* Whether a message of len bytes is worth compressing. */
int deflate_should_compress(const struct deflate_params *params, size_t len);

/* Section 7.2.1: compress one whole message, appending the payload (the
 * trailing 00 00 ff ff removed) to out.  Send it with RSV1 set on the
 * first frame.  Returns DEFLATE_OK, DEFLATE_NO_MEMORY or
 * DEFLATE_BAD_PARAMS; out->len is unchanged on failure. */
int deflate_compress(struct deflate_state *st,
                     const struct deflate_params *params,
                     const uint8_t *in, size_t n, struct deflate_buf *out);

/* Section 7.2.2: feed the unmasked payload of each frame of a message
 * that arrived with RSV1 set, in order; last is 1 with the final frame
 * (n may be 0).  Decompressed bytes are appended to out, whose len and
 * cap never pass max_size (so start each message with out->len 0): the
 * call that would pass it returns DEFLATE_TOO_BIG.  On any error the
 * message's stream is dropped and the connection must be failed. */
int deflate_inflate_chunk(struct deflate_state *st,
                          const struct deflate_params *params,
                          const uint8_t *in, size_t n, int last,
                          size_t max_size, struct deflate_buf *out);

/* The close code (RFC 6455 section 7.4.1) for a payload error. */
int deflate_close_code(int err);

/* Bytes of heap the state holds now (zlib's streams and their structs). */
size_t deflate_state_memory(const struct deflate_state *st);

/* Free both streams; the state is idle again.  Idempotent. */
void deflate_state_free(struct deflate_state *st);

/* Free a buffer's data; it is empty again.  Idempotent. */
void deflate_buf_free(struct deflate_buf *buf);

#endif
