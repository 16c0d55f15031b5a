/* client.h - a WebSocket client connection (RFC 6455 section 4.1):
 * what it holds besides the connection it shares with the server side */
#ifndef MS_CLIENT_H
#define MS_CLIENT_H

#include "handshake.h"
#include "resolver.h"
#include "server.h"

struct ms_client {
  struct ms_conn conn;            /* first: a ws object is this struct */
  struct ms_options opts;         /* the connection's options */
  char accept[WS_ACCEPT_LEN + 1]; /* the Sec-WebSocket-Accept we expect */
  char host[256];                 /* for SNI and the certificate check */
  char error[160];                /* why a connect failed at once */
  int tcp_done;                   /* connected; TLS may follow */
  struct ms_lookup *lookup;       /* the host name resolving, or NULL */
  size_t next_addr;               /* the address to try if this fails */
  struct ms_addrs addrs;          /* the host's, in the order to try */
};

/* TLS settings of one connect */
struct ms_client_tls {
  int enabled;                    /* wss:// */
  int verify;                     /* 1 (default): check the certificate */
  const char *cafile;             /* CA certificates, or NULL: the system's */
};

/* Fill key (24 characters and a NUL) with a fresh Sec-WebSocket-Key
 * and cl->accept with its answer.  Returns -1 without entropy. */
int ms_client_new_key(struct ms_client *cl, char *key);

/* Start connecting to host:port: at once to an address, else once the
 * name has resolved on the loop (resolver.c), trying its addresses in
 * turn.  Failures are reported later, through the close event, as
 * every other. */
void ms_client_connect(struct ms_client *cl, struct ms_server *ctx,
                       const char *host, int port,
                       const struct ms_client_tls *tls);

#endif
