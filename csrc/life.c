/* life.c - the life of servers and of the module: starting a server's
 * watchers, the sweep's pace, closing, graceful shutdown, signals, and
 * running the loop */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>

#include <lauxlib.h>

#include "alloc.h"
#include "backplane.h"
#include "client.h"
#include "events.h"
#include "life.h"
#include "log.h"
#include "server.h"
#include "workers.h"

/* While a server closes, how often its half-closed connections are
 * asked whether their peers have acknowledged all we sent (s). */
#define DELIVERED_EVERY 0.025

/* ------------------------------------------------------------------ */
/* Servers                                                            */
/* ------------------------------------------------------------------ */

static double sweep_interval(const struct ms_options *o) {
  double t = 1.0;
  if (o->idle_timeout > 0 && o->idle_timeout / 4 < t) t = o->idle_timeout / 4;
  if (o->keep_alive_timeout > 0 && o->keep_alive_timeout / 4 < t)
    t = o->keep_alive_timeout / 4;
  if (o->close_timeout / 4 < t) t = o->close_timeout / 4;
  if (o->message_timeout > 0 && o->message_timeout / 4 < t)
    t = o->message_timeout / 4;
  if (o->handshake_timeout / 4 < t) t = o->handshake_timeout / 4;
  if (o->request_timeout / 4 < t) t = o->request_timeout / 4;
  if (o->body_timeout / 4 < t) t = o->body_timeout / 4;
  if (o->send_window_timeout / 4 < t) t = o->send_window_timeout / 4;
  if (o->keep_alive_interval > 0 && o->keep_alive_interval / 4 < t)
    t = o->keep_alive_interval / 4;
  return t < 0.005 ? 0.005 : t;
}

/* The sweep of s runs often enough for the timeouts of o too (a route's
 * options, a client's). */
void ms_server_sweep_for(struct ms_server *s, const struct ms_options *o) {
  double every = sweep_interval(o);
  if (!ev_is_active(&s->sweep) || every < s->sweep.repeat) {
    s->sweep.repeat = every;
    ev_timer_again(s->module->loop, &s->sweep);
  }
}

/* Before the loop sleeps: each pending connection reads what it left
 * for later and flushes its queue (one write per connection per loop
 * iteration), and the closed ones are released, outside the callbacks
 * that closed them. */
void ms_server_prepare_cb(struct ev_loop *loop, ev_prepare *w,
                          int revents) {
  struct ms_server *s = (struct ms_server *)((char *)w -
                         offsetof(struct ms_server, prepare));
  (void)revents;
  struct ms_conn *c;
  while ((c = s->pending)) {
    s->pending = c->next_pending;
    c->flags &= ~CF_IN_PENDING;
    if (c->state == CS_CLOSED) {
      c->flags |= CF_IN_PENDING;
      c->next_pending = s->released;
      s->released = c;
      continue;
    }
    ms_conn_service(c);
  }
  while ((c = s->released)) {
    s->released = c->next_pending;
    ms_event_release(c);
  }
  /* no work left: the loop prepares no more until some comes (a
   * connection marked pending or released starts it again) */
  if (!s->pending && !s->released && !s->closing &&
      !s->module->shutting_down)
    ev_prepare_stop(loop, w);
  if (s->closing || s->module->shutting_down)
    ms_module_check_done(s->module);
}

/* Every timeout of every connection, on one timer per server (no timer
 * per connection); accepting again after running out of descriptors. */
void ms_server_sweep_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  struct ms_server *s = (struct ms_server *)((char *)w -
                         offsetof(struct ms_server, sweep));
  (void)revents;
  double now = ev_now(loop);
  ms_metrics_sample(s->module);             /* heap, loop iterations */
  void *pool;                     /* the runner's allocator, when it is */
  if (lua_getallocf(s->module->L, &pool) == ms_lua_alloc)
    ms_lua_alloc_idle(pool, now);
  if (s->listener.fd >= 0 && !ev_is_active(&s->listener) && !s->closing)
    ev_io_start(loop, &s->listener);        /* accepts were paused */
  /* walk a snapshot of the count: aborting unlinks the current node */
  struct ms_conn *c = s->conns;
  size_t n = s->nconns;
  for (size_t i = 0; i < n && s->conns; i++) {
    struct ms_conn *next = c->next;
    ms_conn_sweep(c, now);
    c = next;
  }
}

/* While closing: a connection that has half-closed waits for the
 * peer's end, so that a reset does not destroy what we sent; once the
 * peer has it all, our FIN included, and sends nothing more, nothing
 * can be lost, and a peer that never closes its end must not hold the
 * shutdown for close_timeout (ms_conn_close_delivered).  Outside a
 * shutdown nothing runs this: lingering for the peer's end is right
 * there (RFC 6455 section 7.1.1). */
static void server_delivered_cb(struct ev_loop *loop, ev_timer *w,
                                int revents) {
  struct ms_server *s = (struct ms_server *)((char *)w -
                         offsetof(struct ms_server, delivered));
  (void)loop;
  (void)revents;
  struct ms_conn *c = s->conns;
  size_t n = s->nconns;
  for (size_t i = 0; i < n && s->conns; i++) {
    struct ms_conn *next = c->next;  /* closing unlinks c */
    ms_conn_close_delivered(c);
    c = next;
  }
}

static void server_finish(struct ms_server *s) {
  struct ms_module *m = s->module;
  lua_State *L = m->L;
  ev_prepare_stop(m->loop, &s->prepare);
  ev_timer_stop(m->loop, &s->sweep);
  ev_timer_stop(m->loop, &s->shutdown_timer);
  ev_timer_stop(m->loop, &s->delivered);
  free(s->rbuf);
  s->rbuf = NULL;
  ms_server_free_chunks(s);
  deflate_buf_free(&s->zbuf);
  for (struct ms_server **p = &m->servers; *p; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      break;
    }
  luaL_unref(L, LUA_REGISTRYINDEX, s->on_request);
  luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->ws_routes);
  s->on_request = s->ref = s->ws_routes = LUA_NOREF;
}

static void server_shutdown_expired(struct ev_loop *loop, ev_timer *w,
                                    int rev) {
  struct ms_server *s = (struct ms_server *)((char *)w -
                         offsetof(struct ms_server, shutdown_timer));
  (void)rev;
  while (s->conns) ms_conn_abort(s->conns, 1006);
  ev_feed_event(loop, &s->prepare, EV_PREPARE);
}

void ms_server_start(struct ms_server *s) {
  struct ms_module *m = s->module;
  ev_prepare_init(&s->prepare, ms_server_prepare_cb);
  ev_prepare_start(m->loop, &s->prepare);
  double every = sweep_interval(&s->opts);
  ev_timer_init(&s->sweep, ms_server_sweep_cb, every, every);
  ev_timer_start(m->loop, &s->sweep);
  ev_init(&s->shutdown_timer, server_shutdown_expired);
  ev_timer_init(&s->delivered, server_delivered_cb, DELIVERED_EVERY,
                DELIVERED_EVERY);
  s->next = m->servers;
  m->servers = s;
}

void ms_server_close(struct ms_server *s) {
  if (s->closing) return;
  s->closing = 1;
  ms_server_stop_accepting(s);
  ev_timer_start(s->module->loop, &s->delivered);
  struct ms_conn *c = s->conns;
  for (size_t i = 0, n = s->nconns; i < n && c; i++) {
    struct ms_conn *next = c->next;
    if (c->state == CS_OPEN)
      ms_conn_close(c, 1001, "server shutting down", 20, WHY_SHUTDOWN);
    else
      ms_conn_end_http(c);
    c = next;
  }
  ev_feed_event(s->module->loop, &s->prepare, EV_PREPARE);
}

/* Close gracefully: what is left after timeout seconds is cut off. */
void ms_server_shutdown(struct ms_server *s, double timeout) {
  ms_server_close(s);
  if (s->rbuf && !ev_is_active(&s->shutdown_timer)) {
    ev_timer_set(&s->shutdown_timer, timeout, 0);
    ev_timer_start(s->module->loop, &s->shutdown_timer);
  }
}

/* Client connections still closing (moonsocket.connect's). */
static int clients_open(const struct ms_module *m) {
  return m->client && m->client->conns;
}

void ms_module_check_done(struct ms_module *m) {
  struct ms_server *s = m->servers, *next;
  for (; s; s = next) {
    next = s->next;
    if (s->closing && s->nconns == 0 && !s->pending && !s->released)
      server_finish(s);
  }
  /* the last server is gone: Redis must not keep the loop going */
  if (!m->servers) ms_backplane_close_module(m);
  if (m->shutting_down && !m->servers && !clients_open(m)) {
    ev_timer_stop(m->loop, &m->shutdown_timer);
    if (m->running) ev_break(m->loop, EVBREAK_ALL);
  }
}

/* ------------------------------------------------------------------ */
/* The module                                                         */
/* ------------------------------------------------------------------ */

static void shutdown_expired(struct ev_loop *loop, ev_timer *w, int rev) {
  struct ms_module *m = (struct ms_module *)((char *)w -
                         offsetof(struct ms_module, shutdown_timer));
  (void)loop;
  (void)rev;
  for (struct ms_server *s = m->servers; s; s = s->next)
    while (s->conns) ms_conn_abort(s->conns, 1006);
  while (clients_open(m)) ms_conn_abort(m->client->conns, 1006);
  while (m->client && m->client->conns)
    ms_conn_abort(m->client->conns, 1006);
  for (struct ms_server *s = m->servers; s; s = s->next)
    ev_feed_event(m->loop, &s->prepare, EV_PREPARE);
  if (!m->servers && m->running) ev_break(m->loop, EVBREAK_ALL);
}

void ms_module_init_watchers(struct ms_module *m) {
  ev_init(&m->shutdown_timer, shutdown_expired);
  ms_log_init(m);
}

void ms_module_stop_watchers(struct ms_module *m) {
  ms_log_flush(m);
  if (ev_is_active(&m->shutdown_timer))
    ev_timer_stop(m->loop, &m->shutdown_timer);
}

void ms_module_shutdown(struct ms_module *m, double timeout) {
  if (m->shutting_down) return;
  m->shutting_down = 1;
  ms_log_flush(m);
  ms_event_shutdown(m);
  ms_client_shutdown(m);
  for (struct ms_server *s = m->servers; s; s = s->next)
    ms_server_shutdown(s, timeout);
  /* only the loop moonsocket_run runs is broken: a host's loop goes on
   * with the host's work, and no watcher of ours is left to keep it */
  if (m->servers || clients_open(m)) {
    ev_timer_init(&m->shutdown_timer, shutdown_expired, timeout, 0);
    ev_timer_start(m->loop, &m->shutdown_timer);
  } else {
    ms_backplane_close_module(m);
    if (m->running) ev_break(m->loop, EVBREAK_ALL);
  }
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents) {
  struct ms_module *m = w->data;
  (void)revents;
  if (m->shutting_down) {              /* a second signal: stop now */
    shutdown_expired(loop, &m->shutdown_timer, 0);
    return;
  }
  ms_log_flush(m);                     /* the count before the news */
  ms_log_module(m, MS_LOG_INFO, "signal %d: shutting down", w->signum);
  ms_module_shutdown(m, 5.0);
}

static void sighup_cb(struct ev_loop *loop, ev_signal *w, int revents) {
  struct ms_module *m = w->data;
  (void)loop;
  (void)revents;
  for (struct ms_server *s = m->servers; s; s = s->next) {
    if (!s->tls) continue;
    char why[512];
    if (ms_tls_load(s->tls, why, sizeof why) == 0)
      ms_log(s, MS_LOG_INFO, "SIGHUP: certificates of %s:%d reloaded",
             s->host, s->port);
    else
      ms_log(s, MS_LOG_ERROR, "SIGHUP: certificates of %s:%d kept: %s",
             s->host, s->port, why);
  }
}

int ms_module_run(struct ms_module *m) {
  /* OpenSSL writes to sockets without MSG_NOSIGNAL, and sendfile has no
   * such flag: a peer that left must not kill the process */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
  /* after a shutdown nothing is served any more: a reader or any other
   * watcher the app still holds must not keep the loop (and the runner,
   * which runs it once the script has returned) going */
  if (m->shutting_down && !m->servers) return 0;
  if (m->nworkers > 1 && !m->worker && !m->running &&
      ms_workers_run(m) == 0) {
    /* the master, done: its own timers end, its own client connections
     * close (below, on the loop), and a later run (the runner's, after
     * the script) serves nothing */
    ms_module_shutdown(m, 5.0);
    if (!m->client || !m->client->conns) return 0;
  }
  if (!m->serving && !m->shutting_down) {
    m->serving = 1;
    ms_event_serving(m);
    if (m->shutting_down && !m->servers) return 0;
  }
  ev_signal_init(&m->sigint, signal_cb, SIGINT);
  ev_signal_init(&m->sigterm, signal_cb, SIGTERM);
  ev_signal_init(&m->sighup, sighup_cb, SIGHUP);
  m->sigint.data = m->sigterm.data = m->sighup.data = m;
  ev_signal_start(m->loop, &m->sigint);
  ev_signal_start(m->loop, &m->sigterm);
  ev_signal_start(m->loop, &m->sighup);
  for (int i = 0; i < 3; i++) ev_unref(m->loop);  /* signals keep nothing */
  int was_running = m->running;
  m->running = 1;
  ev_run(m->loop, 0);
  m->running = was_running;
  for (int i = 0; i < 3; i++) ev_ref(m->loop);
  ev_signal_stop(m->loop, &m->sigint);
  ev_signal_stop(m->loop, &m->sigterm);
  ev_signal_stop(m->loop, &m->sighup);
  return 0;
}
