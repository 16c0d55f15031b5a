/* utf8.c - incremental UTF-8 validation as a byte-class state machine */
#include <string.h>

#include "utf8.h"

/* Byte classes.  Each class is a set of bytes that every state treats
 * alike (RFC 3629 section 4, the UTF8-octets grammar). */
enum {
  C_ASCII, C_80_8F, C_90_9F, C_A0_BF, C_C2_DF, C_E0, C_E1_EF, C_ED,
  C_F0, C_F1_F3, C_F4, C_BAD, NCLASS
};

/* States: ACCEPT and REJECT, then "n continuation bytes to go" and the
 * four lead bytes whose second byte has a narrower range. */
enum { S_ACC, S_REJ, S_C1, S_C2, S_C3, S_E0, S_ED, S_F0, S_F4, NSTATE };

static const uint8_t byte_class[256] = {
#define R16(c) c,c,c,c,c,c,c,c,c,c,c,c,c,c,c,c
  R16(C_ASCII), R16(C_ASCII), R16(C_ASCII), R16(C_ASCII),
  R16(C_ASCII), R16(C_ASCII), R16(C_ASCII), R16(C_ASCII),
  R16(C_80_8F), R16(C_90_9F), R16(C_A0_BF), R16(C_A0_BF),
  C_BAD, C_BAD, C_C2_DF, C_C2_DF, C_C2_DF, C_C2_DF, C_C2_DF, C_C2_DF,
  C_C2_DF, C_C2_DF, C_C2_DF, C_C2_DF, C_C2_DF, C_C2_DF, C_C2_DF, C_C2_DF,
  R16(C_C2_DF),
  C_E0, C_E1_EF, C_E1_EF, C_E1_EF, C_E1_EF, C_E1_EF, C_E1_EF, C_E1_EF,
  C_E1_EF, C_E1_EF, C_E1_EF, C_E1_EF, C_E1_EF, C_ED, C_E1_EF, C_E1_EF,
  C_F0, C_F1_F3, C_F1_F3, C_F1_F3, C_F4, C_BAD, C_BAD, C_BAD,
  C_BAD, C_BAD, C_BAD, C_BAD, C_BAD, C_BAD, C_BAD, C_BAD,
#undef R16
};

#define REJ12 S_REJ,S_REJ,S_REJ,S_REJ,S_REJ,S_REJ,S_REJ,S_REJ,S_REJ,S_REJ, \
              S_REJ,S_REJ

static const uint8_t transition[NSTATE][NCLASS] = {
  /*          ASCII  80-8F  90-9F  A0-BF  C2-DF  E0     E1-EF  ED
   *          F0     F1-F3  F4     bad */
  [S_ACC] = { S_ACC, S_REJ, S_REJ, S_REJ, S_C1,  S_E0,  S_C2,  S_ED,
              S_F0,  S_C3,  S_F4,  S_REJ },
  [S_REJ] = { REJ12 },
  [S_C1]  = { S_REJ, S_ACC, S_ACC, S_ACC, S_REJ, S_REJ, S_REJ, S_REJ,
              S_REJ, S_REJ, S_REJ, S_REJ },
  [S_C2]  = { S_REJ, S_C1,  S_C1,  S_C1,  S_REJ, S_REJ, S_REJ, S_REJ,
              S_REJ, S_REJ, S_REJ, S_REJ },
  [S_C3]  = { S_REJ, S_C2,  S_C2,  S_C2,  S_REJ, S_REJ, S_REJ, S_REJ,
              S_REJ, S_REJ, S_REJ, S_REJ },
  [S_E0]  = { S_REJ, S_REJ, S_REJ, S_C1,  S_REJ, S_REJ, S_REJ, S_REJ,
              S_REJ, S_REJ, S_REJ, S_REJ },  /* no overlong forms */
  [S_ED]  = { S_REJ, S_C1,  S_C1,  S_REJ, S_REJ, S_REJ, S_REJ, S_REJ,
              S_REJ, S_REJ, S_REJ, S_REJ },  /* no surrogates */
  [S_F0]  = { S_REJ, S_REJ, S_C2,  S_C2,  S_REJ, S_REJ, S_REJ, S_REJ,
              S_REJ, S_REJ, S_REJ, S_REJ },  /* no overlong forms */
  [S_F4]  = { S_REJ, S_C2,  S_REJ, S_REJ, S_REJ, S_REJ, S_REJ, S_REJ,
              S_REJ, S_REJ, S_REJ, S_REJ },  /* nothing above U+10FFFF */
};

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define ASCII_AVX2 128          /* from this many bytes, where there */

/* The bytes of p[0..n) that are ASCII in whole 128-byte blocks from the
 * start, for a CPU with AVX2: four 32-byte loads OR'ed and one test per
 * block, where the word loop below takes sixteen. */
__attribute__((target("avx2")))
static size_t ascii_avx2(const uint8_t *p, size_t n) {
  const __m256i high = _mm256_set1_epi8((char)0x80);
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    __m256i a = _mm256_loadu_si256((const __m256i *)(p + i));
    __m256i b = _mm256_loadu_si256((const __m256i *)(p + i + 32));
    __m256i c = _mm256_loadu_si256((const __m256i *)(p + i + 64));
    __m256i d = _mm256_loadu_si256((const __m256i *)(p + i + 96));
    __m256i any = _mm256_or_si256(_mm256_or_si256(a, b),
                                  _mm256_or_si256(c, d));
    if (!_mm256_testz_si256(any, high)) break;
  }
  return i;
}
#endif

uint32_t utf8_validate(uint32_t state, const uint8_t *p, size_t n) {
  const uint8_t *end = p + n;
  while (p < end) {
    if (state == S_ACC) {
#ifdef ASCII_AVX2
      if (end - p >= ASCII_AVX2 && __builtin_cpu_supports("avx2"))
        p += ascii_avx2(p, (size_t)(end - p));
#endif
      /* ASCII runs are the common case: skip them a word at a time,
       * and once in a run 32 bytes at a time */
      while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        if (w & 0x8080808080808080ull) break;
        p += 8;
        while (end - p >= 32) {
          uint64_t v[4];
          memcpy(v, p, 32);
          if ((v[0] | v[1] | v[2] | v[3]) & 0x8080808080808080ull) break;
          p += 32;
        }
      }
      if (p == end) break;
    } else if (state == S_REJ) {
      break;
    }
    state = transition[state][byte_class[*p++]];
  }
  return state;
}
