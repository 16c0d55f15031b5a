/* metrics.c - the core's counters: close codes, and the mapping that
 * lets one process sum what every worker counted */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics.h"
#include "server.h"

/* ------------------------------------------------------------------ */
/* Closes                                                              */
/* ------------------------------------------------------------------ */

/* The slot of code: the registered codes by number, an application's
 * (3000..4999, RFC 6455 section 7.4.2) in the first free entry of the
 * table, the rest together. */
static int code_slot(struct ms_metrics *mt, int code) {
  if (code >= 1000 && code <= 1015) return code - 1000;
  if (code >= 3000 && code <= 4999) {
    for (int i = 0; i < MS_METRICS_APP_CODES; i++) {
      if (mt->app_codes[i] == code) return 16 + i;
      if (mt->app_codes[i] == 0) {
        mt->app_codes[i] = (uint16_t)code;
        return 16 + i;
      }
    }
  }
  return MS_METRICS_CODES - 1;
}

void ms_metrics_close(struct ms_metrics *mt, int code, int why) {
  if (why < 0 || why >= MS_METRICS_WHY) why = WHY_NONE;
  mt->closes[why][code_slot(mt, code)]++;
}

int ms_metrics_code_of(const struct ms_metrics *mt, int i) {
  if (i < 16) return 1000 + i;
  if (i < 16 + MS_METRICS_APP_CODES) return mt->app_codes[i - 16];
  return 0;
}

/* ------------------------------------------------------------------ */
/* Routes                                                              */
/* ------------------------------------------------------------------ */

int ms_metrics_route(struct ms_metrics *mt, const char *path, size_t len) {
  if (len == 0 || len >= MS_METRICS_ROUTE_PATH || memchr(path, 0, len))
    return -1;
  for (int i = 0; i < MS_METRICS_ROUTES; i++) {
    char *name = mt->routes[i];
    if (!name[0]) {
      memcpy(name, path, len);
      name[len] = '\0';
      return i;
    }
    if (strncmp(name, path, len) == 0 && name[len] == '\0') return i;
  }
  return -1;
}

/* ------------------------------------------------------------------ */
/* Calls into Lua                                                      */
/* ------------------------------------------------------------------ */

/* The buckets' upper bounds (inclusive, as Prometheus's le): from 10 us,
 * a fast handler, to 1 s, one that blocks the loop */
const uint64_t ms_callback_bounds_ns[MS_CALLBACK_BUCKETS - 1] = {
  10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
  5000000, 10000000, 25000000, 50000000, 100000000, 250000000,
  1000000000
};

void ms_metrics_callback(struct ms_metrics *mt, int kind, uint64_t ns) {
  int i = 0;
  while (i < MS_CALLBACK_BUCKETS - 1 && ns > ms_callback_bounds_ns[i]) i++;
  mt->callbacks[kind][i]++;
  mt->callback_ns[kind] += ns;
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */
/* ------------------------------------------------------------------ */

/* Count in mt from now on: the module, its servers and its topics. */
static void point_at(struct ms_module *m, struct ms_metrics *mt) {
  m->metrics = mt;
  m->last_iteration = ev_iteration(m->loop);  /* the slot's count goes on */
  m->topics.metrics = mt;
  for (struct ms_server *s = m->servers; s; s = s->next) s->metrics = mt;
}

int ms_metrics_share(struct ms_module *m, int n) {
  if (m->shared) return 0;                 /* forked before: kept */
  size_t size = (size_t)(n + 1) * sizeof *m->shared;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  ms_metrics_sample(m);
  m->shared = p;
  m->nshared = n + 1;
  m->shared[0] = *m->metrics;              /* zero-filled: the others */
  point_at(m, &m->shared[0]);
  return 0;
}

void ms_metrics_worker(struct ms_module *m, int index) {
  if (!m->shared || index >= m->nshared) return;
  struct ms_metrics *mt = &m->shared[index];
  /* what a worker that died had open closed with it */
  memcpy(mt->closed, mt->opened, sizeof mt->closed);
  mt->topics_destroyed = mt->topics_created;
  mt->unsubscribed = mt->subscribed;
  memcpy(mt->route_closed, mt->route_opened, sizeof mt->route_closed);
  /* the routes made before the fork count at the master's indexes */
  for (int i = 0; i < MS_METRICS_ROUTES; i++)
    if (!mt->routes[i][0])
      memcpy(mt->routes[i], m->shared[0].routes[i], sizeof mt->routes[i]);
  point_at(m, mt);
  ms_metrics_sample(m);
}

const struct ms_metrics *ms_metrics_slots(const struct ms_module *m,
                                          int *n) {
  *n = m->shared ? m->nshared : 1;
  return m->shared ? m->shared : m->metrics;
}

void ms_metrics_free(struct ms_module *m) {
  if (!m->shared) return;
  m->own = *m->metrics;                    /* this process's, kept */
  point_at(m, &m->own);
  munmap(m->shared, (size_t)m->nshared * sizeof *m->shared);
  m->shared = NULL;
  m->nshared = 0;
}

/* ------------------------------------------------------------------ */
/* The process                                                         */
/* ------------------------------------------------------------------ */

void ms_metrics_sample(struct ms_module *m) {
  struct ms_metrics *mt = m->metrics;
  unsigned int now = ev_iteration(m->loop);   /* wraps: count the steps */
  mt->loop_iterations += (unsigned int)(now - m->last_iteration);
  m->last_iteration = now;
  mt->lua_heap = (uint64_t)lua_gc(m->L, LUA_GCCOUNT, 0) * 1024 +
                 (uint64_t)lua_gc(m->L, LUA_GCCOUNTB, 0);
  mt->pid = (uint64_t)getpid();
}

uint64_t ms_metrics_resident(uint64_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%llu/statm", (unsigned long long)pid);
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  unsigned long long size, resident;
  int got = fscanf(f, "%llu %llu", &size, &resident);
  fclose(f);
  if (got != 2) return 0;
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

uint64_t ms_metrics_descriptors(uint64_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%llu/fd", (unsigned long long)pid);
  /* Linux 6.2 on gives the count as the directory's size, from a bitmap
   * of the open descriptors: no walk over 10,000 entries */
  struct stat st;
  if (stat(path, &st) == 0 && st.st_size > 0) return (uint64_t)st.st_size;
  DIR *d = opendir(path);
  if (!d) return 0;
  uint64_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  /* our own listing holds one more: the directory being read */
  if (pid == (uint64_t)getpid() && n) n--;
  return n;
}
