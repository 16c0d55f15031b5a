/* resolver.h - names to addresses without blocking the loop: c-ares on
 * the module's libev loop, with a cache of answers */
#ifndef MS_RESOLVER_H
#define MS_RESOLVER_H

#include <stddef.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct ms_module;
struct ms_lookup;

#define MS_RESOLVE_MAX_ADDRS 16    /* addresses kept of one answer */

/* The configuration (core.resolver), defaults beside each field. */
struct ms_resolver_config {
  const char *servers;   /* NULL: /etc/resolv.conf's; else c-ares's
                            "1.2.3.4:53,[::1]:5353" list */
  double timeout;        /* 5 s: the most one lookup waits, retries
                            included */
  size_t cache;          /* 256: answers kept for their TTL; 0 none */
};
#define MS_RESOLVER_TIMEOUT 5.0
#define MS_RESOLVER_TIMEOUT_MIN 0.01
#define MS_RESOLVER_TIMEOUT_MAX 300.0
#define MS_RESOLVER_CACHE 256
#define MS_RESOLVER_CACHE_MAX 4096  /* the most answers a cache holds */
#define MS_RESOLVER_TTL_MAX 3600    /* s: an answer is kept this long at
                                       most, whatever its TTL */
#define MS_RESOLVER_SERVERS_MAX 8   /* DNS servers one may name */

/* One address of an answer, with the port asked for. */
union ms_sockaddr {
  struct sockaddr sa;
  struct sockaddr_in in;
  struct sockaddr_in6 in6;
};

struct ms_addrs {
  size_t n;
  union ms_sockaddr addr[MS_RESOLVE_MAX_ADDRS];  /* in the order to try
                                                    them (RFC 6724) */
};

enum ms_resolve_status {
  MS_RESOLVE_OK,
  MS_RESOLVE_FAILED,       /* no such name, no address, the server
                              failed or refused: why says which */
  MS_RESOLVE_TIMEOUT,      /* no answer within the timeout */
  MS_RESOLVE_CANCELLED     /* the resolver closed (module closed, or a
                              worker dropped what it inherited) */
};

/* Told once, from the loop, never from inside ms_resolve: status, why
 * (a short text, "name not found", when status is not OK) and the
 * addresses (NULL unless OK), valid during the call.  The handle is
 * gone once it is called. */
typedef void (*ms_resolve_cb)(void *arg, int status, const char *why,
                              const struct ms_addrs *addrs);

/* Resolve name (a name or an address) for family (AF_UNSPEC, AF_INET,
 * AF_INET6); service, NULL or a port number, is the port of the
 * addresses.  An address, /etc/hosts and the cache answer without a
 * query.  Returns the handle, or NULL when memory ran out (cb is then
 * never called). */
struct ms_lookup *ms_resolve(struct ms_module *m, const char *name,
                             const char *service, int family,
                             ms_resolve_cb cb, void *arg);
/* Give up a lookup whose callback has not been called: it never will
 * be.  NULL does nothing. */
void ms_resolve_cancel(struct ms_lookup *l);

/* Fill a with name when it is an address of family (no lookup at all);
 * returns whether it was. */
int ms_resolve_literal(const char *name, int family, unsigned port,
                       union ms_sockaddr *a);
socklen_t ms_sockaddr_len(const union ms_sockaddr *a);
/* The address as text ("192.0.2.1", "2001:db8::1") in buf. */
const char *ms_sockaddr_text(const union ms_sockaddr *a, char *buf,
                             size_t len);

void ms_resolver_config_defaults(struct ms_resolver_config *c);
/* Replace the configuration; the cache is emptied.  0; -1 while
 * lookups are under way (*why says so); -2 when memory ran out. */
int ms_resolver_configure(struct ms_module *m,
                          const struct ms_resolver_config *c,
                          const char **why);
/* A worker just forked: the lookups under way and their sockets are the
 * master's.  The worker's copies are closed without a byte sent; a
 * lookup still under way is told MS_RESOLVE_CANCELLED. */
void ms_resolver_forget(struct ms_module *m);
/* The module closes: lookups under way are told MS_RESOLVE_CANCELLED,
 * and the resolver is freed. */
void ms_resolver_free(struct ms_module *m);

#endif
