/* options.c - server options: defaults, ranges and validation */
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>

#include "server.h"

enum { OPT_SIZE, OPT_SECONDS, OPT_CHOICE, OPT_DEFLATE, OPT_BOOL };

static const char *const level_names[] = {
  "off", "error", "warn", "info", "debug", NULL
};
static const char *const format_names[] = { "text", "json", NULL };

static const struct option_spec {
  const char *name;
  int type;
  int per_route;
  size_t offset;
  double def, min, max;
  const char *const *names;     /* OPT_CHOICE: its values, in order */
} option_specs[] = {
#define SIZE(f, r, d, lo, hi) \
  { #f, OPT_SIZE, r, offsetof(struct ms_options, f), d, lo, hi, NULL }
#define SECS(f, r, d, lo, hi) \
  { #f, OPT_SECONDS, r, offsetof(struct ms_options, f), d, lo, hi, NULL }
  SIZE(max_message_size, 1, 1 << 20, 1, 1ull << 40),
  SIZE(max_backpressure, 1, 1 << 20, 1024, 1ull << 40),
  SECS(close_timeout, 1, 5, 0.001, 86400),
  SECS(keep_alive_interval, 1, 120, 0, 86400),   /* 0: off */
  SECS(keep_alive_timeout, 1, 0, 0, 86400),      /* 0: off */
  SECS(idle_timeout, 1, 0, 0, 86400),            /* 0: off */
  SECS(message_timeout, 1, 60, 0, 86400),        /* 0: off */
  { "compression", OPT_DEFLATE, 1, offsetof(struct ms_options, deflate),
    0, 0, 0, NULL },
  { "keep_request", OPT_BOOL, 1, offsetof(struct ms_options, keep_request),
    0, 0, 1, NULL },
  SIZE(max_body_size, 1, 1 << 20, 0, 1ull << 40),
  SIZE(receive_buffer_size, 0, 64 << 10, 1024, 64 << 20),
  SIZE(max_header_size, 0, 8 << 10, 256, 1 << 20),
  SIZE(max_headers, 0, 64, 1, 1024),
  SIZE(max_request_line, 0, 4 << 10, 64, 1 << 20),
  SIZE(max_connections, 0, 65536, 1, 1 << 24),
  SIZE(max_incomplete_bytes, 0, 64 << 20, 1024, 1ull << 40),
  SECS(handshake_timeout, 0, 10, 0.001, 86400),
  SECS(request_timeout, 0, 30, 0.001, 86400),
  SECS(body_timeout, 0, 30, 0.001, 86400),
  SIZE(max_concurrent_streams, 0, 100, 1, 65536),
  SECS(send_window_timeout, 0, 30, 0.001, 86400),
  { "log_level", OPT_CHOICE, 0, offsetof(struct ms_options, log_level),
    MS_LOG_INFO, MS_LOG_OFF, MS_LOG_DEBUG, level_names },
  { "log_format", OPT_CHOICE, 0, offsetof(struct ms_options, log_format),
    MS_LOG_TEXT, MS_LOG_TEXT, MS_LOG_JSON, format_names },
  { "access_log", OPT_BOOL, 0, offsetof(struct ms_options, access_log),
    0, 0, 1, NULL },
#undef SIZE
#undef SECS
};

#define NOPTIONS (sizeof option_specs / sizeof option_specs[0])

void ms_options_defaults(struct ms_options *o) {
  for (size_t i = 0; i < NOPTIONS; i++) {
    const struct option_spec *sp = &option_specs[i];
    char *field = (char *)o + sp->offset;
    if (sp->type == OPT_SIZE) *(size_t *)field = (size_t)sp->def;
    else if (sp->type == OPT_CHOICE || sp->type == OPT_BOOL)
      *(int *)field = (int)sp->def;
    else if (sp->type == OPT_DEFLATE) {
      static const struct deflate_config off = DEFLATE_CONFIG_DEFAULT;
      *(struct deflate_config *)field = off;
    }
    else *(double *)field = sp->def;
  }
  o->route = -1;
}

static size_t option_size(const struct option_spec *sp) {
  switch (sp->type) {
  case OPT_SIZE: return sizeof(size_t);
  case OPT_SECONDS: return sizeof(double);
  case OPT_DEFLATE: return sizeof(struct deflate_config);
  default: return sizeof(int);
  }
}

void ms_options_copy_route(struct ms_options *to,
                           const struct ms_options *from) {
  for (size_t i = 0; i < NOPTIONS; i++) {
    const struct option_spec *sp = &option_specs[i];
    if (sp->per_route)
      memcpy((char *)to + sp->offset, (const char *)from + sp->offset,
             option_size(sp));
  }
}

static const struct option_spec *find_option(const char *name) {
  for (size_t i = 0; i < NOPTIONS; i++)
    if (strcmp(option_specs[i].name, name) == 0) return &option_specs[i];
  return NULL;
}

/* compression = false | true | { server_max_window_bits = 15, ... } */
static void read_compression(lua_State *L, struct deflate_config *cfg) {
  static const struct deflate_config defaults = DEFLATE_CONFIG_DEFAULT;
  static const struct { const char *name; size_t offset; int flag; } keys[] = {
#define KEY(f, flag) { #f, offsetof(struct deflate_config, f), flag }
    KEY(server_max_window_bits, 0), KEY(client_max_window_bits, 0),
    KEY(server_no_context_takeover, 1), KEY(client_no_context_takeover, 1),
    KEY(mem_level, 0), KEY(level, 0),
#undef KEY
  };
  *cfg = defaults;
  if (lua_isboolean(L, -1)) {
    cfg->enabled = lua_toboolean(L, -1);
    return;
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "option 'compression' must be a boolean or a table");
  cfg->enabled = 1;
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2)
                                                     : "?";
    int known = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
      if (strcmp(keys[i].name, key) != 0) continue;
      int *field = (int *)((char *)cfg + keys[i].offset);
      if (keys[i].flag) {
        if (!lua_isboolean(L, -1))
          luaL_error(L, "option 'compression.%s' must be a boolean", key);
        *field = lua_toboolean(L, -1);
      } else {
        if (!lua_isinteger(L, -1))
          luaL_error(L, "option 'compression.%s' must be an integer", key);
        *field = (int)lua_tointeger(L, -1);
      }
      known = 1;
    }
    if (strcmp(key, "threshold") == 0) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
        luaL_error(L, "option 'compression.threshold' must be a size");
      cfg->threshold = (size_t)lua_tointeger(L, -1);
      known = 1;
    }
    if (!known) luaL_error(L, "unknown option 'compression.%s'", key);
    lua_pop(L, 1);
  }
  const char *why;
  if (deflate_config_check(cfg, &why) != 0)
    luaL_error(L, "option 'compression': %s", why);
}

/* The value on top of the stack as option sp, into o; raises naming the
 * option and its range. */
static void read_value(lua_State *L, const struct option_spec *sp,
                       struct ms_options *o) {
  const char *name = sp->name;
  int isnum;
  lua_Number v = lua_tonumberx(L, -1, &isnum);
  char *field = (char *)o + sp->offset;
  if (sp->type == OPT_DEFLATE) {
    read_compression(L, (struct deflate_config *)field);
  } else if (sp->type == OPT_BOOL) {
    if (!lua_isboolean(L, -1))
      luaL_error(L, "option '%s' must be a boolean", name);
    *(int *)field = lua_toboolean(L, -1);
  } else if (sp->type == OPT_CHOICE) {
    const char *value = lua_tostring(L, -1);
    int i = 0;
    while (value && sp->names[i] && strcmp(sp->names[i], value) != 0)
      i++;
    if (!value || !sp->names[i]) {
      luaL_Buffer b;                   /* "one of a, b, c" */
      luaL_buffinit(L, &b);
      for (int k = 0; sp->names[k]; k++) {
        if (k) luaL_addstring(&b, ", ");
        luaL_addstring(&b, sp->names[k]);
      }
      luaL_pushresult(&b);
      luaL_error(L, "option '%s' must be one of %s", name,
                 lua_tostring(L, -1));
    }
    *(int *)field = i;
  } else if (sp->type == OPT_SIZE) {
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (!isint || n < sp->min || n > sp->max)
      luaL_error(L, "option '%s' must be an integer from %I to %I",
                 name, (lua_Integer)sp->min, (lua_Integer)sp->max);
    *(size_t *)field = (size_t)n;
  } else {
    if (!isnum || !(v >= sp->min && v <= sp->max))
      luaL_error(L, "option '%s' must be a number of seconds from %f "
                 "to %f", name, (lua_Number)sp->min, (lua_Number)sp->max);
    *(double *)field = v;
  }
}

void ms_options_read(lua_State *L, int idx, struct ms_options *o,
                     int per_route) {
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "option names must be strings");
    const char *name = lua_tostring(L, -2);
    const struct option_spec *sp = find_option(name);
    if (!sp) luaL_error(L, "unknown option '%s'", name);
    if (per_route && !sp->per_route)
      luaL_error(L, "option '%s' belongs to the server, not to a route",
                 name);
    read_value(L, sp, o);
    lua_pop(L, 1);
  }
}

int ms_options_read_one(lua_State *L, int idx, const char *name,
                        struct ms_options *o) {
  const struct option_spec *sp = find_option(name);
  if (!sp) return luaL_error(L, "unknown option '%s'", name);
  int present = lua_getfield(L, idx, name) != LUA_TNIL;
  if (present) read_value(L, sp, o);
  lua_pop(L, 1);
  return present;
}
