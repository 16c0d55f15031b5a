/* lcall.c - calling into Lua: every call goes through one protected
 * call with a traceback; handler callbacks; resuming coroutine handlers */
#define _GNU_SOURCE
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "binding.h"
#include "frame.h"
#include "log.h"

/* ------------------------------------------------------------------ */
/* Timing the calls (metrics.h)                                        */
/* ------------------------------------------------------------------ */

/* Whether to time this call: one in MS_CALLBACK_SAMPLE is, its start
 * read into *t0. */
static inline int time_this(struct ms_module *m, struct timespec *t0) {
  if (m->untimed) {
    m->untimed--;
    return 0;
  }
  m->untimed = MS_CALLBACK_SAMPLE - 1;
  clock_gettime(CLOCK_MONOTONIC, t0);
  return 1;
}

static void timed(struct ms_module *m, int kind, const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  int64_t ns = (int64_t)(t1.tv_sec - t0->tv_sec) * 1000000000 +
               (t1.tv_nsec - t0->tv_nsec);
  ms_metrics_callback(m->metrics, kind, ns > 0 ? (uint64_t)ns : 0);
}

/* What a call is for, by the name ms_pcall is given; -1: not a
 * handler's (the userdata accept makes) */
static int kind_of(const char *what) {
  static const struct { const char *what; int kind; } kinds[] = {
    { "message handler", MS_CB_MESSAGE }, { "open handler", MS_CB_OPEN },
    { "close handler", MS_CB_CLOSE }, { "drain handler", MS_CB_DRAIN },
    { "pong handler", MS_CB_PONG }, { "request handler", MS_CB_REQUEST },
    { "timer callback", MS_CB_TIMER }, { "accept", -1 },
  };
  for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
    if (strcmp(what, kinds[i].what) == 0) return kinds[i].kind;
  return MS_CB_OTHER;
}

/* ------------------------------------------------------------------ */
/* Calls                                                               */
/* ------------------------------------------------------------------ */

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* The call of ms_pcall, timed in m's figures when m is given. */
static int pcall(struct ms_module *m, struct ms_server *s, lua_State *L,
                 int nargs, int nresults, const char *what) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  struct timespec t0;
  int rc;
  if (m && time_this(m, &t0)) {
    int kind = kind_of(what);
    rc = lua_pcall(L, nargs, nresults, base);
    if (kind >= 0) timed(m, kind, &t0);
    else m->untimed = 0;                /* the next call, then */
  } else {
    rc = lua_pcall(L, nargs, nresults, base);
  }
  lua_remove(L, base);
  if (rc != LUA_OK) {
    ms_log(s, MS_LOG_ERROR, "error in %s: %s", what, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return rc;
}

/* Call the function below nargs arguments; log an error with its
 * traceback.  Returns 0 on success.  Timed when s is given. */
int ms_pcall(struct ms_server *s, lua_State *L, int nargs,
             int nresults, const char *what) {
  return pcall(s ? s->module : NULL, s, L, nargs, nresults, what);
}

int ms_pcall_timed(struct ms_module *m, lua_State *L, int nargs,
                   int nresults, const char *what) {
  return pcall(m, NULL, L, nargs, nresults, what);
}

/* Protected: call_field(ws, name, ...) calls handler[name](ws, ...)
 * when the handler has that field through its metatable, whose
 * metamethods may raise. */
static int call_field(lua_State *L) {
  lua_getiuservalue(L, 1, UV_HANDLER);
  if (lua_getfield(L, -1, lua_tostring(L, 2)) == LUA_TNIL) return 0;
  lua_replace(L, 2);               /* ws, function, args..., handler */
  lua_pop(L, 1);
  lua_pushvalue(L, 1);
  lua_copy(L, 2, 1);
  lua_copy(L, -1, 2);              /* function, ws, args... */
  lua_pop(L, 1);
  lua_call(L, lua_gettop(L) - 1, 0);
  return 0;
}

/* Push what calls the callback name of c's handler table: the function
 * and ws, or call_field, ws and name.  Returns how many arguments are
 * pushed after the function (1 or 2), 0 when there is no callback. */
int ms_push_callback(lua_State *L, struct ms_conn *c, const char *name) {
  ms_push_conn(L, c);
  if (lua_getiuservalue(L, -1, UV_HANDLER) != LUA_TTABLE) {
    lua_pop(L, 2);
    return 0;
  }
  if (name[0] == 'm')                       /* "message": made once */
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->server->module->ref_message);
  else
    lua_pushstring(L, name);
  if (lua_rawget(L, -2) != LUA_TNIL) {     /* the common case */
    lua_remove(L, -2);
    lua_insert(L, -2);                      /* function, ws */
    return 1;
  }
  lua_pop(L, 1);
  if (!lua_getmetatable(L, -1)) {
    lua_pop(L, 2);
    return 0;
  }
  lua_pop(L, 2);
  lua_pushcfunction(L, call_field);
  lua_insert(L, -2);                        /* call_field, ws */
  lua_pushstring(L, name);
  return 2;
}

/* Call handler.message(ws, data, kind) with data as a string: the
 * callback form's message event, on every message, so it pushes in
 * order and moves values with lua_copy, never rotating the stack.
 * Below the call: the traceback, ws, and for text, in the handler
 * table's slot, a copy of the string that anchors it while the handler
 * runs, whatever it does with its argument (see s->validated; binary
 * is not checked on its way out).  Returns 0 when called (or there is
 * no callback), else the call's error, logged. */
int ms_call_message(struct ms_conn *c, const uint8_t *data, size_t len,
                    unsigned opcode) {
  struct ms_server *s = c->server;
  struct ms_module *m = s->module;
  lua_State *L = m->L;
  int base = lua_gettop(L);
  lua_pushcfunction(L, traceback);                  /* base + 1 */
  ms_push_conn(L, c);                               /* base + 2: ws */
  if (lua_getiuservalue(L, base + 2, UV_HANDLER) != LUA_TTABLE) {
    lua_settop(L, base);
    return 0;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, m->ref_message);
  if (lua_rawget(L, base + 3) == LUA_TNIL) {        /* base + 4 */
    /* none in the table itself: through its metatable, if any */
    lua_settop(L, base);
    int n = ms_push_callback(L, c, "message");
    if (!n) return 0;
    const char *msg = ms_push_message(L, c, data, len);
    lua_insert(L, -(n + 2));
    lua_pushvalue(L, -(n + 2));
    ms_push_kind(L, m, opcode);
    if (opcode == WS_OP_TEXT) {
      s->validated = msg;
      s->validated_len = len;
    }
    int rc = ms_pcall(s, L, n + 2, 0, "message handler");
    s->validated = NULL;
    lua_settop(L, base);
    return rc;
  }
  lua_pushvalue(L, base + 2);                       /* base + 5: ws */
  const char *msg = ms_push_message(L, c, data, len);
  if (opcode == WS_OP_TEXT) {
    lua_copy(L, base + 6, base + 3);  /* the anchor, over the handler */
    s->validated = msg;
    s->validated_len = len;
  }
  ms_push_kind(L, m, opcode);                       /* base + 7 */
  struct timespec t0;
  int rc;
  if (time_this(m, &t0)) {
    rc = lua_pcall(L, 3, 0, base + 1);
    timed(m, MS_CB_MESSAGE, &t0);
  } else {
    rc = lua_pcall(L, 3, 0, base + 1);
  }
  s->validated = NULL;
  if (rc != LUA_OK)
    ms_log(s, MS_LOG_ERROR, "error in message handler: %s",
           lua_tostring(L, -1));
  lua_settop(L, base);
  return rc;
}

void ms_handler_failed(struct ms_conn *c) {
  if (c->state == CS_OPEN)
    ms_conn_close(c, 1011, "internal error", 14, WHY_ERROR);
}

/* "text" or "binary", from strings made once (no hashing per message) */
void ms_push_kind(lua_State *L, const struct ms_module *m,
                      unsigned opcode) {
  lua_rawgeti(L, LUA_REGISTRYINDEX,
              opcode == WS_OP_TEXT ? m->ref_text : m->ref_binary);
}

/* Resume the coroutine of c with the nargs values on its stack. */
void ms_resume(struct ms_conn *c, int nargs) {
  struct ms_module *m = c->server->module;
  lua_State *L = m->L, *co = c->co;
  struct ms_conn *was = m->resuming;       /* resumes nest */
  int nres;
  m->resuming = c;
  struct timespec t0;
  int rc;
  if (time_this(m, &t0)) {
    rc = lua_resume(co, L, nargs, &nres);
    timed(m, MS_CB_COROUTINE, &t0);
  } else {
    rc = lua_resume(co, L, nargs, &nres);
  }
  m->resuming = was;
  if (rc == LUA_YIELD) {
    if (nres) lua_pop(co, nres);     /* receive() and send() yield none */
  } else {
    if (rc != LUA_OK) {
      const char *msg = lua_tostring(co, -1);
      luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
      ms_log(c->server, MS_LOG_ERROR, "error in handler: %s",
             lua_tostring(L, -1));
      lua_pop(L, 1);
      ms_handler_failed(c);
    } else if (c->state == CS_OPEN) {
      ms_conn_close(c, 1000, "", 0, WHY_LOCAL);  /* handler returned */
    }
    c->co = NULL;
    c->flags &= ~(CF_CO_RECV | CF_CO_SEND | CF_CO_WAIT);
    if (c->state != CS_CLOSED && (c->flags & CF_PAUSED))
      ms_conn_resume_reading(c);        /* read the peer's close frame */
    return;
  }
  if (!(c->flags & (CF_CO_RECV | CF_CO_SEND | CF_CO_WAIT))) {
    /* nothing will resume it: a yield outside receive(), send() and
     * moonsocket's waits (sleep, join, a queue's get) */
    ms_log(c->server, MS_LOG_ERROR, "error in handler: it yielded outside "
           "receive(), send() and moonsocket's waits; the connection is "
           "closed");
    c->co = NULL;
    ms_handler_failed(c);
    return;
  }
  if (!(c->flags & CF_CO_RECV)) ms_conn_pause(c);
}
