/* metrics.h - what the core counts as it serves: plain integers that
 * the hot path increments, summed when someone asks (lmetrics.c) */
#ifndef MS_METRICS_H
#define MS_METRICS_H

#include <stdint.h>

struct ms_module;

/* The gauges of open connections count them by kind and transport:
 * opened when a connection starts, moved when it becomes an HTTP/2
 * session or a WebSocket, closed when it ends.  A gauge is opened -
 * closed, so that the figures of workers sum. */
enum ms_kind { MS_KIND_HTTP, MS_KIND_H2, MS_KIND_WS, MS_KINDS };
enum ms_carrier { MS_CARRIER_TCP, MS_CARRIER_TLS,
                  MS_CARRIER_STREAM,   /* an HTTP/2 stream */
                  MS_CARRIERS };

#define MS_METRICS_STATUS 600    /* statuses 100..599; [0]: the others */
#define MS_METRICS_APP_CODES 16  /* 3000..4999 close codes kept apart */
#define MS_METRICS_WHY 7         /* enum ms_why */
/* close codes: 1000..1015, then the application codes seen, then the
 * others (0: none, or an application code past the table) */
#define MS_METRICS_CODES (16 + MS_METRICS_APP_CODES + 1)
#define MS_METRICS_ROUTES 32       /* WebSocket routes counted apart */
#define MS_METRICS_ROUTE_PATH 96   /* the longest path counted, NUL too */

/* The calls from C into Lua handlers, timed by what they were for.  One
 * call in MS_CALLBACK_SAMPLE is timed (lcall.c): a clock read pair on
 * every call would cost more than the counting may (docs/metrics.md). */
enum ms_callback { MS_CB_MESSAGE, MS_CB_OPEN, MS_CB_CLOSE, MS_CB_DRAIN,
                   MS_CB_PONG, MS_CB_REQUEST, MS_CB_TIMER,
                   MS_CB_COROUTINE, MS_CB_OTHER, MS_CALLBACKS };
#define MS_CALLBACK_SAMPLE 16
#define MS_CALLBACK_BUCKETS 16   /* the bounds of metrics.c, then +Inf */
extern const uint64_t ms_callback_bounds_ns[MS_CALLBACK_BUCKETS - 1];

/* One process's figures (with workers, one slot each in a mapping
 * shared by the master and the workers: each writes its own). */
struct ms_metrics {
  uint64_t opened[MS_KINDS][MS_CARRIERS], closed[MS_KINDS][MS_CARRIERS];
  uint64_t accepted[2];                /* sockets: plain, TLS */
  uint64_t refused;                    /* by max_connections (503) */
  uint64_t tls_failed;                 /* TLS handshakes that failed */
  uint64_t responses[MS_METRICS_STATUS];   /* HTTP answers, by status */
  uint64_t handshakes[MS_METRICS_STATUS];  /* of WebSocket requests,
                                              by status (101, 200) */
  uint64_t frames_in;                  /* WebSocket frames, any opcode */
  /* by opcode: whole messages (text, binary) and control frames */
  uint64_t messages_in[16], bytes_in[16];
  uint64_t messages_out[16], bytes_out[16];
  uint64_t deflate_in, deflate_out;    /* compressed: bytes before, after */
  uint64_t inflate_in, inflate_out;    /* inflated: bytes before, after */
  uint64_t closes[MS_METRICS_WHY][MS_METRICS_CODES];
  uint16_t app_codes[MS_METRICS_APP_CODES];  /* 0: free */
  char routes[MS_METRICS_ROUTES][MS_METRICS_ROUTE_PATH];  /* "": free */
  uint64_t sends_queued;               /* admitted while EV_WRITE waits */
  uint64_t dropped_backpressure;       /* sends over max_backpressure */
  uint64_t dropped_closed;             /* sends to a closed socket */
  uint64_t backpressure_closes;        /* slow consumers failed 1008 */
  uint64_t unsent;                     /* messages reported unsent */
  uint64_t publishes, deliveries;      /* pub/sub on this process */
  uint64_t topics_created, topics_destroyed;
  uint64_t subscribed, unsubscribed;
  /* the process, as of its last sample (ms_metrics_sample) */
  uint64_t pid;                        /* 0: no process counts here yet */
  uint64_t lua_heap;                   /* bytes, lua_gc LUA_GCCOUNT */
  uint64_t loop_iterations;            /* of its libev loop */
  /* the calls timed: by bucket (not cumulative), and their time */
  uint64_t callbacks[MS_CALLBACKS][MS_CALLBACK_BUCKETS];
  uint64_t callback_ns[MS_CALLBACKS];
  /* by route (the index in routes): WebSockets opened and closed, data
   * messages received and queued */
  uint64_t route_opened[MS_METRICS_ROUTES], route_closed[MS_METRICS_ROUTES];
  uint64_t route_in[MS_METRICS_ROUTES], route_out[MS_METRICS_ROUTES];
};

/* Count a close with code and why (enum ms_why). */
void ms_metrics_close(struct ms_metrics *mt, int code, int why);

/* Count a call into Lua of kind (enum ms_callback) that took ns. */
void ms_metrics_callback(struct ms_metrics *mt, int kind, uint64_t ns);

/* The index of the route path in mt's routes, taken when new; -1 when
 * the table is full or the path too long (that route is not counted
 * apart). */
int ms_metrics_route(struct ms_metrics *mt, const char *path, size_t len);

/* The close code of slot i of mt's closes: 0 for the others. */
int ms_metrics_code_of(const struct ms_metrics *mt, int i);

/* Before the master forks n workers: the figures go to a mapping of
 * n + 1 slots that every process sees (the master's in slot 0).  -1
 * when it cannot be mapped: each process then keeps its own. */
int ms_metrics_share(struct ms_module *m, int n);
/* In worker index just forked: count in its slot.  A worker forked
 * again after one died inherits its counters; the connections and
 * subscriptions that died with it are counted closed. */
void ms_metrics_worker(struct ms_module *m, int index);
/* The slots of m: *n of them (1 without workers). */
const struct ms_metrics *ms_metrics_slots(const struct ms_module *m,
                                          int *n);
void ms_metrics_free(struct ms_module *m);

/* Write this process's figures to its slot: pid, Lua heap, loop
 * iterations (on the sweep, and before a scrape). */
void ms_metrics_sample(struct ms_module *m);
/* What /proc says of process pid: resident bytes, open descriptors (0
 * when it cannot be read: the process is gone, or no /proc). */
uint64_t ms_metrics_resident(uint64_t pid);
uint64_t ms_metrics_descriptors(uint64_t pid);

#endif
