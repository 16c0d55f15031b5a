/* tap.h - what the C unit tests share: TAP output ("ok N - what") with
 * a count of the failures, and a pseudo-random sequence that is the
 * same on every run */
#ifndef SPEC_C_TAP_H
#define SPEC_C_TAP_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

struct run {
  int count, failed;
};

/* Prints one TAP line for a check that pass tells the outcome of. */
static inline void check(struct run *r, int pass, const char *fmt, ...) {
  va_list ap;
  printf("%s %d - ", pass ? "ok" : "not ok", ++r->count);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  if (!pass) r->failed++;
  fflush(stdout);
}

/* xorshift32: the same sequence on every run */
static inline uint32_t rnd(void) {
  static uint32_t state = 2463534242u;
  state ^= state << 13;
  state ^= state >> 17;
  state ^= state << 5;
  return state;
}

#endif
