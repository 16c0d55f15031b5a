/* stats.h - what a measurement reads: a latency histogram, the clock,
 * and the CPU time and memory of the load generator and of the server */
#ifndef BENCH_STATS_H
#define BENCH_STATS_H

#include <stdint.h>

/* Log-linear buckets: 2^SUB_BITS per power of two, so any value is
 * known within 1/2^SUB_BITS (under 1%), from 1 ns to hours. */
#define HIST_SUB_BITS 7
#define HIST_POWERS 41
#define HIST_BUCKETS (HIST_POWERS << HIST_SUB_BITS)

struct histogram {
  uint64_t count;
  uint64_t max;
  uint64_t buckets[HIST_BUCKETS];
};

void hist_reset(struct histogram *h);
void hist_add(struct histogram *h, uint64_t ns);
/* The value at quantile q (0..1), in ns; 0 when empty. */
uint64_t hist_quantile(const struct histogram *h, double q);

/* CLOCK_MONOTONIC in ns */
uint64_t now_ns(void);

/* CPU seconds (user + system) spent so far by this process, and by the
 * server's processes named in pids (-1 when one cannot be read). */
double self_cpu_seconds(void);
double pids_cpu_seconds(const int *pids, int npids);
/* CPU seconds every CPU of the machine has been busy (user, system,
 * interrupts, and time the hypervisor gave to others), from /proc/stat:
 * what neither side used is someone else's load, or the kernel's
 * softirq work that no process is charged for.  -1 when unreadable. */
double machine_busy_seconds(void);
/* VmRSS of a process in KiB, -1 when it cannot be read. */
long pid_rss_kib(int pid);

/* The CPU use of both sides between two samples. */
struct cpu_sample {
  uint64_t t;           /* now_ns() */
  double self;          /* self_cpu_seconds() */
  double server;        /* pids_cpu_seconds(), or -1 */
  double machine;       /* machine_busy_seconds(), or -1 */
};

void cpu_sample(struct cpu_sample *s, const int *pids, int npids);
/* Percent of one core, over the interval from a to b (-1: unknown). */
double cpu_self_pct(const struct cpu_sample *a, const struct cpu_sample *b);
double cpu_server_pct(const struct cpu_sample *a,
                      const struct cpu_sample *b);
/* The rest of the machine's busy time: other processes, softirqs. */
double cpu_other_pct(const struct cpu_sample *a, const struct cpu_sample *b);

#endif
