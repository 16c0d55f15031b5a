/* life.h - the life of servers and of the module: their watchers, the
 * sweep's pace, closing, graceful shutdown, signals, running the loop */
#ifndef MS_LIFE_H
#define MS_LIFE_H

#include "server.h"

/* A server that listens: start its watchers (flush before the loop
 * sleeps, the sweep, the shutdown timer) and link it into its module. */
void ms_server_start(struct ms_server *s);
/* Run the sweep of s often enough for the timeouts of o too. */
void ms_server_sweep_for(struct ms_server *s, const struct ms_options *o);
/* Stop accepting and close every connection (1001, or the HTTP answer
 * in progress); the server is finished once the last one is gone. */
void ms_server_close(struct ms_server *s);
/* Close gracefully: what is left after timeout seconds is cut off. */
void ms_server_shutdown(struct ms_server *s, double timeout);
/* Finish the closed servers that have no connection left; end the run
 * of a shutdown once none is left. */
void ms_module_check_done(struct ms_module *m);

/* A new module: its timers, ready (not started). */
void ms_module_init_watchers(struct ms_module *m);
/* Its timers stopped, the log's count written (lua_close). */
void ms_module_stop_watchers(struct ms_module *m);
/* moonsocket_shutdown and moonsocket_run (moonsocket.h). */
void ms_module_shutdown(struct ms_module *m, double timeout);
int ms_module_run(struct ms_module *m);

#endif
