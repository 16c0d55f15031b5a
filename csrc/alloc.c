/* alloc.c - the runner's Lua allocator: small blocks kept for reuse
 *
 * Every message a handler is given is a new Lua string, garbage once
 * the handler returns; the collector frees such strings in bursts as it
 * sweeps.  Through malloc, a burst overflows the per-thread cache and
 * the next allocations take the slow path (a bin search, consolidation):
 * about 300 instructions per message for the string's block alone.
 * Here a freed small block goes on a free list of its size class and
 * the next allocation of that class takes it back: a few instructions
 * each way.  The lists hold at most MS_ALLOC_KEEP bytes, so memory kept
 * is bounded; larger blocks and the overflow go to free().
 *
 * Blocks are malloc's: a block's class comes from its usable size, so
 * blocks allocated before lua_setallocf are handled too.  glibc's
 * chunks are 16 bytes apart and a chunk of 16 k bytes has 16 k - 8
 * usable: class k holds blocks of at least 16 k - 8 usable bytes, and a
 * request for n bytes asks malloc for 16 k - 8, the most its chunk
 * holds.  (Asking for 16 k would take the next chunk, 16 bytes more:
 * a WebSocket's userdata paid them.)  Under
 * AddressSanitizer nothing is kept, so that it still sees every free. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdlib.h>

#include "alloc.h"

#if defined(__SANITIZE_ADDRESS__)
#define KEEP 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEEP 0
#endif
#endif
#ifndef KEEP
#define KEEP MS_ALLOC_KEEP
#endif

/* Keep ptr, or free it. */
static void put(struct ms_lua_pool *a, void *ptr) {
  size_t usable = malloc_usable_size(ptr);
  /* class floor((usable + 8) / 16): every block there has room for
   * 16 class - 8 bytes */
  size_t class = (usable + 8) >> 4;
  if (usable >= 24 && usable <= MS_ALLOC_MAX &&
      a->kept + (class << 4) <= KEEP) {
    void **list = &a->free[class];
    *(void **)ptr = *list;
    *list = ptr;
    a->kept += class << 4;
    a->moves++;
    return;
  }
  free(ptr);
}

/* A large block, when one was handed over or is to be recorded: a
 * long string built in place (lroom.c). */
static void *take_handed(struct ms_lua_pool *a, size_t n) {
  void *p = a->handed;
  if (a->recording) {
    a->recording = 0;
    if ((p = malloc(n))) {
      a->handed = p;
      a->handed_size = n;
    }
    return p;
  }
  if (n != a->handed_size) return malloc(n);
  a->handed = NULL;
  return p;
}

/* A block of at least n bytes (n > 0). */
static void *get(struct ms_lua_pool *a, size_t n) {
  if (n > MS_ALLOC_MAX - 23)
    return a->handed || a->recording ? take_handed(a, n) : malloc(n);
  size_t class = (n + 23) >> 4;            /* ceil((n + 8) / 16) */
  void *p = a->free[class];
  if (p) {
    a->free[class] = *(void **)p;
    a->kept -= class << 4;
    a->moves++;
    return p;
  }
  if ((p = malloc((class << 4) - 8))) return p;
  ms_lua_alloc_release(a);               /* short of memory: give back */
  return malloc((class << 4) - 8);
}

void *ms_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  struct ms_lua_pool *a = ud;
  (void)osize;             /* a new object's type when ptr is NULL */
  if (nsize == 0) {
    if (ptr) put(a, ptr);
    return NULL;
  }
  if (!ptr) return get(a, nsize);
  void *p = realloc(ptr, nsize);
  if (!p) {
    ms_lua_alloc_release(a);
    p = realloc(ptr, nsize);
  }
  return p;
}

void ms_lua_alloc_release(struct ms_lua_pool *a) {
  for (size_t i = 0; i < MS_ALLOC_CLASSES; i++) {
    void *p = a->free[i];
    while (p) {
      void *next = *(void **)p;
      free(p);
      p = next;
    }
    a->free[i] = NULL;
  }
  a->kept = 0;
}

void ms_lua_alloc_idle(struct ms_lua_pool *a, double now) {
  if (now - a->checked < 0.9) return;   /* sweeps a second apart */
  if (a->moves == a->moves_seen && a->kept) ms_lua_alloc_release(a);
  a->moves_seen = a->moves;
  a->checked = now;
}
