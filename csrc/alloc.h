/* alloc.h - the runner's Lua allocator: small blocks kept for reuse */
#ifndef MS_ALLOC_H
#define MS_ALLOC_H

#include <stddef.h>

/* Blocks of up to MS_ALLOC_MAX usable bytes, in classes 16 bytes apart. */
#define MS_ALLOC_MAX     1088
#define MS_ALLOC_CLASSES (MS_ALLOC_MAX / 16 + 1)
/* The most bytes kept in the free lists: beyond, blocks go to free(). */
#define MS_ALLOC_KEEP    (256 << 10)

/* The allocator's state, the ud of lua_setallocf; zeroed is empty. */
struct ms_lua_pool {
  void *free[MS_ALLOC_CLASSES];   /* each block's first word: the next */
  size_t kept;                    /* bytes in the free lists */
  size_t moves;                   /* blocks kept or taken, ever */
  size_t moves_seen;              /* at the last idle check */
  double checked;                 /* when that was */
  void *handed;                   /* a block the next allocation of */
  size_t handed_size;             /* handed_size bytes takes (lroom.c) */
  int recording;                  /* the next large block is recorded
                                     as handed, handed_size */
  size_t str_offset, str_extra;   /* a long string's bytes in its block,
                                     and its block's other bytes, once
                                     learnt (lroom.c) */
  int str_unknown;                /* could not be learnt: no rooms */
};

/* A lua_Alloc: lua_setallocf(L, ms_lua_alloc, &pool), at any time, since it
 * frees and resizes any block malloc made. */
void *ms_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* Give the kept blocks back to free(), after lua_close. */
void ms_lua_alloc_release(struct ms_lua_pool *a);
/* Called now and then with the loop's time (the servers' sweeps): when
 * no block was kept or taken for a second or more, the kept ones go
 * back to free().  Scattered over malloc's pages they would hold them,
 * so an idle process could not give its memory back. */
void ms_lua_alloc_idle(struct ms_lua_pool *a, double now);

#endif
