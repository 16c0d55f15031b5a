/* backplane.h - publish/subscribe across processes through Redis: what
 * one node publishes reaches the subscribers of every node */
#ifndef MS_BACKPLANE_H
#define MS_BACKPLANE_H

#include <stddef.h>

#include <lua.h>

struct ms_module;
struct ms_backplane;

enum ms_backplane_status {
  MS_BP_SENT,          /* handed to Redis (at most once, unordered
                          between nodes beyond what Redis orders) */
  MS_BP_UNAVAILABLE,   /* Redis is down: this node only */
  MS_BP_DROPPED,       /* over max_pending: this node only */
  MS_BP_NO_MEMORY
};

/* Send a message published on this node to the other nodes; it was
 * already delivered here.  Never raises. */
enum ms_backplane_status ms_backplane_publish(struct ms_backplane *b,
                                              const char *topic,
                                              size_t topic_len,
                                              unsigned opcode,
                                              const char *data,
                                              size_t len);

/* Close the module's backplane, if any: its connections and timer are
 * gone after this, so they keep no loop running. */
void ms_backplane_close_module(struct ms_module *m);

/* backplane(options) -> a moonsocket.backplane, attached to the module
 * m (core.backplane; README.md, Backplane). */
int ms_lua_backplane(lua_State *L, struct ms_module *m);

#endif
