/* lroom.c - room for a long message: the block its Lua string will be,
 * filled before Lua sees it, so that the message reaches its handler
 * without a copy
 *
 * Lua 5.4 makes a string only by copying bytes into a block of its
 * own.  Here the bytes go straight into a block that the runner's
 * allocator (alloc.c) then hands to lua_pushlstring for the string:
 * its copy finds source and destination the same and moves nothing
 * (glibc's memcpy returns at once).  Where a long string's bytes lie
 * in its block is learnt once, from a string Lua makes, not assumed.
 * Without the runner's allocator (a host's Lua state) there is no
 * room, and messages are copied as before. */
#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "alloc.h"
#include "binding.h"

/* Rooms are for strings whose blocks malloc makes anyway. */
#define ROOM_MIN   (MS_ALLOC_MAX + 1)
#define LEARN_LEN  (2 * MS_ALLOC_MAX)

/* The runner's allocator of L, with a long string's layout learnt, or
 * NULL. */
static struct ms_lua_pool *pool_of(lua_State *L) {
  void *ud;
  if (lua_getallocf(L, &ud) != ms_lua_alloc) return NULL;
  struct ms_lua_pool *a = ud;
  if (a->str_extra == 0 && !a->str_unknown) {
    /* a long string's block: which of its bytes are the string's */
    static const char zeros[LEARN_LEN];
    a->recording = 1;
    const char *s = lua_pushlstring(L, zeros, sizeof zeros);
    char *block = a->recording ? NULL : a->handed;
    size_t size = a->handed_size;
    a->recording = 0;
    a->handed = NULL;
    if (block && s > block && (size_t)(s - block) + LEARN_LEN < size) {
      a->str_offset = (size_t)(s - block);
      a->str_extra = size - LEARN_LEN;
    } else {
      a->str_unknown = 1;
    }
    lua_pop(L, 1);
  }
  return a->str_unknown ? NULL : a;
}

uint8_t *ms_room_new(lua_State *L, size_t len) {
  struct ms_lua_pool *a = len >= ROOM_MIN ? pool_of(L) : NULL;
  if (!a || len > SIZE_MAX - a->str_extra) return NULL;
  char *block = malloc(len + a->str_extra);
  return block ? (uint8_t *)block + a->str_offset : NULL;
}

void ms_room_free(lua_State *L, uint8_t *room) {
  void *ud;
  lua_getallocf(L, &ud);
  free(room - ((struct ms_lua_pool *)ud)->str_offset);
}

const char *ms_room_push(lua_State *L, uint8_t *room, size_t len) {
  void *ud;
  lua_getallocf(L, &ud);
  struct ms_lua_pool *a = ud;
  a->handed = room - a->str_offset;
  a->handed_size = len + a->str_extra;
  const char *s = lua_pushlstring(L, (const char *)room, len);
  if (a->handed) {                /* not taken: the bytes were copied */
    a->handed = NULL;
    ms_room_free(L, room);
  }
  return s;
}
