/* recover.h - the recovery test: clients of a topic with history drop
 * and come back at once with their positions while a publisher runs;
 * every message checked: no gap, no duplicate, one epoch */
#ifndef BENCH_RECOVER_H
#define BENCH_RECOVER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "stats.h"

#define RECOVER_PIDS 8          /* processes whose CPU is told apart */

struct recover_params {
  struct client_ctx *ctx;       /* set up; its events, user and depth
                                   become the test's */
  struct client *subs;          /* nsubs, each with index set, fd -1 */
  size_t nsubs;
  const char *label;            /* names the server in the report */
  long window;                  /* messages the publisher may be ahead
                                   of the slowest live client */
  long lead;                    /* ... and of the position a client
                                   comes back with: at most what the
                                   server keeps */
  long parallel;                /* upgrades at once while first opening */
  long rounds;                  /* times every client drops */
  double rate;                  /* publishes per second; 0: as fast as
                                   the server answers */
  long burst;                   /* publishes at once when the clients
                                   drop, whatever holds the publisher
                                   back but lead */
  unsigned long long tail;      /* publishes after the last recovery */
  const int *pids;              /* the server's processes, for CPU */
  int npids;
  uint64_t deadline;            /* the run's time limit, now_ns() */
  volatile sig_atomic_t *interrupted;
  struct histogram *hist;       /* each recovery, drop to welcome */
  int quiet;
  struct cpu_sample a, b;       /* out: from the first drop until every
                                   client has recovered the last time */
  double pid_cpu[RECOVER_PIDS]; /* out: each pid's CPU seconds then */
};

/* Open the clients and the publisher, publish, drop every client and
 * reconnect it with its last position while publishing goes on (rounds
 * times, each once every client has had window live messages), check
 * every message, close.  Prints the report's key=value line up to its
 * common part (no newline) and a summary on stderr.  0 when every
 * client recovered exactly, -1 otherwise (an error has said why). */
int recover_run(struct recover_params *p);

#endif
