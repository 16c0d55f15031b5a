/* lhistory.c - topic history for Lua: core.history, core.history_read,
 * publishing to a topic with history and subscribing from a position */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "backplane.h"
#include "binding.h"
#include "frame.h"
#include "history.h"
#include "workers.h"

#define SIZE_MAX_HISTORY 10000000        /* messages per topic */
#define TTL_MAX (366.0 * 86400)          /* a year */

static struct ms_history *history_of(lua_State *L, struct ms_module *m) {
  if (!m->history && !(m->history = ms_history_new()))
    luaL_error(L, "out of memory");
  return m->history;
}

/* ------------------------------------------------------------------ */
/* Positions                                                           */
/* ------------------------------------------------------------------ */

static void push_position(lua_State *L, const struct ms_hist_pos *pos) {
  char epoch[17];
  lua_createtable(L, 0, 2);
  snprintf(epoch, sizeof epoch, "%016" PRIx64, pos->epoch);
  lua_pushstring(L, epoch);
  lua_setfield(L, -2, "epoch");
  lua_pushinteger(L, (lua_Integer)pos->offset);
  lua_setfield(L, -2, "offset");
}

/* A position at idx: { epoch = "16 hex digits", offset = n } or the
 * envelope's text "epoch:offset".  Raises naming what when it is not. */
static void check_position(lua_State *L, int idx, int arg, const char *what,
                           struct ms_hist_pos *pos) {
  size_t len;
  const char *s;
  lua_Integer offset = -1;
  int ok = 0;
  if (lua_type(L, idx) == LUA_TSTRING) {
    s = lua_tolstring(L, idx, &len);
    const char *colon = memchr(s, ':', len);
    uint64_t v;
    /* exactly the envelope's digits: strtoull would take blanks and a
     * sign, and wrap "-18446744073709551615" around to 1 */
    if (colon && ms_history_parse_epoch(s, (size_t)(colon - s), &pos->epoch)
        && ms_history_parse_offset(colon + 1, len - (size_t)(colon + 1 - s),
                                   &v)) {
      ok = 1;
      offset = (lua_Integer)v;
    }
  } else if (lua_type(L, idx) == LUA_TTABLE) {
    /* a string, not a number lua_tolstring would turn into one */
    ok = lua_getfield(L, idx, "epoch") == LUA_TSTRING;
    s = lua_tolstring(L, -1, &len);
    ok = ok && ms_history_parse_epoch(s, len, &pos->epoch);
    lua_getfield(L, idx, "offset");
    int isint;
    offset = lua_tointegerx(L, -1, &isint);
    ok = ok && isint;
    lua_pop(L, 2);
  }
  if (!ok || offset < 0)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a position "
                  "{ epoch = \"16 hex digits\", offset = n } or "
                  "\"epoch:offset\"", what));
  pos->offset = (uint64_t)offset;
}

/* ------------------------------------------------------------------ */
/* core.history, core.history_limit                                    */
/* ------------------------------------------------------------------ */

/* core.history(pattern, size, ttl): keep history for pattern */
static int l_history(lua_State *L) {
  struct ms_module *m = ms_module_get(L);
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len > 0, 1, "empty topic name");
  const char *star = memchr(name, '*', len);
  luaL_argcheck(L, !star || star == name + len - 1, 1,
                "'*' may only end a pattern");
  lua_Integer size = luaL_checkinteger(L, 2);
  luaL_argcheck(L, size >= 1 && size <= SIZE_MAX_HISTORY, 2,
                "size must be an integer from 1 to 10000000");
  lua_Number ttl = luaL_checknumber(L, 3);
  luaL_argcheck(L, ttl >= 0 && ttl <= TTL_MAX, 3,
                "ttl must be a number of seconds from 0 to 31622400");
  /* every worker and the master must agree on the topics with history:
   * they are set before the fork */
  if (m->worker || m->workers)
    luaL_error(L, "app:history must be called before moonsocket.run() "
               "when serving with workers");
  if (ms_history_configure(history_of(L, m), name, len, (size_t)size,
                           ttl) < 0)
    return luaL_error(L, "out of memory");
  return 0;
}

/* core.history_limit(bytes): max_history_bytes of this process */
static int l_history_limit(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 1024 || n > (lua_Integer)1 << 40)
    luaL_error(L, "option 'max_history_bytes' must be an integer from 1024 "
               "to 1099511627776");
  struct ms_history *h = history_of(L, ms_module_get(L));
  h->max_bytes = (size_t)n;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Publishing                                                          */
/* ------------------------------------------------------------------ */

/* The functions of moonsocket.runtime's side of a worker's publish
 * (core.publish_hooks): await(request, ws) decides whether the caller
 * waits for the position and returns what the publish returns; done(
 * request, n, position) says it came (n nil: it failed). */
#define AWAIT_HOOK "moonsocket.core.publish_await"
#define DONE_HOOK "moonsocket.core.publish_done"
/* And of a subscribe that reads Redis first: recover_await(request)
 * waits when it can; recover_done(request) says the read is done. */
#define RECOVER_AWAIT_HOOK "moonsocket.core.recover_await"
#define RECOVER_DONE_HOOK "moonsocket.core.recover_done"

static int publish_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return lua_gettop(L) - (int)ctx;
}

/* The caller of a publish numbered request waits for its position
 * when it can (moonsocket.runtime decides), else gets 0 at once. */
static int await_position(lua_State *L, uint64_t request,
                          struct ms_conn *skip) {
  int base = lua_gettop(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, AWAIT_HOOK) != LUA_TFUNCTION) {
    lua_pushinteger(L, 0);             /* no runtime: nobody waits */
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)request);
  if (skip) ms_push_conn(L, skip);
  else lua_pushnil(L);
  lua_callk(L, 2, LUA_MULTRET, base, publish_k);
  return publish_k(L, LUA_OK, base);
}

int ms_history_publish_lua(lua_State *L, struct ms_module *m,
                           const struct ms_hist_pattern *p,
                           const char *name, size_t nlen, unsigned op,
                           const char *data, size_t len,
                           struct ms_conn *skip) {
  struct ms_hist_pos pos;
  long n;
  uint64_t request;
  if (m->backplane) {
    /* Redis gives the position and hands the message to every node,
     * this one too: it is delivered here when it comes back, in Redis's
     * order (rhistory.c).  The caller waits as for the master's. */
    switch (ms_backplane_publish_history(m->backplane, p, name, nlen, op,
                                         data, len, skip, &request)) {
    case MS_BP_SENT:
      return await_position(L, request, skip);
    case MS_BP_UNAVAILABLE:
      return ms_push_fail(L, "redis is unavailable", "EUNAVAILABLE");
    case MS_BP_DROPPED:
      return ms_push_fail(L, "dropped: max_pending exceeded",
                          "EBACKPRESSURE");
    case MS_BP_NO_MEMORY:
      return luaL_error(L, "out of memory");
    case MS_BP_CLOSED:
      break;                    /* kept here, as without a backplane */
    }
  }
  if (m->link) {
    /* the master gives the position; the message comes back here and
     * is delivered then, in the master's order.  Nothing blocks: the
     * runtime lets the caller wait, when it can, for ms_event_published */
    if (ms_workers_publish_history(m, name, nlen, op, data, len, skip,
                                   &request) < 0)
      return ms_push_fail(L, "the master process did not give a position",
                          "EUNAVAILABLE");
    return await_position(L, request, skip);
  }
  n = ms_history_publish(m->history, &m->topics, p, name, nlen,
                         ev_now(m->loop), op, data, len, 1, &pos, skip);
  if (n < 0) return luaL_error(L, "out of memory");
  lua_pushinteger(L, n);
  push_position(L, &pos);
  return 2;
}

void ms_event_published(struct ms_module *m, uint64_t request,
                        long reached, const struct ms_hist_pos *pos,
                        const char *why) {
  lua_State *L = m->L;
  if (lua_getfield(L, LUA_REGISTRYINDEX, DONE_HOOK) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return;
  }
  lua_pushinteger(L, (lua_Integer)request);
  if (pos) {
    lua_pushinteger(L, reached);
    push_position(L, pos);
    lua_pushnil(L);
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
    if (why) lua_pushstring(L, why);
    else lua_pushnil(L);
  }
  ms_pcall(NULL, L, 4, 0, "publish");
}

void ms_event_recovered(struct ms_module *m, uint64_t request) {
  lua_State *L = m->L;
  if (lua_getfield(L, LUA_REGISTRYINDEX, RECOVER_DONE_HOOK) !=
      LUA_TFUNCTION) {
    lua_pop(L, 1);
    return;
  }
  lua_pushinteger(L, (lua_Integer)request);
  ms_pcall(NULL, L, 1, 0, "recover");
}

/* core.publish_hooks(await, done, recover_await, recover_done): see
 * AWAIT_HOOK and RECOVER_AWAIT_HOOK */
static int l_publish_hooks(lua_State *L) {
  for (int i = 1; i <= 4; i++) luaL_checktype(L, i, LUA_TFUNCTION);
  lua_settop(L, 4);
  lua_setfield(L, LUA_REGISTRYINDEX, RECOVER_DONE_HOOK);
  lua_setfield(L, LUA_REGISTRYINDEX, RECOVER_AWAIT_HOOK);
  lua_setfield(L, LUA_REGISTRYINDEX, DONE_HOOK);
  lua_setfield(L, LUA_REGISTRYINDEX, AWAIT_HOOK);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Subscribing from a position                                         */
/* ------------------------------------------------------------------ */

/* What await_answer did. */
enum { NOT_SENT, ANSWER_HERE, ANSWER_LATER };

/* Wait for the answer to request (a read of Redis, a sync with the
 * master) when the caller can, then call again; a caller that cannot
 * wait calls again at once (ANSWER_HERE), unless later (a stack index,
 * 0: none) is a function: the runtime then calls it when the answer
 * has come (ANSWER_LATER).  NOT_SENT without the runtime's hooks. */
static int await_answer(lua_State *L, uint64_t request,
                        lua_KFunction again, int later) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, RECOVER_AWAIT_HOOK) !=
      LUA_TFUNCTION) {
    lua_pop(L, 1);
    return NOT_SENT;
  }
  lua_pushinteger(L, (lua_Integer)request);
  if (later) lua_pushvalue(L, later);
  else lua_pushnil(L);
  lua_callk(L, 2, 1, 0, again);
  int deferred = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return deferred ? ANSWER_LATER : ANSWER_HERE;
}

/* Read what Redis keeps of name after since into this process's
 * history, and wait for it when the caller can, then call again: what
 * await_answer did. */
static int recover_from_redis(lua_State *L, struct ms_module *m,
                              const struct ms_hist_pattern *p,
                              const char *name, size_t len,
                              const struct ms_hist_pos *since,
                              lua_KFunction again, int later) {
  uint64_t epoch, first, next, after = since->offset, request;
  /* ahead of what is kept here: read from there, this process is
   * behind */
  if (ms_history_span(m->history, name, len, ev_now(m->loop), &epoch,
                      &first, &next) && epoch == since->epoch &&
      next - 1 < after)
    after = next - 1;
  if (ms_backplane_fetch_history(m->backplane, p, name, len, after,
                                 &request) != MS_BP_SENT)
    return NOT_SENT;
  return await_answer(L, request, again, later);
}

/* A worker asks the master for everything sent so far and name's
 * position, beginning its epoch when nothing was published to it; the
 * caller waits when it can (the loop serves on), then calls again: what
 * await_answer did. */
static int sync_with_master(lua_State *L, struct ms_module *m,
                            const char *name, size_t len,
                            lua_KFunction again, int later) {
  uint64_t request;
  if (ms_workers_sync(m, name, len, &request) < 0) return NOT_SENT;
  return await_answer(L, request, again, later);
}

/* ws:subscribe(topic, { since = position }) for topic with history: the
 * messages after since are queued, then the socket subscribes; nothing
 * is delivered in between, so nothing is missed or sent twice.  What
 * this process lacks it first asks for (Redis, the master) and, in a
 * caller that may wait, waits for without blocking the loop: again
 * (NULL the second time) then runs the subscribe once more.  A caller
 * that cannot wait but gave later (a function at that index) has it
 * called once the answer is here: nothing is pushed then (0). */
int ms_history_subscribe_lua(lua_State *L, struct ms_conn *c,
                             const char *name, size_t len, int opts,
                             lua_KFunction again, int later) {
  struct ms_module *m = c->server->module;
  struct ms_hist_pos since, current;
  int asked = NOT_SENT;
  int has_since = lua_getfield(L, opts, "since") != LUA_TNIL;
  if (has_since) check_position(L, -1, opts - 1, "since", &since);
  lua_pop(L, 1);
  const struct ms_hist_pattern *p =
    m->history ? ms_history_match(m->history, name, len) : NULL;
  if (!p)
    return luaL_error(L, "topic '%s' keeps no history (see app:history)",
                      name);
  if (ms_topic_is_subscribed(c, name, len)) {
    ms_history_current(m->history, name, len, ev_now(m->loop), &current);
    lua_pushboolean(L, 0);
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "recovered");
    push_position(L, &current);
    lua_setfield(L, -2, "position");
    return 2;
  }
  struct ms_shared **list = NULL;
  size_t n = 0;
  int recovered = 0;
  if (has_since && m->backplane && !ms_backplane_connected(m->backplane)) {
    /* what others published meanwhile cannot be known: kept here is
     * nothing (forgotten when Redis went away) */
    ms_history_current(m->history, name, len, ev_now(m->loop), &current);
  } else if (has_since) {
    recovered = ms_history_since(m->history, name, len, ev_now(m->loop),
                                 &since, &list, &n, &current);
    if (recovered < 0) return luaL_error(L, "out of memory");
    /* not kept here (this process began later, or is behind): what
     * Redis keeps, in a caller that may wait; then once more */
    if (recovered == 0 && m->backplane && again)
      asked = recover_from_redis(L, m, p, name, len, &since, again, later);
  } else if (!ms_history_current(m->history, name, len, ev_now(m->loop),
                                 &current) && m->backplane && again &&
             ms_backplane_connected(m->backplane)) {
    /* nothing of the topic here: Redis's position (the read begins the
     * topic's epoch when nothing was published to it), then once more */
    uint64_t request;
    if (ms_backplane_fetch_history(m->backplane, p, name, len,
                                   UINT64_MAX >> 1, &request) ==
        MS_BP_SENT)
      asked = await_answer(L, request, again, later);
  }
  /* a worker: since may be a position it has yet to get from the
   * master, or the topic has no position here yet.  It asks the master
   * and, never blocking its loop, looks again once the answer is here;
   * a caller that cannot wait goes on with what this worker has */
  if (m->link && !m->backplane && again &&
      (has_since ? recovered == 0 : current.epoch == 0))
    asked = sync_with_master(L, m, name, len, again, later);
  /* (asked only when nothing was listed: a wait holds no C memory) */
  if (asked == ANSWER_HERE) return again(L, LUA_OK, 0);
  if (asked == ANSWER_LATER) return 0;
  /* a topic nothing was published to yet: where this process gives the
   * positions, its epoch begins now, so the subscriber has a position
   * to come back from (a worker asked the master above, a process with
   * Redis read it; a callback handler, which cannot wait for them, gets
   * epoch 0 until this process has the position, unless it gave ready:
   * then later ran when the answer came) */
  if (current.epoch == 0 && !m->backplane && !m->worker && !m->workers &&
      ms_history_open(m->history, name, len, ev_now(m->loop), &current) < 0)
    return luaL_error(L, "out of memory");
  enum ms_send_status st = MS_SENT;
  size_t i = 0;
  for (; i < n && c->state == CS_OPEN; i++) {
    st = ms_conn_send_frame(c, list[i]->bytes, list[i]->len, list[i]);
    if (st != MS_SENT && st != MS_QUEUED) break;
  }
  for (size_t j = 0; j < n; j++) ms_shared_release(list[j]);
  free(list);
  if (c->state != CS_OPEN) {
    if (st == MS_DROPPED_BACKPRESSURE)
      return ms_push_fail(L, "dropped: max_backpressure exceeded",
                          "EBACKPRESSURE");
    return ms_push_fail(L, MS_ECLOSED_REFUSED, "ECLOSED");
  }
  if (ms_topic_subscribe(&m->topics, c, name, len) < 0)
    return luaL_error(L, "out of memory");
  lua_pushboolean(L, 1);
  lua_createtable(L, 0, 2);
  lua_pushboolean(L, recovered > 0);
  lua_setfield(L, -2, "recovered");
  push_position(L, &current);
  lua_setfield(L, -2, "position");
  return 2;
}

/* ------------------------------------------------------------------ */
/* core.history_read                                                   */
/* ------------------------------------------------------------------ */

static void push_entry(lua_State *L, struct ms_module *m,
                       const struct ms_hist_entry *e) {
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)e->offset);
  lua_setfield(L, -2, "offset");
  lua_pushlstring(L, (const char *)e->frame->bytes + e->data_at,
                  e->frame->len - e->data_at);
  lua_setfield(L, -2, "data");
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->opcode == WS_OP_BINARY
                                    ? m->ref_binary : m->ref_text);
  lua_setfield(L, -2, "kind");
}

/* core.history_read(topic, since, limit, reverse) -> list, position: the
 * messages kept after since (a position, or nil for all), oldest first
 * (reverse: newest first), at most limit (0: all); nil, message,
 * "EEPOCH" when since is of another epoch. */
static int l_history_read(lua_State *L) {
  struct ms_module *m = ms_module_get(L);
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len > 0, 1, "empty topic name");
  struct ms_hist_pos since = { 0, 0 }, current;
  int has_since = !lua_isnoneornil(L, 2);
  if (has_since) check_position(L, 2, 2, "since", &since);
  lua_Integer limit = luaL_optinteger(L, 3, 0);
  luaL_argcheck(L, limit >= 0, 3, "limit must be 0 or more");
  int reverse = lua_toboolean(L, 4);
  if (!m->history || !ms_history_match(m->history, name, len))
    return luaL_error(L, "topic '%s' keeps no history (see app:history)",
                      name);
  ms_history_current(m->history, name, len, ev_now(m->loop), &current);
  if (has_since && since.epoch != current.epoch)
    return ms_push_fail(L, "the position is of another epoch", "EEPOCH");
  uint64_t epoch;
  struct ms_hist_entry *first =
    ms_history_first(m->history, name, len, ev_now(m->loop), since.offset,
                     &epoch);
  size_t count = 0;
  for (struct ms_hist_entry *e = first; e; e = e->next) count++;
  size_t take = limit > 0 && (size_t)limit < count ? (size_t)limit : count;
  lua_createtable(L, (int)take, 0);
  if (!reverse) {
    size_t i = 0;
    for (struct ms_hist_entry *e = first; e && i < take; e = e->next) {
      push_entry(L, m, e);
      lua_rawseti(L, -2, (lua_Integer)++i);
    }
  } else {
    /* newest first: the last `take` of them, from the end */
    size_t skip = count - take, i = 0;
    struct ms_hist_entry *e = first;
    while (skip--) e = e->next;
    for (; e; e = e->next) {
      push_entry(L, m, e);
      lua_rawseti(L, -2, (lua_Integer)(take - i++));
    }
  }
  push_position(L, &current);
  return 2;
}

void ms_open_history(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "history", l_history }, { "history_limit", l_history_limit },
    { "history_read", l_history_read },
    { "publish_hooks", l_publish_hooks }, { NULL, NULL }
  };
  luaL_setfuncs(L, funcs, 0);
}
