/* ltimer.c - timers on the loop (moonsocket.timer), and the waits of
 * coroutine handlers that timers, threads and queues end (core.wait,
 * core.wake) */
#include <lauxlib.h>

#include "binding.h"
#include "log.h"

/* One libev timer each, in libev's heap: 100,000 armed cost a heap
 * entry and this userdata each, and nothing while they sleep.  An
 * armed timer is in its module's list (all are cancelled at shutdown)
 * and anchored by a registry reference, so that an app may drop it and
 * still have it fire.  A Lua timer calls uservalue 1 with uservalues
 * 2.. as arguments; a C timer calls fire. */
struct ms_timer {
  ev_timer w;
  struct ms_module *m;
  struct ms_timer *prev, *next;     /* in m->timers while armed */
  void (*fire)(struct ms_timer *t); /* a C timer's, else NULL */
  void *arg;                        /* for fire */
  int ref;                          /* LUA_NOREF while not armed */
  int nvalues;                      /* the function and its arguments */
};

#define TIMER_MAX_ARGS 16

static struct ms_timer *check_timer(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, TIMER_MT);
}

/* Stop, leave the list, drop the anchor; nothing when not armed. */
static int disarm(struct ms_timer *t, lua_State *L) {
  if (t->ref == LUA_NOREF) return 0;
  ev_timer_stop(t->m->loop, &t->w);
  if (t->prev) t->prev->next = t->next;
  else t->m->timers = t->next;
  if (t->next) t->next->prev = t->prev;
  t->prev = t->next = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
  return 1;
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  struct ms_timer *t = (struct ms_timer *)w;
  lua_State *L = t->m->L;
  (void)loop;
  (void)revents;
  if (t->fire) {
    if (!ev_is_active(w)) disarm(t, L);   /* a one-shot has fired */
    t->fire(t);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  int top = lua_gettop(L);
  if (!ev_is_active(w)) disarm(t, L);
  for (int i = 1; i <= t->nvalues; i++) lua_getiuservalue(L, top, i);
  ms_pcall_timed(t->m, L, t->nvalues - 1, 0, "timer callback");
  lua_settop(L, top - 1);
}

/* Arm the new timer at the top of the stack (it stays there). */
static void arm(struct ms_timer *t, lua_State *L, double after,
                double every) {
  ev_timer_init(&t->w, timer_cb, after, every);
  ev_timer_start(t->m->loop, &t->w);
  lua_pushvalue(L, -1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  t->next = t->m->timers;
  if (t->next) t->next->prev = t;
  t->m->timers = t;
}

static struct ms_timer *new_timer(lua_State *L, struct ms_module *m,
                                  int nvalues) {
  struct ms_timer *t = lua_newuserdatauv(L, sizeof *t, nvalues);
  memset(t, 0, sizeof *t);
  t->m = m;
  t->ref = LUA_NOREF;
  t->nvalues = nvalues;
  luaL_setmetatable(L, TIMER_MT);
  return t;
}

struct ms_timer *ms_timer_start(lua_State *L, double after,
                                void (*fire)(struct ms_timer *t),
                                void *arg) {
  struct ms_timer *t = new_timer(L, ms_module_get(L), 0);
  t->fire = fire;
  t->arg = arg;
  arm(t, L, after, 0);
  return t;
}

void *ms_timer_arg(const struct ms_timer *t) {
  return t->arg;
}

void ms_timer_cancel(struct ms_timer *t, lua_State *L) {
  disarm(t, L);
}

void ms_timers_cancel_all(struct ms_module *m) {
  while (m->timers) disarm(m->timers, m->L);
}

static double check_seconds(lua_State *L, int arg) {
  lua_Number s = luaL_checknumber(L, arg);
  luaL_argcheck(L, s >= 0 && s <= 1e9, arg, "seconds from 0 expected");
  return s;
}

/* core.timer(after, every, fn, ...): fn(...) after seconds, then every
 * seconds when every > 0; the timer, armed. */
static int l_timer(lua_State *L) {
  double after = check_seconds(L, 1), every = check_seconds(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  int nargs = lua_gettop(L) - 3;
  luaL_argcheck(L, nargs <= TIMER_MAX_ARGS, 3 + TIMER_MAX_ARGS + 1,
                "too many arguments for a timer");
  struct ms_timer *t = new_timer(L, ms_module_get(L), nargs + 1);
  for (int i = 0; i <= nargs; i++) {
    lua_pushvalue(L, 3 + i);
    lua_setiuservalue(L, -2, i + 1);
  }
  arm(t, L, after, every);
  return 1;
}

/* timer:cancel(): true when it was armed; it will not fire again. */
static int timer_cancel(lua_State *L) {
  lua_pushboolean(L, disarm(check_timer(L, 1), L));
  return 1;
}

/* timer:armed(): whether it will fire. */
static int timer_armed(lua_State *L) {
  lua_pushboolean(L, check_timer(L, 1)->ref != LUA_NOREF);
  return 1;
}

static int timer_gc(lua_State *L) {
  struct ms_timer *t = check_timer(L, 1);
  if (t->ref != LUA_NOREF) ev_timer_stop(t->m->loop, &t->w);   /* at
                                                    lua_close only */
  return 0;
}

static int timer_tostring(lua_State *L) {
  struct ms_timer *t = check_timer(L, 1);
  if (t->ref == LUA_NOREF)
    lua_pushfstring(L, "moonsocket.timer (not armed): %p", (void *)t);
  else if (t->w.repeat > 0)
    lua_pushfstring(L, "moonsocket.timer (armed, every %f s): %p",
                    (lua_Number)t->w.repeat, (void *)t);
  else
    lua_pushfstring(L, "moonsocket.timer (armed, in %f s): %p",
                    (lua_Number)ev_timer_remaining(t->m->loop, &t->w),
                    (void *)t);
  return 1;
}

/* ------------------------------------------------------------------ */
/* The waits of coroutine handlers                                     */
/* ------------------------------------------------------------------ */

/* core.running_handler(): the ws whose handler coroutine is running
 * here, or nil (the main thread, a coroutine of the app's own). */
static int l_running_handler(lua_State *L) {
  struct ms_conn *c = ms_module_get(L)->resuming;
  if (c && c->co == L) ms_push_conn(L, c);
  else lua_pushnil(L);
  return 1;
}

/* core.wait(): the running handler coroutine waits for core.wake. */
static int l_wait(lua_State *L) {
  struct ms_conn *c = ms_module_get(L)->resuming;
  if (!c || c->co != L)
    return luaL_error(L, "wait() works only in the coroutine of a "
                      "function handler");
  c->flags |= CF_CO_WAIT;
  return lua_yield(L, 0);
}

/* core.wake(ws, ...): resume ws's handler, waiting in core.wait, with
 * the values; false when it does not wait. */
static int l_wake(lua_State *L) {
  struct ms_conn *c = luaL_checkudata(L, 1, WS_MT);
  if (!c->co || !(c->flags & CF_CO_WAIT)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  int n = lua_gettop(L) - 1;
  c->flags &= ~CF_CO_WAIT;
  lua_xmove(L, c->co, n);
  ms_resume(c, n);
  lua_pushboolean(L, 1);
  return 1;
}

void ms_open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "cancel", timer_cancel }, { "armed", timer_armed }, { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", timer_gc }, { "__close", timer_cancel },
    { "__tostring", timer_tostring }, { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "timer", l_timer }, { "running_handler", l_running_handler },
    { "wait", l_wait }, { "wake", l_wake }, { NULL, NULL }
  };
  if (luaL_newmetatable(L, TIMER_MT)) {
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
