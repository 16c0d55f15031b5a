/* lbackplane.c - the backplane object (moonsocket.backplane):
 * core.backplane's options, bp:publish, its fields */
#include <string.h>

#include <lauxlib.h>

#include "backplane.h"
#include "binding.h"
#include "frame.h"
#include "utf8.h"

#define BACKPLANE_MT "moonsocket.backplane"

/* The defaults of core.backplane's options. */
#define DEFAULT_URL "redis://127.0.0.1:6379"
#define DEFAULT_PREFIX "moonsocket:"
#define DEFAULT_MAX_PENDING ((size_t)16 << 20)

static const char *opt_string(lua_State *L, const char *name,
                              const char *def, size_t *len) {
  int t = lua_getfield(L, 1, name);
  const char *s = def;
  if (t == LUA_TNIL) *len = strlen(def);
  else if (t == LUA_TSTRING) s = lua_tolstring(L, -1, len);
  else luaL_argerror(L, 1, lua_pushfstring(L, "option '%s' must be a "
                                           "string", name));
  lua_pop(L, 1);                /* the string stays in the table */
  return s;
}

static struct ms_backplane *check_backplane(lua_State *L) {
  return luaL_checkudata(L, 1, BACKPLANE_MT);
}

/* bp:publish(topic, data [, kind]): to the other nodes only -> "sent",
 * or fail, message, code */
static int bp_publish(lua_State *L) {
  static const char *const kinds[] = { "text", "binary", NULL };
  struct ms_backplane *b = check_backplane(L);
  size_t tlen, len;
  const char *topic = luaL_checklstring(L, 2, &tlen);
  luaL_argcheck(L, tlen > 0, 2, "empty topic name");
  const char *data = luaL_checklstring(L, 3, &len);
  int binary = luaL_checkoption(L, 4, "text", kinds);
  luaL_argcheck(L, binary || utf8_validate(UTF8_ACCEPT,
                (const uint8_t *)data, len) == UTF8_ACCEPT, 3,
                "text is not UTF-8 (publish it as \"binary\")");
  const char *msg, *code;
  switch (ms_backplane_publish(b, topic, tlen,
                               binary ? WS_OP_BINARY : WS_OP_TEXT,
                               data, len)) {
  case MS_BP_SENT:
    lua_pushliteral(L, "sent");
    return 1;
  case MS_BP_CLOSED:
    msg = "the backplane is closed";
    code = "ECLOSED";
    break;
  case MS_BP_UNAVAILABLE:
    msg = "redis is unavailable";
    code = "EUNAVAILABLE";
    break;
  case MS_BP_DROPPED:
    msg = "dropped: max_pending exceeded";
    code = "EBACKPRESSURE";
    break;
  default:
    return luaL_error(L, "out of memory");
  }
  return ms_push_fail(L, msg, code);
}

/* close() and __close */
static int bp_close(lua_State *L) {
  ms_backplane_close(check_backplane(L));
  return 0;
}

/* __gc: nothing of Lua is called from a finaliser */
static int bp_gc(lua_State *L) {
  ms_backplane_discard(check_backplane(L));
  return 0;
}

/* Methods, and the fields connected, unsent (publishes made while
 * Redis was down) and dropped (over max_pending). */
static int bp_index(lua_State *L) {
  struct ms_backplane_info info;
  ms_backplane_describe(check_backplane(L), &info);
  const char *key = lua_tostring(L, 2);
  if (key && strcmp(key, "connected") == 0)
    lua_pushboolean(L, info.connected);
  else if (key && strcmp(key, "unsent") == 0)
    lua_pushinteger(L, (lua_Integer)info.unsent);
  else if (key && strcmp(key, "dropped") == 0)
    lua_pushinteger(L, (lua_Integer)info.dropped);
  else
    lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

static int bp_tostring(lua_State *L) {
  struct ms_backplane_info info;
  ms_backplane_describe(check_backplane(L), &info);
  lua_pushfstring(L, "moonsocket.backplane (redis %s:%d, %s)", info.host,
                  info.port, info.state);
  return 1;
}

/* backplane{ redis = url, channel_prefix = "moonsocket:",
 *            max_pending = 16 MiB, presence_ttl = 10 } */
static int l_backplane(lua_State *L) {
  struct ms_module *m = ms_module_get(L);
  static const char *const known[] = { "redis", "channel_prefix",
                                       "max_pending", "presence_ttl",
                                       NULL };
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    /* checked first: lua_tostring on a number key would upset lua_next */
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, 1, "option names must be strings");
    const char *name = lua_tostring(L, -1);
    int i = 0;
    while (known[i] && strcmp(known[i], name) != 0) i++;
    if (!known[i])
      luaL_argerror(L, 1, lua_pushfstring(L, "unknown option '%s'", name));
  }
  size_t url_len, prefix_len;
  const char *url = opt_string(L, "redis", DEFAULT_URL, &url_len);
  const char *prefix = opt_string(L, "channel_prefix", DEFAULT_PREFIX,
                                  &prefix_len);
  if (memchr(prefix, '\0', prefix_len))
    luaL_argerror(L, 1, "option 'channel_prefix' must not hold a NUL");
  struct ms_redis_url u;
  if (ms_backplane_parse_url(url, url_len, &u) < 0)
    luaL_argerror(L, 1, lua_pushfstring(L, "option 'redis': invalid URL "
                  "'%s' (redis://[:password@]host:port[/db] expected)",
                  url));
  size_t max_pending = DEFAULT_MAX_PENDING;
  if (lua_getfield(L, 1, "max_pending") != LUA_TNIL) {
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < 1024 || v > ((lua_Integer)1 << 40))
      luaL_argerror(L, 1, "option 'max_pending' must be a size from 1024 "
                    "to 1099511627776 bytes");
    max_pending = (size_t)v;
  }
  lua_pop(L, 1);
  double presence_ttl = MS_BACKPLANE_PRESENCE_TTL;
  if (lua_getfield(L, 1, "presence_ttl") != LUA_TNIL) {
    int ok;
    lua_Number v = lua_tonumberx(L, -1, &ok);
    if (!ok || !(v >= 1 && v <= 3600))
      luaL_argerror(L, 1, "option 'presence_ttl' must be a number of "
                    "seconds from 1 to 3600");
    presence_ttl = v;
  }
  lua_pop(L, 1);
  if (m->backplane) luaL_error(L, "a backplane is already in use");

  /* closed first: what raises from here on leaves __gc to free */
  struct ms_backplane *b = lua_newuserdatauv(L, ms_backplane_size(), 0);
  ms_backplane_init(b);
  luaL_setmetatable(L, BACKPLANE_MT);
  switch (ms_backplane_configure(b, &u, prefix, prefix_len, max_pending)) {
  case -1:
    luaL_argerror(L, 1, "option 'redis': invalid password (a bad "
                  "%-escape, or a NUL)");
    break;
  case -2:
    luaL_error(L, "out of memory");
  }
  ms_backplane_set_presence_ttl(b, presence_ttl);
  lua_pushvalue(L, -1);
  ms_backplane_start(b, m, luaL_ref(L, LUA_REGISTRYINDEX));
  return 1;
}

void ms_open_backplane(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "backplane", l_backplane }, { NULL, NULL }
  };
  static const luaL_Reg methods[] = {
    { "publish", bp_publish }, { "close", bp_close }, { NULL, NULL }
  };
  static const luaL_Reg backplane_meta[] = {
    { "__gc", bp_gc }, { "__close", bp_close },
    { "__tostring", bp_tostring }, { NULL, NULL }
  };
  if (luaL_newmetatable(L, BACKPLANE_MT)) {
    luaL_setfuncs(L, backplane_meta, 0);
    luaL_newlib(L, methods);
    lua_pushcclosure(L, bp_index, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
