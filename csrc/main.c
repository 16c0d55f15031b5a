/* main.c - the moonsocket runner: a host program that embeds Lua 5.4
 * and the core, runs an app script, then runs the loop */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "alloc.h"
#include "moonsocket.h"

#define GC_STEPMUL 200          /* the collector's speed: see pmain */

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Everything under one protected call, as lua.c does. */
static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  luaL_openlibs(L);
  moonsocket_preload(L);
  /* Lua 5.4's default step multiplier (100) lets a server that churns
   * connections outrun its collector: garbage piled up to ten times the
   * live heap in bursts.  Twice as fast keeps the heap near twice what
   * is live; the script may set its own. */
  lua_gc(L, LUA_GCINC, 0, GC_STEPMUL, 0);
  lua_createtable(L, argc, 1);         /* arg, as lua.c sets it */
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  if (luaL_loadfile(L, argv[1]) != LUA_OK) return lua_error(L);
  for (int i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
  lua_call(L, argc - 2, 0);
  /* an app that only listens is served until it shuts down */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonsocket.core");
  lua_call(L, 1, 0);
  return moonsocket_run(L);
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "--help") == 0) {
    fprintf(stderr, "usage: %s app.lua [args...]\n"
            "Runs a moonsocket app script, then serves until SIGINT or "
            "SIGTERM.\n", argv[0]);
    return argc < 2 ? 2 : 0;
  }
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "moonsocket: cannot create a Lua state\n");
    return 1;
  }
  /* Lua's allocations from here on keep small blocks for reuse: each
   * message's string is one (alloc.c) */
  struct ms_lua_pool pool = { 0 };
  lua_setallocf(L, ms_lua_alloc, &pool);
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int rc = lua_pcall(L, 2, 0, 1);
  if (rc != LUA_OK) fprintf(stderr, "moonsocket: %s\n", lua_tostring(L, -1));
  lua_close(L);
  ms_lua_alloc_release(&pool);
  return rc == LUA_OK ? 0 : 1;
}
