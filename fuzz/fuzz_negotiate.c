/* fuzz_negotiate.c - deflate_negotiate on random Sec-WebSocket-Extensions
 * values under random configurations.  The response must be a NUL-
 * terminated string inside its buffer, and an accepted response, offered
 * back as it is, must be accepted again with the same parameters and the
 * same response: every parameter the server answers with is one a
 * client may offer (RFC 7692 section 7.1), and settling an offer is
 * idempotent, so a truncated or malformed response shows up here.
 * Input: two configuration bytes, then the header value. */
#include "deflate.h"
#include "fuzz.h"

/* Byte 0: server_max_window_bits 8 + bits 0-2, client_max_window_bits
 * 8 + bits 3-5, bit 6 server_no_context_takeover, bit 7 the client's.
 * Byte 1: bit 0 turns compression off. */
static struct deflate_config config_from(const uint8_t *p) {
  struct deflate_config cfg = DEFLATE_CONFIG_DEFAULT;
  cfg.enabled = !(p[1] & 1);
  cfg.server_max_window_bits = 8 + (p[0] & 7);
  cfg.client_max_window_bits = 8 + (p[0] >> 3 & 7);
  cfg.server_no_context_takeover = p[0] >> 6 & 1;
  cfg.client_no_context_takeover = p[0] >> 7 & 1;
  return cfg;
}

static int same_params(const struct deflate_params *a,
                       const struct deflate_params *b) {
  return a->server_max_window_bits == b->server_max_window_bits &&
         a->client_max_window_bits == b->client_max_window_bits &&
         a->server_no_context_takeover == b->server_no_context_takeover &&
         a->client_no_context_takeover == b->client_no_context_takeover &&
         a->level == b->level && a->mem_level == b->mem_level &&
         a->threshold == b->threshold;
}

/* Negotiate value[0..len) from an exact-size copy into an exact-size,
 * poisoned response buffer, and check what any answer must be. */
static int negotiate(const char *value, size_t len,
                     const struct deflate_config *cfg,
                     struct deflate_params *params, char *response) {
  char *v = (char *)fuzz_copy(value, len);
  char *out = malloc(DEFLATE_RESPONSE_MAX);
  if (!out) abort();
  memset(out, 0xA5, DEFLATE_RESPONSE_MAX);
  int r = deflate_negotiate(v, len, cfg, params, out, DEFLATE_RESPONSE_MAX);
  FUZZ_CHECK(r == 0 || r == 1, "deflate_negotiate returned %d", r);
  FUZZ_CHECK(memchr(out, '\0', DEFLATE_RESPONSE_MAX) != NULL,
             "the response is not NUL-terminated within its buffer");
  FUZZ_CHECK(r == 1 || out[0] == '\0', "declined, with a response \"%s\"",
             out);
  FUZZ_CHECK(r == 0 || cfg->enabled, "accepted while disabled");
  memcpy(response, out, DEFLATE_RESPONSE_MAX);
  free(out);
  free(v);
  return r;
}

/* The parameters are in range and within what the server allows. */
static void check_params(const struct deflate_params *p,
                         const struct deflate_config *cfg) {
  int server_cap = cfg->server_max_window_bits < 9
                   ? 9 : cfg->server_max_window_bits;
  FUZZ_CHECK(p->server_max_window_bits >= 9 &&
             p->server_max_window_bits <= server_cap,
             "server_max_window_bits %d", p->server_max_window_bits);
  FUZZ_CHECK(p->client_max_window_bits >= 8 &&
             p->client_max_window_bits <= 15,
             "client_max_window_bits %d", p->client_max_window_bits);
  FUZZ_CHECK(p->server_no_context_takeover >= cfg->server_no_context_takeover
             && p->client_no_context_takeover >=
             cfg->client_no_context_takeover, "a takeover setting is lost");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  struct deflate_config cfg = config_from(data);
  const char *why;
  FUZZ_CHECK(deflate_config_check(&cfg, &why) == 0, "config: %s", why);
  const char *value = (const char *)data + 2;
  size_t len = size - 2;

  struct deflate_params params, again;
  char response[DEFLATE_RESPONSE_MAX], response2[DEFLATE_RESPONSE_MAX];
  int r = negotiate(value, len, &cfg, &params, response);
  if (r == 1) {
    check_params(&params, &cfg);
    FUZZ_CHECK(strncmp(response, "permessage-deflate", 18) == 0,
               "response \"%s\"", response);
    int r2 = negotiate(response, strlen(response), &cfg, &again, response2);
    FUZZ_CHECK(r2 == 1, "the response \"%s\", offered back, is declined",
               response);
    FUZZ_CHECK(same_params(&params, &again) &&
               strcmp(response, response2) == 0,
               "the response \"%s\", offered back, is answered \"%s\"",
               response, response2);
  }

  /* a buffer below DEFLATE_RESPONSE_MAX is refused, and left alone */
  char *small = malloc(DEFLATE_RESPONSE_MAX - 1);
  if (!small) abort();
  memset(small, 0x5A, DEFLATE_RESPONSE_MAX - 1);
  FUZZ_CHECK(deflate_negotiate(value, len, &cfg, &again, small,
                               DEFLATE_RESPONSE_MAX - 1) == -1,
             "a %d-byte response buffer is taken", DEFLATE_RESPONSE_MAX - 1);
  FUZZ_CHECK(small[0] == 0x5A, "a refused buffer is written");
  free(small);
  return 0;
}
