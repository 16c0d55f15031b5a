/* resolver.c - names to addresses without blocking the loop: c-ares
 * driven by the module's libev loop (an ev_io per c-ares socket, one
 * timer), its answers cached for their TTL */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <ares.h>

#include "resolver.h"
#include "server.h"

/* A lookup is in at most one list: waiting (c-ares asked, oldest and so
 * first due first, as every lookup gets the same timeout) or ready
 * (answered, to be told from the timer).  c-ares has no way to give up
 * one query: a lookup cancelled or timed out while c-ares holds it is
 * left to c-ares, which frees it through ares_cb, and when nobody waits
 * for any query every query is cancelled (schedule). */
struct lookup_list {
  struct ms_lookup *first, *last;
};

struct ms_lookup {
  struct ms_resolver *r;
  struct lookup_list *list;        /* waiting, ready, or NULL */
  struct ms_lookup *prev, *next;   /* in list */
  ms_resolve_cb cb;                /* NULL once cancelled or told */
  void *arg;
  double deadline;                 /* ev_now by which it is answered */
  int family;
  unsigned port;
  int status;                      /* enum ms_resolve_status, once */
  const char *why;                 /* answered */
  unsigned char in_ares;           /* c-ares holds it as its arg */
  unsigned char telling;           /* its callback runs now */
  struct ms_addrs addrs;
  char name[];
};

struct watch {                     /* one socket c-ares uses */
  ev_io io;                        /* io.data: the resolver */
  struct watch *next;
};

struct cache_entry {
  struct cache_entry *prev, *next; /* most recently used first */
  double expires;                  /* ev_now */
  int family;
  char *name;                      /* in the same block */
  size_t n;
  union ms_sockaddr addr[];        /* ports 0 */
};

struct ms_resolver {
  struct ms_module *m;
  ares_channel channel;            /* made for the first query, or NULL */
  ev_timer tick;                   /* the next timeout (c-ares's or a
                                      lookup's), or 0 to tell answers */
  struct watch *watches;
  struct lookup_list waiting, ready;
  unsigned in_ares;                /* lookups c-ares holds */
  int closing;                     /* ms_resolver_free runs */
  struct ms_resolver_config config;
  char *servers;                   /* config.servers, owned */
  struct cache_entry *cache_first, *cache_last;
  size_t cache_n;
};

static void schedule(struct ms_resolver *r);

/* ------------------------------------------------------------------ */
/* Addresses                                                          */
/* ------------------------------------------------------------------ */

int ms_resolve_literal(const char *name, int family, unsigned port,
                       union ms_sockaddr *a) {
  memset(a, 0, sizeof *a);
  if (family != AF_INET6 && inet_pton(AF_INET, name, &a->in.sin_addr) == 1) {
    a->in.sin_family = AF_INET;
    a->in.sin_port = htons((uint16_t)port);
    return 1;
  }
  if (family != AF_INET &&
      inet_pton(AF_INET6, name, &a->in6.sin6_addr) == 1) {
    a->in6.sin6_family = AF_INET6;
    a->in6.sin6_port = htons((uint16_t)port);
    return 1;
  }
  return 0;
}

socklen_t ms_sockaddr_len(const union ms_sockaddr *a) {
  return a->sa.sa_family == AF_INET6 ? sizeof a->in6 : sizeof a->in;
}

const char *ms_sockaddr_text(const union ms_sockaddr *a, char *buf,
                             size_t len) {
  const void *addr = a->sa.sa_family == AF_INET6
                     ? (const void *)&a->in6.sin6_addr
                     : (const void *)&a->in.sin_addr;
  if (!inet_ntop(a->sa.sa_family, addr, buf, (socklen_t)len) && len)
    buf[0] = '\0';
  return buf;
}

static void set_port(union ms_sockaddr *a, unsigned port) {
  if (a->sa.sa_family == AF_INET6) a->in6.sin6_port = htons((uint16_t)port);
  else a->in.sin_port = htons((uint16_t)port);
}

/* service: NULL (port 0) or a decimal port. */
static int port_of(const char *service, unsigned *port) {
  *port = 0;
  if (!service) return 1;
  if (!*service || strlen(service) > 5) return 0;
  unsigned v = 0;
  for (const char *p = service; *p; p++) {
    if (*p < '0' || *p > '9') return 0;
    v = v * 10 + (unsigned)(*p - '0');
  }
  *port = v;
  return v <= 65535;
}

/* ------------------------------------------------------------------ */
/* The cache: answers by name and family, for their TTL (capped), the */
/* least recently used dropped when full.  A list: at its largest     */
/* (MS_RESOLVER_CACHE_MAX) a miss compares a few thousand names, once */
/* per lookup that goes to the network anyway.                        */
/* ------------------------------------------------------------------ */

static void cache_unlink(struct ms_resolver *r, struct cache_entry *e) {
  if (e->prev) e->prev->next = e->next;
  else r->cache_first = e->next;
  if (e->next) e->next->prev = e->prev;
  else r->cache_last = e->prev;
  r->cache_n--;
}

static void cache_push(struct ms_resolver *r, struct cache_entry *e) {
  e->prev = NULL;
  e->next = r->cache_first;
  if (e->next) e->next->prev = e;
  else r->cache_last = e;
  r->cache_first = e;
  r->cache_n++;
}

static void cache_clear(struct ms_resolver *r) {
  while (r->cache_first) {
    struct cache_entry *e = r->cache_first;
    cache_unlink(r, e);
    free(e);
  }
}

static struct cache_entry *cache_find(struct ms_resolver *r,
                                      const char *name, int family) {
  for (struct cache_entry *e = r->cache_first; e; e = e->next)
    if (e->family == family && strcasecmp(e->name, name) == 0) return e;
  return NULL;
}

/* A fresh answer for l, copied with its port; 0 when none. */
static int cache_get(struct ms_resolver *r, struct ms_lookup *l) {
  struct cache_entry *e = cache_find(r, l->name, l->family);
  if (!e) return 0;
  cache_unlink(r, e);
  if (e->expires <= ev_now(r->m->loop)) {
    free(e);
    return 0;
  }
  cache_push(r, e);
  l->addrs.n = e->n;
  for (size_t i = 0; i < e->n; i++) {
    l->addrs.addr[i] = e->addr[i];
    set_port(&l->addrs.addr[i], l->port);
  }
  return 1;
}

static void cache_put(struct ms_resolver *r, const struct ms_lookup *l,
                      int ttl) {
  if (r->config.cache == 0) return;
  struct cache_entry *old = cache_find(r, l->name, l->family);
  if (old) {
    cache_unlink(r, old);
    free(old);
  }
  while (r->cache_n >= r->config.cache) {
    struct cache_entry *last = r->cache_last;
    cache_unlink(r, last);
    free(last);
  }
  size_t n = l->addrs.n, len = strlen(l->name);
  struct cache_entry *e = malloc(sizeof *e + n * sizeof e->addr[0] + len + 1);
  if (!e) return;                       /* not cached: no harm */
  e->name = (char *)(e->addr + n);
  memcpy(e->name, l->name, len + 1);
  e->family = l->family;
  e->n = n;
  for (size_t i = 0; i < n; i++) {
    e->addr[i] = l->addrs.addr[i];
    set_port(&e->addr[i], 0);
  }
  if (ttl > MS_RESOLVER_TTL_MAX) ttl = MS_RESOLVER_TTL_MAX;
  e->expires = ev_now(r->m->loop) + ttl;
  cache_push(r, e);
}

/* ------------------------------------------------------------------ */
/* Lookups                                                            */
/* ------------------------------------------------------------------ */

static void list_append(struct lookup_list *list, struct ms_lookup *l) {
  l->list = list;
  l->next = NULL;
  l->prev = list->last;
  if (list->last) list->last->next = l;
  else list->first = l;
  list->last = l;
}

static void list_remove(struct ms_lookup *l) {
  struct lookup_list *list = l->list;
  if (l->prev) l->prev->next = l->next;
  else list->first = l->next;
  if (l->next) l->next->prev = l->prev;
  else list->last = l->prev;
  l->list = NULL;
  l->prev = l->next = NULL;
}

/* Free l once nothing holds it: no list, not c-ares, nobody to tell. */
static void release(struct ms_lookup *l) {
  if (!l->in_ares && !l->list && !l->telling && !l->cb) free(l);
}

/* Answered: to be told from the timer. */
static void answer(struct ms_lookup *l, int status, const char *why) {
  l->status = status;
  l->why = why;
  if (l->list) list_remove(l);
  list_append(&l->r->ready, l);
}

/* A c-ares status, as a short reason and our status. */
static const char *ares_why(int status, int *ours) {
  *ours = MS_RESOLVE_FAILED;
  switch (status) {
  case ARES_ENOTFOUND: case ARES_ENONAME: return "name not found";
  case ARES_ENODATA: return "no address for the name";
  case ARES_ETIMEOUT:
    *ours = MS_RESOLVE_TIMEOUT;
    return "timed out";
  case ARES_ECONNREFUSED: return "no DNS server could be reached";
  case ARES_ESERVFAIL: return "the DNS server failed";
  case ARES_EREFUSED: return "the DNS server refused the query";
  case ARES_EBADNAME: return "invalid name";
  case ARES_ENOMEM: return "out of memory";
  case ARES_ECANCELLED: case ARES_EDESTRUCTION:
    *ours = MS_RESOLVE_CANCELLED;
    return "cancelled";
  default: return ares_strerror(status);
  }
}

/* The addresses of a c-ares answer into l; the shortest TTL. */
static int take_addresses(struct ms_lookup *l, const struct ares_addrinfo *ai) {
  int ttl = MS_RESOLVER_TTL_MAX;
  l->addrs.n = 0;
  for (const struct ares_addrinfo_node *n = ai ? ai->nodes : NULL;
       n && l->addrs.n < MS_RESOLVE_MAX_ADDRS; n = n->ai_next) {
    union ms_sockaddr *a = &l->addrs.addr[l->addrs.n];
    memset(a, 0, sizeof *a);
    if (n->ai_family == AF_INET && n->ai_addrlen >= sizeof a->in)
      memcpy(&a->in, n->ai_addr, sizeof a->in);
    else if (n->ai_family == AF_INET6 && n->ai_addrlen >= sizeof a->in6)
      memcpy(&a->in6, n->ai_addr, sizeof a->in6);
    else
      continue;
    set_port(a, l->port);
    l->addrs.n++;
    if (n->ai_ttl < ttl) ttl = n->ai_ttl;
  }
  for (const struct ares_addrinfo_cname *c = ai ? ai->cnames : NULL; c;
       c = c->next)
    if (c->ttl < ttl) ttl = c->ttl;
  return ttl;
}

/* c-ares is done with l: its answer, or it gave up (cancelled). */
static void ares_cb(void *arg, int status, int timeouts,
                    struct ares_addrinfo *ai) {
  struct ms_lookup *l = arg;
  struct ms_resolver *r = l->r;
  (void)timeouts;
  l->in_ares = 0;
  r->in_ares--;
  if (l->list == &r->waiting) {
    int ours;
    if (status != ARES_SUCCESS) {
      const char *why = ares_why(status, &ours);
      answer(l, ours, why);
    } else {
      int ttl = take_addresses(l, ai);
      if (l->addrs.n == 0) {
        answer(l, MS_RESOLVE_FAILED, "no address for the name");
      } else {
        if (ttl > 0) cache_put(r, l, ttl);  /* /etc/hosts says 0 */
        answer(l, MS_RESOLVE_OK, NULL);
      }
    }
  }
  ares_freeaddrinfo(ai);
  release(l);
}

/* Tell the answered lookups.  A callback may start and cancel lookups,
 * and reconfigure: each is taken off the list before it is told. */
static void deliver(struct ms_resolver *r) {
  struct ms_lookup *l;
  while ((l = r->ready.first)) {
    list_remove(l);
    ms_resolve_cb cb = l->cb;
    int ok = l->status == MS_RESOLVE_OK;
    l->cb = NULL;
    l->telling = 1;
    cb(l->arg, l->status, ok ? NULL : l->why, ok ? &l->addrs : NULL);
    l->telling = 0;
    release(l);
  }
}

/* The lookups whose time is up are answered so. */
static void expire(struct ms_resolver *r) {
  double now = ev_now(r->m->loop);
  struct ms_lookup *l;
  while ((l = r->waiting.first) && l->deadline <= now)
    answer(l, MS_RESOLVE_TIMEOUT, "timed out");
}

static void settle(struct ms_resolver *r) {
  expire(r);
  deliver(r);
  schedule(r);
}

/* ------------------------------------------------------------------ */
/* c-ares on the loop                                                 */
/* ------------------------------------------------------------------ */

static void io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  struct ms_resolver *r = w->data;
  ares_socket_t fd = w->fd;
  (void)loop;
  /* w is freed inside when c-ares closes its socket */
  ares_process_fd(r->channel, revents & EV_READ ? fd : ARES_SOCKET_BAD,
                  revents & EV_WRITE ? fd : ARES_SOCKET_BAD);
  settle(r);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  struct ms_resolver *r = w->data;
  (void)loop;
  (void)revents;
  if (r->channel)                      /* c-ares's own timeouts */
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  settle(r);
}

/* c-ares opens, watches and closes its sockets: an ev_io each. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable,
                          int writable) {
  struct ms_resolver *r = data;
  struct ev_loop *loop = r->m->loop;
  struct watch **p = &r->watches, *w;
  while ((w = *p) && w->io.fd != fd) p = &w->next;
  int events = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
  if (!events) {
    if (w) {
      ev_io_stop(loop, &w->io);
      *p = w->next;
      free(w);
    }
    return;
  }
  if (!w) {
    /* without memory the query times out: the timer still runs */
    if (!(w = malloc(sizeof *w))) return;
    ev_io_init(&w->io, io_cb, fd, events);
    w->io.data = r;
    w->next = r->watches;
    r->watches = w;
  } else if ((w->io.events & (EV_READ | EV_WRITE)) == events) {
    return;
  } else {
    ev_io_stop(loop, &w->io);
    ev_io_set(&w->io, fd, events);
  }
  ev_io_start(loop, &w->io);
}

static void drop_watches(struct ms_resolver *r) {
  while (r->watches) {
    struct watch *w = r->watches;
    r->watches = w->next;
    ev_io_stop(r->m->loop, &w->io);
    free(w);
  }
}

/* Arm the timer for what comes first: answers to tell now, a lookup's
 * deadline, c-ares's next retry.  Queries nobody waits for any more
 * are cancelled, so that their sockets close and keep no loop
 * running.  Never called from inside c-ares. */
static void schedule(struct ms_resolver *r) {
  struct ev_loop *loop = r->m->loop;
  if (!r->waiting.first && r->in_ares && r->channel) ares_cancel(r->channel);
  double after = -1;
  if (r->ready.first) {
    after = 0;
  } else if (r->waiting.first) {
    after = r->waiting.first->deadline - ev_now(loop);
    if (after < 0) after = 0;
    struct timeval max, tv, *next;
    max.tv_sec = (time_t)after;
    max.tv_usec = (suseconds_t)((after - (double)max.tv_sec) * 1e6);
    next = r->channel ? ares_timeout(r->channel, &max, &tv) : &max;
    after = (double)next->tv_sec + (double)next->tv_usec / 1e6;
  }
  ev_timer_stop(loop, &r->tick);
  if (after >= 0) {
    ev_timer_set(&r->tick, after, 0.);
    ev_timer_start(loop, &r->tick);
  }
}

/* The channel, made now if needed: /etc/resolv.conf's servers or the
 * configured ones; /etc/hosts is read before asking them. */
static int channel_open(struct ms_resolver *r) {
  if (r->channel) return ARES_SUCCESS;
  struct ares_options o;
  memset(&o, 0, sizeof o);
  o.sock_state_cb = sock_state_cb;
  o.sock_state_cb_data = r;
  /* two tries, c-ares waiting twice as long for the second: a third
   * and two thirds of the timeout (each lookup is bounded by its own
   * deadline too, with several servers or search domains) */
  int ms = (int)(r->config.timeout * 1000 / 3);
  o.timeout = ms > 0 ? ms : 1;
  o.tries = 2;
  int rc = ares_init_options(&r->channel, &o, ARES_OPT_SOCK_STATE_CB |
                             ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
  if (rc != ARES_SUCCESS) {
    r->channel = NULL;
    return rc;
  }
  if (r->servers &&
      (rc = ares_set_servers_ports_csv(r->channel, r->servers)) !=
      ARES_SUCCESS) {
    ares_destroy(r->channel);
    r->channel = NULL;
  }
  return rc;
}

/* ------------------------------------------------------------------ */
/* The module's resolver                                              */
/* ------------------------------------------------------------------ */

void ms_resolver_config_defaults(struct ms_resolver_config *c) {
  c->servers = NULL;
  c->timeout = MS_RESOLVER_TIMEOUT;
  c->cache = MS_RESOLVER_CACHE;
}

/* The module's resolver, made on first use (no channel yet). */
static struct ms_resolver *resolver_of(struct ms_module *m) {
  if (m->resolver) return m->resolver;
  struct ms_resolver *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
    free(r);
    return NULL;
  }
  r->m = m;
  ms_resolver_config_defaults(&r->config);
  ev_init(&r->tick, tick_cb);
  r->tick.data = r;
  m->resolver = r;
  return r;
}

struct ms_lookup *ms_resolve(struct ms_module *m, const char *name,
                             const char *service, int family,
                             ms_resolve_cb cb, void *arg) {
  struct ms_resolver *r = resolver_of(m);
  size_t len = strlen(name);
  struct ms_lookup *l = r ? calloc(1, sizeof *l + len + 1) : NULL;
  if (!l) return NULL;
  l->r = r;
  l->cb = cb;
  l->arg = arg;
  l->family = family;
  memcpy(l->name, name, len + 1);
  l->deadline = ev_now(m->loop) + r->config.timeout;
  list_append(&r->waiting, l);
  int rc;
  if (r->closing) {
    answer(l, MS_RESOLVE_CANCELLED, "cancelled");
  } else if (!port_of(service, &l->port)) {
    answer(l, MS_RESOLVE_FAILED, "the service is not a port number");
  } else if (family != AF_UNSPEC && family != AF_INET &&
             family != AF_INET6) {
    answer(l, MS_RESOLVE_FAILED, "unknown address family");
  } else if (ms_resolve_literal(name, family, l->port, l->addrs.addr)) {
    l->addrs.n = 1;
    answer(l, MS_RESOLVE_OK, NULL);
  } else if (len == 0 || len > 255) {
    answer(l, MS_RESOLVE_FAILED, "invalid name");
  } else if (cache_get(r, l)) {
    answer(l, MS_RESOLVE_OK, NULL);
  } else if ((rc = channel_open(r)) != ARES_SUCCESS) {
    answer(l, MS_RESOLVE_FAILED, ares_strerror(rc));
  } else {
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    l->in_ares = 1;
    r->in_ares++;
    /* may answer at once (/etc/hosts): ares_cb moves it to ready */
    ares_getaddrinfo(r->channel, name, NULL, &hints, ares_cb, l);
  }
  schedule(r);
  return l;
}

void ms_resolve_cancel(struct ms_lookup *l) {
  if (!l || !l->cb) return;
  struct ms_resolver *r = l->r;
  l->cb = NULL;
  if (l->list) list_remove(l);
  release(l);
  schedule(r);
}

int ms_resolver_configure(struct ms_module *m,
                          const struct ms_resolver_config *c,
                          const char **why) {
  struct ms_resolver *r = resolver_of(m);
  if (!r) return -2;
  schedule(r);                      /* cancels what nobody waits for */
  if (r->waiting.first) {
    *why = "lookups are under way: configure the resolver before "
           "resolving";
    return -1;
  }
  char *servers = NULL;
  if (c->servers && !(servers = strdup(c->servers))) return -2;
  if (r->channel) {                 /* made again with the new settings */
    ares_destroy(r->channel);
    r->channel = NULL;
  }
  free(r->servers);
  r->servers = servers;
  r->config = *c;
  r->config.servers = servers;
  if (r->config.cache > MS_RESOLVER_CACHE_MAX)
    r->config.cache = MS_RESOLVER_CACHE_MAX;
  cache_clear(r);
  return 0;
}

void ms_resolver_forget(struct ms_module *m) {
  struct ms_resolver *r = m->resolver;
  if (!r || !r->channel) return;
  /* closes this process's copies of the sockets, sends nothing; what
   * was under way is answered "cancelled" (ares_cb) */
  ares_destroy(r->channel);
  r->channel = NULL;
  drop_watches(r);
  schedule(r);
}

void ms_resolver_free(struct ms_module *m) {
  struct ms_resolver *r = m->resolver;
  if (!r) return;
  r->closing = 1;
  struct ms_lookup *l;
  while ((l = r->waiting.first))
    answer(l, MS_RESOLVE_CANCELLED, "cancelled");
  if (r->channel) {
    ares_destroy(r->channel);          /* frees what it held (ares_cb) */
    r->channel = NULL;
  }
  deliver(r);
  drop_watches(r);
  ev_timer_stop(m->loop, &r->tick);
  cache_clear(r);
  free(r->servers);
  free(r);
  m->resolver = NULL;
  ares_library_cleanup();
}
