/* events.h - what the core tells the layer above it about connections:
 * the events it emits, and the few questions it asks.  The Lua binding
 * implements them (levents.c, lrequest.c); the core includes this
 * header and no header of the binding. */
#ifndef MS_EVENTS_H
#define MS_EVENTS_H

#include <stddef.h>
#include <stdint.h>

struct http_request;
struct ms_conn;
struct ms_module;
struct ms_server;

/* A connection object for a socket s accepted, anchored until
 * ms_event_release; NULL when memory ran out. */
struct ms_conn *ms_event_accept(struct ms_server *s);

/* A request head arrived: the layer above answers it (ms_conn_respond,
 * ms_conn_respond_error) or upgrades the connection (ms_conn_upgrade,
 * then ms_event_open). */
void ms_event_request(struct ms_conn *c, const struct http_request *req);

/* News for the app waiting for a request's body (ms_conn_body_want):
 * bytes, its end, or why it cannot be read.  Told before the loop
 * sleeps, outside the reading that brought the news; or when the
 * connection is released. */
void ms_event_body(struct ms_conn *c);
/* The WebSocket is open; a client's, once its 101 arrived. */
void ms_event_open(struct ms_conn *c);

/* A whole message, while the WebSocket is open or closing: messages the
 * peer sent before it saw our close frame are still read (RFC 6455
 * section 7.1.2); a handler may decline them then.  Returns 0 when the
 * connection should stop reading (closed, or its handler busy). */
int ms_event_message(struct ms_conn *c, const uint8_t *data, size_t len,
                     unsigned opcode);

/* Room for a whole message of len bytes that ms_event_message can take
 * as it is, without a copy, or NULL: the core then keeps the message
 * in a buffer of its own.  The core fills it and delivers it with
 * CF_MSG_ROOM set in c->flags; ms_event_message takes it by clearing
 * the flag, or leaves it to the core to give back with
 * ms_event_message_room_free, as any room it does not deliver. */
uint8_t *ms_event_message_room(struct ms_conn *c, size_t len);
void ms_event_message_room_free(struct ms_conn *c, uint8_t *room);

/* A pong, while open. */
void ms_event_pong(struct ms_conn *c, const uint8_t *data, size_t len);

/* What the kernel had refused is written, while open. */
void ms_event_drain(struct ms_conn *c);

/* The WebSocket closed (once; c->why and c->unsent say more). */
void ms_event_close(struct ms_conn *c, int code, const char *reason,
                    size_t len);

/* The connection is closed and no watcher of it can fire: the layer
 * above lets its object go. */
void ms_event_release(struct ms_conn *c);

/* A client: the request head to send, which stays valid while c is
 * anchored. */
const char *ms_event_client_request(struct ms_conn *c, size_t *len);

/* A client: the subprotocol of the 101 (p NULL: none).  0 when it was
 * offered (then kept as c->protocol), -1 when not, -2 when memory ran
 * out. */
int ms_event_client_protocol(struct ms_conn *c, const char *p, size_t len);

/* A publish to a topic with history, numbered request, came back from
 * what gives positions (the master: ms_workers_publish_history; Redis:
 * ms_backplane_publish_history): kept and delivered at *pos, reaching
 * `reached` sockets of this process; or, reached -1 and pos NULL, it
 * failed, why says how (NULL: the master gave no position). */
struct ms_hist_pos;
void ms_event_published(struct ms_module *m, uint64_t request,
                        long reached, const struct ms_hist_pos *pos,
                        const char *why);

/* A recovery's read of Redis, numbered request
 * (ms_backplane_fetch_history), is done: what Redis kept is kept here
 * too, as far as it could be.  Or a worker's sync with the master
 * (ms_workers_sync) is answered, failed or timed out. */
void ms_event_recovered(struct ms_module *m, uint64_t request);

/* A member joined or left a topic's presence, here or (with workers)
 * in another worker; info is its encoded table (lpresence.c). */
void ms_event_presence(struct ms_module *m, const char *topic, size_t tlen,
                       int join, const char *info, size_t ilen);

/* The process is about to serve: the one process when the loop first
 * runs, or a worker just forked (what it inherited of the master's
 * timers is dropped first). */
void ms_event_serving(struct ms_module *m);

/* A graceful shutdown began: timers are cancelled, the app may stop. */
void ms_event_shutdown(struct ms_module *m);

#endif
