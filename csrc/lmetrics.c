/* lmetrics.c - core.metrics: the core's counters as a Lua table, summed
 * over the workers (metrics.c) */
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>

#include "binding.h"
#include "frame.h"
#include "metrics.h"

static const char *const kinds[MS_KINDS] = { "http", "http2", "websocket" };
static const char *const carriers[MS_CARRIERS] = { "tcp", "tls", "http2" };
static const char *const callbacks[MS_CALLBACKS] = {
  "message", "open", "close", "drain", "pong", "request", "timer",
  "coroutine", "other"
};
static const char *const whys[MS_METRICS_WHY] = {
  "none", "peer", "local", "timeout", "error", "lost", "shutdown"
};

/* sum_slots adds the structure as words, around the tables of codes
 * and routes */
_Static_assert(offsetof(struct ms_metrics, routes) ==
               offsetof(struct ms_metrics, app_codes) +
               sizeof ((struct ms_metrics *)0)->app_codes &&
               offsetof(struct ms_metrics, sends_queued) ==
               offsetof(struct ms_metrics, routes) +
               sizeof ((struct ms_metrics *)0)->routes &&
               offsetof(struct ms_metrics, app_codes) % 8 == 0 &&
               offsetof(struct ms_metrics, sends_queued) % 8 == 0,
               "struct ms_metrics: words, codes and routes, words");

/* t[name] = v, at the table on top */
static void set_count(lua_State *L, const char *name, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, name);
}

/* Add the slots' closes to the table on top: t[code][why] (code
 * "other" for the rest); the application codes differ by slot. */
static void add_closes(lua_State *L, const struct ms_metrics *slots, int n) {
  for (int k = 0; k < n; k++) {
    const struct ms_metrics *mt = &slots[k];
    for (int i = 0; i < MS_METRICS_CODES; i++) {
      for (int w = 0; w < MS_METRICS_WHY; w++) {
        uint64_t v = mt->closes[w][i];
        if (!v) continue;
        int code = ms_metrics_code_of(mt, i);
        if (code) lua_pushinteger(L, code);
        else lua_pushliteral(L, "other");
        if (lua_gettable(L, -2) == LUA_TNIL) {
          lua_pop(L, 1);
          lua_newtable(L);
          if (code) lua_pushinteger(L, code);
          else lua_pushliteral(L, "other");
          lua_pushvalue(L, -2);
          lua_settable(L, -4);
        }
        lua_getfield(L, -1, whys[w]);
        v += (uint64_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
        set_count(L, whys[w], v);
        lua_pop(L, 1);
      }
    }
  }
}

/* Add the slots' routes to the table on top: t[path] = { opened =,
 * closed =, open =, messages_received =, messages_sent = }, by path
 * (each slot has its own table of routes). */
static void add_routes(lua_State *L, const struct ms_metrics *slots,
                       int n) {
  static const char *const fields[] = { "opened", "closed",
    "messages_received", "messages_sent" };
  for (int k = 0; k < n; k++) {
    const struct ms_metrics *mt = &slots[k];
    for (int i = 0; i < MS_METRICS_ROUTES && mt->routes[i][0]; i++) {
      const uint64_t v[] = { mt->route_opened[i], mt->route_closed[i],
                             mt->route_in[i], mt->route_out[i] };
      if (lua_getfield(L, -1, mt->routes[i]) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 5);
        for (int f = 0; f < 4; f++) set_count(L, fields[f], 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, mt->routes[i]);
      }
      for (int f = 0; f < 4; f++) {
        lua_getfield(L, -1, fields[f]);
        uint64_t sum = v[f] + (uint64_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
        set_count(L, fields[f], sum);
      }
      lua_getfield(L, -1, "opened");
      lua_getfield(L, -2, "closed");
      lua_Integer open = lua_tointeger(L, -2) - lua_tointeger(L, -1);
      lua_pop(L, 2);
      lua_pushinteger(L, open);
      lua_setfield(L, -2, "open");
      lua_pop(L, 1);
    }
  }
}

/* A table of the statuses counted: t[status] = n, t.other for those
 * past 599. */
static void push_statuses(lua_State *L, const uint64_t *by_status) {
  lua_newtable(L);
  for (int i = 0; i < MS_METRICS_STATUS; i++) {
    if (!by_status[i]) continue;
    lua_pushinteger(L, (lua_Integer)by_status[i]);
    if (i) lua_rawseti(L, -2, i);
    else lua_setfield(L, -2, "other");
  }
}

/* { text = mt->x[1], binary = mt->x[2] } */
static void push_data(lua_State *L, const uint64_t *by_op) {
  lua_createtable(L, 0, 2);
  set_count(L, "text", by_op[WS_OP_TEXT]);
  set_count(L, "binary", by_op[WS_OP_BINARY]);
}

static void push_control(lua_State *L, const uint64_t *by_op) {
  lua_createtable(L, 0, 3);
  set_count(L, "ping", by_op[WS_OP_PING]);
  set_count(L, "pong", by_op[WS_OP_PONG]);
  set_count(L, "close", by_op[WS_OP_CLOSE]);
}

/* callback_seconds[kind] = { count =, sum = seconds, buckets = { the
 * cumulative counts at each bound } } and callback_bounds, seconds */
static void push_callbacks(lua_State *L, const struct ms_metrics *mt) {
  lua_createtable(L, 0, MS_CALLBACKS);
  for (int k = 0; k < MS_CALLBACKS; k++) {
    lua_createtable(L, 0, 3);
    lua_createtable(L, MS_CALLBACK_BUCKETS - 1, 0);
    uint64_t below = 0;
    for (int i = 0; i < MS_CALLBACK_BUCKETS; i++) {
      below += mt->callbacks[k][i];
      if (i == MS_CALLBACK_BUCKETS - 1) break;
      lua_pushinteger(L, (lua_Integer)below);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "buckets");
    set_count(L, "count", below);
    lua_pushnumber(L, (lua_Number)mt->callback_ns[k] / 1e9);
    lua_setfield(L, -2, "sum");
    lua_setfield(L, -2, callbacks[k]);
  }
  lua_setfield(L, -2, "callback_seconds");
  lua_createtable(L, MS_CALLBACK_BUCKETS - 1, 0);
  for (int i = 0; i < MS_CALLBACK_BUCKETS - 1; i++) {
    lua_pushnumber(L, (lua_Number)ms_callback_bounds_ns[i] / 1e9);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "callback_bounds");
}

/* The figures of slots[0..n) summed into *sum, which is zeroed. */
static void sum_slots(struct ms_metrics *sum, const struct ms_metrics *slots,
                      int n) {
  memset(sum, 0, sizeof *sum);
  uint64_t *to = (uint64_t *)sum;
  /* every field is a uint64_t but the tables of application codes and
   * routes, which stay zero (closes and routes are read per slot) */
  size_t words = offsetof(struct ms_metrics, app_codes) / sizeof *to;
  size_t after = (offsetof(struct ms_metrics, sends_queued)) / sizeof *to;
  size_t end = sizeof *sum / sizeof *to;
  for (int k = 0; k < n; k++) {
    const uint64_t *from = (const uint64_t *)&slots[k];
    for (size_t i = 0; i < words; i++) to[i] += from[i];
    for (size_t i = after; i < end; i++) to[i] += from[i];
  }
}

/* core.metrics([worker]): the counters of every process (or of one
 * worker, 1..n; 0 the master) as a table (docs/metrics.md). */
static int l_metrics(lua_State *L) {
  struct ms_module *m = ms_module_get(L);
  ms_metrics_sample(m);                     /* this process's, fresh */
  int n;
  const struct ms_metrics *slots = ms_metrics_slots(m, &n);
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer w = luaL_checkinteger(L, 1);
    luaL_argcheck(L, w >= 0 && w < n, 1, "no such worker");
    slots += w;
    n = 1;
  }
  struct ms_metrics *mt = lua_newuserdatauv(L, sizeof *mt, 0);
  sum_slots(mt, slots, n);
  lua_createtable(L, 0, 32);
  set_count(L, "processes", (uint64_t)n);

  lua_createtable(L, 0, MS_KINDS);
  for (int k = 0; k < MS_KINDS; k++) {
    lua_createtable(L, 0, MS_CARRIERS);
    for (int c = 0; c < MS_CARRIERS; c++) {
      if (k == MS_KIND_H2 && c == MS_CARRIER_STREAM) continue;
      set_count(L, carriers[c], mt->opened[k][c] - mt->closed[k][c]);
    }
    lua_setfield(L, -2, kinds[k]);
  }
  lua_setfield(L, -2, "connections");
  lua_createtable(L, 0, 2);
  set_count(L, "tcp", mt->accepted[0]);
  set_count(L, "tls", mt->accepted[1]);
  lua_setfield(L, -2, "accepted");
  set_count(L, "http2_streams", mt->opened[MS_KIND_HTTP][MS_CARRIER_STREAM]);
  set_count(L, "refused", mt->refused);
  set_count(L, "tls_failed", mt->tls_failed);
  push_statuses(L, mt->responses);
  lua_setfield(L, -2, "responses");
  push_statuses(L, mt->handshakes);
  lua_setfield(L, -2, "handshakes");

  uint64_t frames_out = 0;
  for (int op = 0; op < 16; op++) frames_out += mt->messages_out[op];
  set_count(L, "frames_received", mt->frames_in);
  set_count(L, "frames_sent", frames_out);
  push_data(L, mt->messages_in);
  lua_setfield(L, -2, "messages_received");
  push_data(L, mt->bytes_in);
  lua_setfield(L, -2, "bytes_received");
  push_data(L, mt->messages_out);
  lua_setfield(L, -2, "messages_sent");
  push_data(L, mt->bytes_out);
  lua_setfield(L, -2, "bytes_sent");
  push_control(L, mt->messages_in);
  lua_setfield(L, -2, "control_received");
  push_control(L, mt->messages_out);
  lua_setfield(L, -2, "control_sent");
  lua_createtable(L, 0, 4);
  set_count(L, "deflate_in", mt->deflate_in);
  set_count(L, "deflate_out", mt->deflate_out);
  set_count(L, "inflate_in", mt->inflate_in);
  set_count(L, "inflate_out", mt->inflate_out);
  lua_setfield(L, -2, "compression");
  lua_newtable(L);
  add_closes(L, slots, n);
  lua_setfield(L, -2, "closes");

  set_count(L, "sends_queued", mt->sends_queued);
  lua_createtable(L, 0, 2);
  set_count(L, "backpressure", mt->dropped_backpressure);
  set_count(L, "closed", mt->dropped_closed);
  lua_setfield(L, -2, "sends_dropped");
  set_count(L, "backpressure_closes", mt->backpressure_closes);
  set_count(L, "unsent_messages", mt->unsent);

  set_count(L, "publishes", mt->publishes);
  set_count(L, "deliveries", mt->deliveries);
  set_count(L, "topics", mt->topics_created - mt->topics_destroyed);
  set_count(L, "subscriptions", mt->subscribed - mt->unsubscribed);

  /* the processes: RSS and descriptors from /proc, by pid */
  uint64_t resident = 0, fds = 0;
  for (int k = 0; k < n; k++) {
    if (!slots[k].pid) continue;
    resident += ms_metrics_resident(slots[k].pid);
    fds += ms_metrics_descriptors(slots[k].pid);
  }
  set_count(L, "lua_heap_bytes", mt->lua_heap);
  set_count(L, "resident_bytes", resident);
  set_count(L, "open_fds", fds);
  set_count(L, "loop_iterations", mt->loop_iterations);
  push_callbacks(L, mt);
  lua_newtable(L);
  add_routes(L, slots, n);
  lua_setfield(L, -2, "routes");
  return 1;
}

void ms_open_metrics(lua_State *L) {
  lua_pushcfunction(L, l_metrics);
  lua_setfield(L, -2, "metrics");
}
