/* fanout.h - the fan-out test: subscribers of one topic, a publisher,
 * and every delivery checked */
#ifndef BENCH_FANOUT_H
#define BENCH_FANOUT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "stats.h"

/* A message is FANOUT_SEQ_DIGITS hex digits of its number, then the
 * payload: the smallest size there is. */
#define FANOUT_SEQ_DIGITS 8

struct fanout_params {
  struct client_ctx *ctx;       /* set up; its events, user and depth
                                   become the test's */
  struct client *subs;          /* nsubs, each with index set, fd -1 */
  size_t nsubs;
  const char *label;            /* names the server in the report */
  long depth;                   /* publishes in flight */
  long parallel;                /* upgrades at once while opening */
  size_t size;                  /* message bytes, FANOUT_SEQ_DIGITS or
                                   more */
  double warmup, duration;      /* seconds */
  unsigned long long messages;  /* publishes to make; 0: by time */
  const int *pids;              /* the server's processes, for CPU */
  int npids;
  uint64_t deadline;            /* the run's time limit, now_ns() */
  volatile sig_atomic_t *interrupted;
  struct histogram *hist;       /* delivery latency, filled here */
  int quiet;
  struct cpu_sample a, b;       /* out: around the measured window */
};

/* Open the subscribers and the publisher, publish, check every
 * delivery, close.  Prints the report's key=value line up to its
 * common part (no newline) and a summary on stderr.  0 when it
 * measured, -1 when it could not (an error has said why). */
int fanout_run(struct fanout_params *p);

#endif
