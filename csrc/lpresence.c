/* lpresence.c - presence for Lua: ws:subscribe's presence info, encoded
 * to cross processes; core.presence, core.presence_count; join and
 * leave told to the app's hook */
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>

#include "backplane.h"
#include "binding.h"
#include "byteorder.h"
#include "presence.h"
#include "workers.h"

#define PRESENCE_HOOK "moonsocket.core.presence"
#define INFO_MAX 16384                   /* encoded bytes per member */
#define DEPTH_MAX 16

/* ------------------------------------------------------------------ */
/* Info tables, encoded                                                */
/* ------------------------------------------------------------------ */

/* A value is a tag and its bytes: 's' length (4) and bytes, 'i' an
 * integer (8, two's complement), 'n' a float (8, IEEE 754 binary64),
 * 't' true, 'f' false, '{' the pairs of a table (key, value, ...) up to
 * '}'.  Numbers are big-endian: the info crosses nodes through Redis,
 * and nodes of another byte order read it alike.  Written into a block
 * on the C stack, so that raising leaks nothing. */
struct writer {
  lua_State *L;
  int arg;                               /* the options', for errors */
  size_t len;
  char bytes[INFO_MAX];
};

static void put(struct writer *w, const void *p, size_t n) {
  if (n > INFO_MAX - w->len)
    luaL_argerror(w->L, w->arg, "presence info over 16384 bytes encoded");
  memcpy(w->bytes + w->len, p, n);
  w->len += n;
}

static void put_tag(struct writer *w, char tag) {
  put(w, &tag, 1);
}

static void put_u64(struct writer *w, uint64_t v) {
  unsigned char b[8];
  ms_put_be64(b, v);
  put(w, b, 8);
}

static uint64_t bits_of(double d) {
  uint64_t v;
  memcpy(&v, &d, 8);
  return v;
}

static double double_of(uint64_t v) {
  double d;
  memcpy(&d, &v, 8);
  return d;
}

static void encode_table(struct writer *w, int idx, int depth);

static void encode_value(struct writer *w, int idx, int depth) {
  lua_State *L = w->L;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    unsigned char n[4];
    ms_put_be32(n, (uint32_t)(len > INFO_MAX ? INFO_MAX : len));
    put_tag(w, 's');
    put(w, n, 4);
    put(w, s, len);
    break;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      put_tag(w, 'i');
      put_u64(w, (uint64_t)lua_tointeger(L, idx));
    } else {
      put_tag(w, 'n');
      put_u64(w, bits_of((double)lua_tonumber(L, idx)));
    }
    break;
  case LUA_TBOOLEAN:
    put_tag(w, lua_toboolean(L, idx) ? 't' : 'f');
    break;
  case LUA_TTABLE:
    encode_table(w, idx, depth + 1);
    break;
  default:
    luaL_argerror(L, w->arg, lua_pushfstring(L, "presence info holds a %s "
                  "(strings, numbers, booleans and tables only)",
                  luaL_typename(L, idx)));
  }
}

static void encode_table(struct writer *w, int idx, int depth) {
  lua_State *L = w->L;
  if (depth > DEPTH_MAX)
    luaL_argerror(L, w->arg, "presence info nested over 16 deep");
  luaL_checkstack(L, 4, "presence info");
  put_tag(w, '{');
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    encode_value(w, top - 1, depth);
    encode_value(w, top, depth);
    lua_pop(L, 1);
  }
  put_tag(w, '}');
}

/* Decode the value at *at in s[0..len); pushes it.  0 when s is
 * malformed (nothing pushed for the broken value). */
static int decode(lua_State *L, const char *s, size_t len, size_t *at,
                  int depth) {
  if (*at >= len || depth > DEPTH_MAX + 1) return 0;
  char tag = s[(*at)++];
  switch (tag) {
  case 's': {
    if (len - *at < 4) return 0;
    uint32_t n = ms_get_be32(s + *at);
    *at += 4;
    if (len - *at < n) return 0;
    lua_pushlstring(L, s + *at, n);
    *at += n;
    return 1;
  }
  case 'i': case 'n': {
    if (len - *at < 8) return 0;
    uint64_t v = ms_get_be64(s + *at);
    *at += 8;
    if (tag == 'i') lua_pushinteger(L, (lua_Integer)v);
    else lua_pushnumber(L, (lua_Number)double_of(v));
    return 1;
  }
  case 't': case 'f':
    lua_pushboolean(L, tag == 't');
    return 1;
  case '{':
    luaL_checkstack(L, 4, "presence info");
    lua_newtable(L);
    while (*at < len && s[*at] != '}') {
      if (!decode(L, s, len, at, depth + 1)) return lua_pop(L, 1), 0;
      if (!decode(L, s, len, at, depth + 1)) return lua_pop(L, 2), 0;
      lua_rawset(L, -3);
    }
    if (*at >= len) return lua_pop(L, 1), 0;
    (*at)++;
    return 1;
  default:
    return 0;
  }
}

static void push_info(lua_State *L, const char *info, size_t len) {
  size_t at = 0;
  if (!decode(L, info, len, &at, 0)) lua_newtable(L);  /* never ours */
}

/* ------------------------------------------------------------------ */
/* Joining and leaving                                                 */
/* ------------------------------------------------------------------ */

void ms_event_presence(struct ms_module *m, const char *topic, size_t tlen,
                       int join, const char *info, size_t ilen) {
  lua_State *L = m->L;
  if (lua_getfield(L, LUA_REGISTRYINDEX, PRESENCE_HOOK) != LUA_TFUNCTION) {
    lua_pop(L, 1);                   /* nobody listens: no decoding */
    return;
  }
  lua_pushlstring(L, topic, tlen);
  if (join) lua_pushliteral(L, "join");
  else lua_pushliteral(L, "leave");
  push_info(L, info, ilen);
  ms_pcall(NULL, L, 3, 0, "presence hook");
}

static void tell_leave(void *arg, const char *topic, size_t tlen,
                       uint64_t id, const char *info, size_t ilen) {
  (void)id;
  ms_event_presence(arg, topic, tlen, 0, info, ilen);
}

/* A subscription with presence ended (topic.c): out of this process's
 * presence, out of the other workers', and the app told. */
static void presence_left(struct ms_topics *ts, uint64_t id) {
  struct ms_module *m = (struct ms_module *)((char *)ts -
                        offsetof(struct ms_module, topics));
  if (!m->presence) return;
  if (m->link) ms_workers_presence(m, 0, "", 0, id, "", 0);
  if (m->backplane) ms_backplane_presence(m->backplane, 0, "", 0, id, "", 0);
  ms_presence_remove(m->presence, id, tell_leave, m);
}

/* The info of ws:subscribe's options at opts, encoded, pushed (nil
 * without presence); raises on what cannot be encoded. */
void ms_presence_encode_lua(lua_State *L, int opts) {
  if (lua_getfield(L, opts, "presence") == LUA_TNIL) return;
  if (!lua_istable(L, -1))
    luaL_argerror(L, opts, lua_pushfstring(L, "presence must be a "
                  "table, got %s", luaL_typename(L, -1)));
  int info = lua_gettop(L);
  struct writer w;                   /* 16 KiB of C stack, for a moment */
  w.L = L;
  w.arg = opts;
  w.len = 0;
  encode_table(&w, info, 0);
  lua_pushlstring(L, w.bytes, w.len);
  lua_remove(L, info);
}

void ms_presence_join_lua(lua_State *L, struct ms_conn *c, const char *name,
                          size_t len, int info) {
  struct ms_module *m = c->server->module;
  size_t ilen;
  const char *bytes = lua_tolstring(L, info, &ilen);
  if (!m->presence && !(m->presence = ms_presence_new()))
    luaL_error(L, "out of memory");
  m->topics.presence_left = presence_left;
  uint64_t id = MS_PRESENCE_ID(m->worker, ++m->presence->serial);
  if (!ms_presence_add(m->presence, name, len, id, bytes, ilen)) {
    ms_topic_unsubscribe(&m->topics, c, name, len);
    luaL_error(L, "out of memory");
  }
  ms_topic_set_presence(c, name, len, id);
  if (m->link) ms_workers_presence(m, 1, name, len, id, bytes, ilen);
  if (m->backplane)
    ms_backplane_presence(m->backplane, 1, name, len, id, bytes, ilen);
  ms_event_presence(m, name, len, 1, bytes, ilen);
}

/* ------------------------------------------------------------------ */
/* core.presence, core.presence_count, core.presence_hook              */
/* ------------------------------------------------------------------ */

static const char *check_topic(lua_State *L, size_t *len) {
  const char *name = luaL_checklstring(L, 1, len);
  luaL_argcheck(L, *len > 0, 1, "empty topic name");
  return name;
}

/* core.presence(topic) -> a list of the info tables, in joining order
 * (this worker's and the others' as they reached it) */
static int l_presence(lua_State *L) {
  struct ms_module *m = ms_module_get(L);
  size_t len;
  const char *name = check_topic(L, &len);
  size_t n = ms_presence_count(m->presence, name, len);
  lua_createtable(L, n < 1000000 ? (int)n : 0, 0);
  lua_Integer i = 0;
  for (const struct ms_presence_member *mb =
         ms_presence_first(m->presence, name, len); mb; mb = mb->next) {
    push_info(L, mb->info, mb->len);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

static int l_presence_count(lua_State *L) {
  size_t len;
  const char *name = check_topic(L, &len);
  lua_pushinteger(L, (lua_Integer)ms_presence_count(ms_module_get(L)->presence,
                                                    name, len));
  return 1;
}

/* core.presence_hook(fn): fn(topic, "join" | "leave", info) from now on
 * (nil: no more) */
static int l_presence_hook(lua_State *L) {
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, PRESENCE_HOOK);
  return 0;
}

void ms_open_presence(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "presence", l_presence }, { "presence_count", l_presence_count },
    { "presence_hook", l_presence_hook }, { NULL, NULL }
  };
  luaL_setfuncs(L, funcs, 0);
}
