/* alloc_test.c - TAP tests for csrc/alloc.c, the runner's Lua
 * allocator: blocks always have room for what was asked, contents
 * survive growing and shrinking, blocks malloc made before are taken,
 * the free lists stay within their bound and are given back */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "tap.h"

#define SLOTS 600
#define STEPS 200000

static int filled(const uint8_t *p, size_t n, uint8_t b) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != b) return 0;
  return 1;
}

/* Sizes mostly small (Lua's strings, tables, closures), some past the
 * classes. */
static size_t some_size(void) {
  uint32_t x = rnd();
  return x % 8 ? 1 + x % 200 : 1 + x % 3000;
}

static void test_workload(struct run *r) {
  struct ms_lua_pool pool = { 0 };
  uint8_t *slot[SLOTS] = { 0 };
  size_t size[SLOTS] = { 0 };
  int room = 1, kept = 1, intact = 1;
  for (int i = 0; i < SLOTS / 2; i++) {     /* malloc's, of any size */
    size[i] = 1 + rnd() % 100;
    slot[i] = malloc(size[i]);
    memset(slot[i], i & 0xff, size[i]);
  }
  for (long step = 0; step < STEPS; step++) {
    int i = (int)(rnd() % SLOTS);
    uint8_t b = (uint8_t)i;
    if (slot[i]) intact &= filled(slot[i], size[i], b);
    size_t n = rnd() % 4 ? some_size() : 0;
    void *p = ms_lua_alloc(&pool, slot[i], slot[i] ? size[i] : 4, n);
    if (n == 0) {
      room &= p == NULL;
      slot[i] = NULL;
      size[i] = 0;
    } else {
      room &= p && malloc_usable_size(p) >= n;
      if (slot[i]) intact &= filled(p, n < size[i] ? n : size[i], b);
      memset(p, b, n);
      slot[i] = p;
      size[i] = n;
    }
    kept &= pool.kept <= MS_ALLOC_KEEP;
  }
  for (int i = 0; i < SLOTS; i++)
    if (slot[i]) ms_lua_alloc(&pool, slot[i], size[i], 0);
  kept &= pool.kept <= MS_ALLOC_KEEP;
  check(r, room, "every block has room for the bytes asked");
  check(r, intact, "contents survive growing, shrinking and reuse");
  check(r, kept, "the free lists hold at most %d bytes", MS_ALLOC_KEEP);
  size_t listed = 0;
  for (int c = 0; c < MS_ALLOC_CLASSES; c++)
    for (void **p = pool.free[c]; p; p = *p) listed += (size_t)c * 16;
  check(r, listed == pool.kept, "kept counts the blocks listed (%zu)",
        listed);
  ms_lua_alloc_release(&pool);
  int empty = pool.kept == 0;
  for (int c = 0; c < MS_ALLOC_CLASSES; c++) empty &= !pool.free[c];
  check(r, empty, "release gives every kept block back");
}

/* A new block takes no larger a chunk than malloc(n) would: asking
 * malloc for a multiple of 16 would take 16 bytes more for half the
 * sizes. */
static void test_tight(struct run *r) {
#if defined(__SANITIZE_ADDRESS__)
  /* AddressSanitizer's usable size is the size asked: nothing to see */
  r->count++;
  printf("ok %d # skip under AddressSanitizer\n", r->count);
  return;
#endif
  enum { N = MS_ALLOC_MAX - 23 };     /* the sizes of the classes */
  static void *p[N + 1], *q[N + 1];
  struct ms_lua_pool pool = { 0 };
  size_t worst = 0;
  /* all kept until the end: each is carved from the top of the heap,
   * none is a free chunk reused (which may be larger than asked) */
  for (size_t n = 1; n <= N; n++) {
    p[n] = ms_lua_alloc(&pool, NULL, 0, n);
    q[n] = malloc(n);
  }
  for (size_t n = 1; n <= N; n++) {
    size_t up = malloc_usable_size(p[n]), uq = malloc_usable_size(q[n]);
    if (up < n || up > uq) worst = n;
    free(p[n]);
    free(q[n]);
  }
  check(r, worst == 0, "a new block is malloc's own size for n (%zu)",
        worst);
}

/* Kept blocks stay while blocks move; a second without a move gives
 * them back.  (Under AddressSanitizer nothing is kept.) */
#if defined(__SANITIZE_ADDRESS__)
#define KEEPS 0
#else
#define KEEPS 1
#endif
static void test_idle(struct run *r) {
  struct ms_lua_pool pool = { 0 };
  void *p = ms_lua_alloc(&pool, NULL, 0, 100);
  ms_lua_alloc(&pool, p, 100, 0);
  size_t kept = pool.kept;
  ms_lua_alloc_idle(&pool, 10.0);          /* blocks moved since 0 */
  ms_lua_alloc_idle(&pool, 10.5);          /* too soon to tell */
  p = ms_lua_alloc(&pool, NULL, 0, 100);
  ms_lua_alloc(&pool, p, 100, 0);
  ms_lua_alloc_idle(&pool, 11.0);          /* moved again */
  int stays = pool.kept == kept;
  ms_lua_alloc_idle(&pool, 12.0);          /* a second without a move */
  check(r, (KEEPS ? kept > 0 : 1) && stays && pool.kept == 0,
        "kept blocks stay while blocks move, go back when idle");
}

/* A handed block (lroom.c) goes to the next allocation of its size and
 * to no other; recording notes the next large block. */
static void test_handed(struct run *r) {
  struct ms_lua_pool pool = { 0 };
  size_t big = 4 * MS_ALLOC_MAX;
  void *block = malloc(big);
  pool.handed = block;
  pool.handed_size = big;
  void *small = ms_lua_alloc(&pool, NULL, 4, 100);
  void *other = ms_lua_alloc(&pool, NULL, 4, big + 16);
  void *taken = ms_lua_alloc(&pool, NULL, 4, big);
  void *after = ms_lua_alloc(&pool, NULL, 4, big);
  check(r, small != block && other != block && taken == block &&
        after != block && pool.handed == NULL,
        "a handed block goes to the next allocation of its size only");
  pool.recording = 1;
  void *recorded = ms_lua_alloc(&pool, NULL, 4, big + 32);
  check(r, recorded && pool.handed == recorded &&
        pool.handed_size == big + 32 && !pool.recording,
        "recording notes the next large block and its size");
  pool.handed = NULL;
  void *blocks[] = { small, other, taken, after, recorded };
  size_t sizes[] = { 100, big + 16, big, big, big + 32 };
  for (size_t i = 0; i < 5; i++) ms_lua_alloc(&pool, blocks[i], sizes[i], 0);
  ms_lua_alloc_release(&pool);
}

int main(void) {
  struct run r = { 0, 0 };
  printf("1..9\n");
  test_tight(&r);           /* first: on a heap with no free chunk */
  test_workload(&r);
  test_idle(&r);
  test_handed(&r);
  printf("alloc_test: %d passed, %d failed\n", r.count - r.failed,
         r.failed);
  return r.failed != 0;
}
