/* metrics.c - the core's counters: close codes, and the mapping that
 * lets one process sum what every worker counted */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

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
/* Workers                                                             */
/* ------------------------------------------------------------------ */

/* Count in mt from now on: the module, its servers and its topics. */
static void point_at(struct ms_module *m, struct ms_metrics *mt) {
  m->metrics = mt;
  m->topics.metrics = mt;
  for (struct ms_server *s = m->servers; s; s = s->next) s->metrics = mt;
}

int ms_metrics_share(struct ms_module *m, int n) {
  if (m->shared) return 0;                 /* forked before: kept */
  size_t size = (size_t)(n + 1) * sizeof *m->shared;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
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
  point_at(m, mt);
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
