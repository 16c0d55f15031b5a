/* stats.c - latency histogram, clocks, CPU time and RSS from /proc */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "stats.h"

/* ======================================================================
 * Histogram
 * ====================================================================== */

void hist_reset(struct histogram *h) {
  memset(h, 0, sizeof *h);
}

/* Values below 2^SUB_BITS get a bucket each; above, the top SUB_BITS+1
 * bits of the value pick the bucket. */
static unsigned bucket_of(uint64_t v) {
  if (v < (1u << HIST_SUB_BITS)) return (unsigned)v;
  unsigned top = 63 - (unsigned)__builtin_clzll(v);
  unsigned shift = top - HIST_SUB_BITS;
  unsigned b = ((shift + 1) << HIST_SUB_BITS)
               + (unsigned)((v >> shift) & ((1u << HIST_SUB_BITS) - 1));
  return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

/* The middle of a bucket's range. */
static uint64_t value_of(unsigned b) {
  if (b < (1u << HIST_SUB_BITS)) return b;
  unsigned shift = (b >> HIST_SUB_BITS) - 1;
  uint64_t low = ((uint64_t)1 << (shift + HIST_SUB_BITS))
                 | ((uint64_t)(b & ((1u << HIST_SUB_BITS) - 1)) << shift);
  return low + ((uint64_t)1 << shift) / 2;
}

void hist_add(struct histogram *h, uint64_t ns) {
  h->buckets[bucket_of(ns)]++;
  h->count++;
  if (ns > h->max) h->max = ns;
}

uint64_t hist_quantile(const struct histogram *h, double q) {
  if (h->count == 0) return 0;
  uint64_t rank = (uint64_t)(q * (double)h->count);
  if (rank >= h->count) rank = h->count - 1;
  uint64_t seen = 0;
  for (unsigned b = 0; b < HIST_BUCKETS; b++) {
    seen += h->buckets[b];
    if (seen > rank) {
      uint64_t v = value_of(b);
      return v < h->max ? v : h->max;
    }
  }
  return h->max;
}

/* ======================================================================
 * Clocks and /proc
 * ====================================================================== */

uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double self_cpu_seconds(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
         + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime and stime are fields 14 and 15 of /proc/PID/stat, counted
 * after the command name, which may hold spaces: start past its ')'. */
static double pid_cpu_seconds(int pid) {
  char path[64], line[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(line, 1, sizeof line - 1, f);
  fclose(f);
  line[n] = '\0';
  char *p = strrchr(line, ')');
  if (!p) return -1;
  unsigned long utime, stime;
  /* state ppid pgrp session tty tpgid flags minflt cminflt majflt
   * cmajflt utime stime */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
             &utime, &stime) != 2)
    return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

double pids_cpu_seconds(const int *pids, int npids) {
  double sum = 0;
  if (npids == 0) return -1;
  for (int i = 0; i < npids; i++) {
    double s = pid_cpu_seconds(pids[i]);
    if (s < 0) return -1;
    sum += s;
  }
  return sum;
}

double machine_busy_seconds(void) {
  unsigned long long user, nice, sys, idle, iowait, irq, softirq, steal;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return -1;
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user,
                 &nice, &sys, &idle, &iowait, &irq, &softirq, &steal);
  fclose(f);
  if (n != 8) return -1;
  return (double)(user + nice + sys + irq + softirq + steal)
         / (double)sysconf(_SC_CLK_TCK);
}

long pid_rss_kib(int pid) {
  char path[64], line[256];
  long kib = -1;
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
  fclose(f);
  return kib;
}

void cpu_sample(struct cpu_sample *s, const int *pids, int npids) {
  s->t = now_ns();
  s->self = self_cpu_seconds();
  s->server = pids_cpu_seconds(pids, npids);
  s->machine = machine_busy_seconds();
}

double cpu_self_pct(const struct cpu_sample *a, const struct cpu_sample *b) {
  double wall = (double)(b->t - a->t) / 1e9;
  if (wall < 0.01 || a->self < 0 || b->self < 0) return -1;
  return 100 * (b->self - a->self) / wall;
}

double cpu_server_pct(const struct cpu_sample *a,
                      const struct cpu_sample *b) {
  double wall = (double)(b->t - a->t) / 1e9;
  if (wall < 0.01 || a->server < 0 || b->server < 0) return -1;
  return 100 * (b->server - a->server) / wall;
}

double cpu_other_pct(const struct cpu_sample *a, const struct cpu_sample *b) {
  double self = cpu_self_pct(a, b), server = cpu_server_pct(a, b);
  double wall = (double)(b->t - a->t) / 1e9;
  if (self < 0 || server < 0 || a->machine < 0 || b->machine < 0)
    return -1;
  double other = 100 * (b->machine - a->machine) / wall - self - server;
  return other > 0 ? other : 0;     /* tick rounding */
}
