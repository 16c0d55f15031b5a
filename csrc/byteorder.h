/* byteorder.h - integers in big-endian (network) byte order, for what
 * crosses machines: nodes of any endianness read the same bytes */
#ifndef MS_BYTEORDER_H
#define MS_BYTEORDER_H

#include <stdint.h>

static inline void ms_put_be32(void *to, uint32_t v) {
  unsigned char *p = to;
  for (int i = 3; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

static inline void ms_put_be64(void *to, uint64_t v) {
  unsigned char *p = to;
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

static inline uint32_t ms_get_be32(const void *from) {
  const unsigned char *p = from;
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v = v << 8 | p[i];
  return v;
}

static inline uint64_t ms_get_be64(const void *from) {
  const unsigned char *p = from;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

#endif
