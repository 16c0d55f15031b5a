/* pmd.h - permessage-deflate (RFC 7692) from the client's side: the
 * offer, the server's answer, and one connection's two zlib streams */
#ifndef BENCH_PMD_H
#define BENCH_PMD_H

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

/* Section 7.1.2.2: we may be told a smaller window than 15 bits. */
#define PMD_OFFER "permessage-deflate; client_max_window_bits"

/* RSV1 in a frame's first byte: the message is compressed (section 6) */
#define PMD_RSV1 0x40

/* What the server's Sec-WebSocket-Extensions answer settled. */
struct pmd_params {
  uint8_t server_no_context_takeover;  /* reset the inflater per message */
  uint8_t client_no_context_takeover;  /* reset the compressor per message */
  uint8_t server_max_window_bits;      /* 15 unless the server said less */
  uint8_t client_max_window_bits;      /* 15 unless the server said less */
};

/* Section 7.1: NULL when value[0..len) accepts our offer (*out filled),
 * else what is wrong with it. */
const char *pmd_parse_response(const char *value, size_t len,
                               struct pmd_params *out);

/* One connection's streams, each made on first use.  With context
 * takeover they keep their window from message to message. */
struct pmd {
  struct pmd_params params;
  int level;                    /* zlib level of the compressor */
  uint8_t out_ready, in_ready;  /* deflateInit2 / inflateInit2 done */
  z_stream out, in;
};

/* NULL when out of memory. */
struct pmd *pmd_new(const struct pmd_params *params, int level);
void pmd_free(struct pmd *z);

/* Section 7.2.1: compress a whole message into *buf (grown as needed,
 * *cap its size) without the trailing 00 00 ff ff.  Returns the payload
 * length, or -1 when zlib fails. */
long pmd_compress(struct pmd *z, const uint8_t *in, size_t n,
                  uint8_t **buf, size_t *cap);

/* Each piece of inflated output goes to a sink; a nonzero return stops
 * the inflating and is returned. */
typedef int (*pmd_sink)(void *arg, const uint8_t *p, size_t n);

/* Section 7.2.2: inflate the next in[0..n) of a compressed message
 * through scratch, handing the output to sink; last ends the message
 * (the removed 00 00 ff ff goes in again).  Returns 0, the sink's
 * nonzero answer, or -1 with *why set when the data is not DEFLATE as
 * the extension allows. */
int pmd_inflate(struct pmd *z, const uint8_t *in, size_t n, int last,
                uint8_t *scratch, size_t scratch_size, pmd_sink sink,
                void *arg, const char **why);

#endif
