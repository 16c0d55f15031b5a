/* lresolver.c - name resolution for Lua: core.resolve starts a lookup
 * (moonsocket.lookup) that calls back with the addresses, core.resolver
 * sets the resolver's options */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "binding.h"
#include "resolver.h"

/* A lookup Lua started.  While under way it is anchored (the loop calls
 * back) and in its module's list, so that shutdown and a new worker
 * cancel it as they cancel timers.  Its uservalues are the function to
 * call, its first argument and the name. */
struct ms_lua_lookup {
  struct ms_module *m;
  struct ms_lookup *lookup;            /* under way, else NULL */
  struct ms_lua_lookup *prev, *next;   /* in m->lookups while under way */
  int ref;                             /* the anchor, or LUA_NOREF */
};

enum { LV_FN = 1, LV_ARG, LV_NAME, NLV = LV_NAME };

static struct ms_lua_lookup *check_lookup(lua_State *L) {
  return luaL_checkudata(L, 1, LOOKUP_MT);
}

/* No longer under way: out of the list, no anchor. */
static void finish(struct ms_lua_lookup *k, lua_State *L) {
  if (k->prev) k->prev->next = k->next;
  else k->m->lookups = k->next;
  if (k->next) k->next->prev = k->prev;
  k->prev = k->next = NULL;
  k->lookup = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, k->ref);
  k->ref = LUA_NOREF;
}

/* Give it up, its function never called; whether it was under way. */
static int cancel(struct ms_lua_lookup *k, lua_State *L) {
  if (!k->lookup) return 0;
  ms_resolve_cancel(k->lookup);
  finish(k, L);
  return 1;
}

void ms_lua_lookups_cancel_all(struct ms_module *m) {
  while (m->lookups) cancel(m->lookups, m->L);
}

/* The answer: fn(arg, addresses) or fn(arg, nil, message, "ERESOLVE"). */
static void resolved(void *arg, int status, const char *why,
                     const struct ms_addrs *a) {
  struct ms_lua_lookup *k = arg;
  lua_State *L = k->m->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, k->ref);   /* alive while told */
  int top = lua_gettop(L);
  finish(k, L);
  /* told only when the module closes, after Lua's lookups are gone */
  if (status == MS_RESOLVE_CANCELLED) {
    lua_settop(L, top - 1);
    return;
  }
  lua_getiuservalue(L, top, LV_FN);
  lua_getiuservalue(L, top, LV_ARG);
  if (status == MS_RESOLVE_OK) {
    lua_createtable(L, (int)a->n, 0);
    for (size_t i = 0; i < a->n; i++) {
      char text[INET6_ADDRSTRLEN];
      lua_pushstring(L, ms_sockaddr_text(&a->addr[i], text, sizeof text));
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    ms_pcall(NULL, L, 2, 0, "resolve callback");
  } else {
    lua_pushnil(L);
    lua_getiuservalue(L, top, LV_NAME);
    lua_pushfstring(L, "cannot resolve '%s': %s", lua_tostring(L, -1), why);
    lua_remove(L, -2);
    lua_pushliteral(L, "ERESOLVE");
    ms_pcall(NULL, L, 4, 0, "resolve callback");
  }
  lua_settop(L, top - 1);
}

/* core.resolve(name, fn, arg): a lookup of name's addresses, IPv4 and
 * IPv6, under way; fn(arg, { "192.0.2.1", ... }) or fn(arg, nil,
 * "cannot resolve 'name': why", "ERESOLVE") later, from the loop. */
static int l_resolve(lua_State *L) {
  struct ms_module *m = ms_module_get(L);
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len > 0 && len <= 255 && strlen(name) == len, 1,
                "a host name or an address expected");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 3);
  /* closed first: what raises from here on leaves __gc to cancel */
  struct ms_lua_lookup *k = lua_newuserdatauv(L, sizeof *k, NLV);  /* 4 */
  memset(k, 0, sizeof *k);
  k->m = m;
  k->ref = LUA_NOREF;
  luaL_setmetatable(L, LOOKUP_MT);
  for (int i = 1; i <= NLV; i++) {
    lua_pushvalue(L, i == LV_FN ? 2 : i == LV_ARG ? 3 : 1);
    lua_setiuservalue(L, 4, i);
  }
  if (!(k->lookup = ms_resolve(m, name, NULL, AF_UNSPEC, resolved, k)))
    return luaL_error(L, "out of memory");
  k->next = m->lookups;
  if (k->next) k->next->prev = k;
  m->lookups = k;
  lua_pushvalue(L, 4);
  k->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* lookup:cancel(): true when it was under way; fn is never called. */
static int lookup_cancel(lua_State *L) {
  lua_pushboolean(L, cancel(check_lookup(L), L));
  return 1;
}

/* __gc and __close: cancel */
static int lookup_gc(lua_State *L) {
  cancel(check_lookup(L), L);
  return 0;
}

static int lookup_tostring(lua_State *L) {
  struct ms_lua_lookup *k = check_lookup(L);
  lua_getiuservalue(L, 1, LV_NAME);
  lua_pushfstring(L, "moonsocket.lookup (%s, %s): %p", lua_tostring(L, -1),
                  k->lookup ? "under way" : "done", (void *)k);
  return 1;
}

/* ------------------------------------------------------------------ */
/* core.resolver                                                      */
/* ------------------------------------------------------------------ */

#define SERVER_FORMS "\"192.0.2.53\", \"192.0.2.53:5353\", \"2001:db8::53\" " \
                     "or \"[2001:db8::53]:5353\""

/* A DNS server as core.resolver takes it (an address, an optional
 * port, an IPv6 address bracketed when a port follows), pushed in
 * c-ares's form, "192.0.2.53:53" or "[2001:db8::53]:53"; 0 when it is
 * not one. */
static int push_server(lua_State *L, const char *s, size_t len) {
  char host[INET6_ADDRSTRLEN + 1];
  const char *port = NULL;
  size_t hlen;
  if (s[0] == '[') {
    const char *end = memchr(s, ']', len);
    if (!end) return 0;
    hlen = (size_t)(end - s - 1);
    s++;
    if (end[1] == ':') port = end + 2;
    else if (end[1]) return 0;
  } else {
    const char *colon = strchr(s, ':');
    if (colon && !strchr(colon + 1, ':')) {     /* one colon: v4:port */
      hlen = (size_t)(colon - s);
      port = colon + 1;
    } else {
      hlen = len;
    }
  }
  if (hlen == 0 || hlen >= sizeof host) return 0;
  memcpy(host, s, hlen);
  host[hlen] = '\0';
  unsigned char addr[sizeof(struct in6_addr)];
  int v6 = inet_pton(AF_INET6, host, addr) == 1;
  if (!v6 && inet_pton(AF_INET, host, addr) != 1) return 0;
  long p = 53;
  if (port) {
    char *end;
    if (*port < '0' || *port > '9' || strlen(port) > 5) return 0;
    p = strtol(port, &end, 10);
    if (*end || p < 1 || p > 65535) return 0;
  }
  lua_pushfstring(L, v6 ? "[%s]:%d" : "%s:%d", host, (int)p);
  return 1;
}

/* option 'servers': a list of addresses, pushed as one c-ares list */
static void push_servers(lua_State *L, int idx) {
  if (!lua_istable(L, idx))
    luaL_error(L, "option 'servers' must be a list of addresses (" SERVER_FORMS
               ")");
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  if (n < 1 || n > MS_RESOLVER_SERVERS_MAX)
    luaL_error(L, "option 'servers' must list 1 to %d addresses",
               MS_RESOLVER_SERVERS_MAX);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= n; i++) {
    size_t len;
    lua_rawgeti(L, idx, i);
    const char *s = lua_type(L, -1) == LUA_TSTRING
                    ? lua_tolstring(L, -1, &len) : NULL;
    if (!s || strlen(s) != len || !push_server(L, s, len))
      luaL_error(L, "option 'servers': %s is not an address with an "
                 "optional port (" SERVER_FORMS ")",
                 s ? lua_pushfstring(L, "'%s'", s) : luaL_typename(L, -1));
    lua_remove(L, -2);
    if (i > 1) luaL_addchar(&b, ',');
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
}

/* core.resolver{ servers = { "192.0.2.53:53", ... }, timeout = 5,
 * cache = 256 or false }: true; nil, message, "EBUSY" while lookups
 * are under way.  Each call sets every option: one left out takes its
 * default. */
static int l_resolver(lua_State *L) {
  static const char *const known[] = { "servers", "timeout", "cache",
                                       NULL };
  struct ms_module *m = ms_module_get(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "option names must be strings");
    const char *name = lua_tostring(L, -1);
    int i = 0;
    while (known[i] && strcmp(known[i], name) != 0) i++;
    if (!known[i]) luaL_error(L, "unknown option '%s'", name);
  }
  struct ms_resolver_config c;
  ms_resolver_config_defaults(&c);
  if (lua_getfield(L, 1, "servers") != LUA_TNIL) {               /* 2 */
    push_servers(L, 2);
    c.servers = lua_tostring(L, -1);                             /* 3 */
  }
  if (lua_getfield(L, 1, "timeout") != LUA_TNIL) {
    int ok;
    lua_Number t = lua_tonumberx(L, -1, &ok);
    if (!ok || !(t >= MS_RESOLVER_TIMEOUT_MIN &&
                 t <= MS_RESOLVER_TIMEOUT_MAX))
      luaL_error(L, "option 'timeout' must be a number of seconds from "
                 "%f to %f", (lua_Number)MS_RESOLVER_TIMEOUT_MIN,
                 (lua_Number)MS_RESOLVER_TIMEOUT_MAX);
    c.timeout = t;
  }
  lua_pop(L, 1);
  int t = lua_getfield(L, 1, "cache");
  if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    c.cache = 0;
  } else if (t != LUA_TNIL) {
    int ok;
    lua_Integer n = lua_tointegerx(L, -1, &ok);
    if (!ok || n < 0 || n > MS_RESOLVER_CACHE_MAX)
      luaL_error(L, "option 'cache' must be false or a number of answers "
                 "from 0 to %d", MS_RESOLVER_CACHE_MAX);
    c.cache = (size_t)n;
  }
  lua_pop(L, 1);
  const char *why = NULL;
  int rc = ms_resolver_configure(m, &c, &why);
  if (rc == -2) return luaL_error(L, "out of memory");
  if (rc < 0) return ms_push_fail(L, why, "EBUSY");
  lua_pushboolean(L, 1);
  return 1;
}

void ms_open_resolver(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "cancel", lookup_cancel }, { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", lookup_gc }, { "__close", lookup_gc },
    { "__tostring", lookup_tostring }, { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "resolve", l_resolve }, { "resolver", l_resolver }, { NULL, NULL }
  };
  if (luaL_newmetatable(L, LOOKUP_MT)) {
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
