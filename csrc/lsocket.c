/* lsocket.c - the socket object (moonsocket.socket): TCP, TLS and Unix
 * stream sockets with LuaSocket's client API, whose calls wait on the
 * loop in the coroutine that makes them */
#define _GNU_SOURCE
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>

#include "binding.h"
#include "socket.h"
#include "tls.h"

/* The runtime's waits, set once by moonsocket.socket (socket_hooks):
 * waiter(what) -> co or raises; wait(co, stop); wake(co, ...); and
 * resolve(name) -> list of addresses | nil, err. */
#define HOOKS_KEY "moonsocket.core.socket_hooks"
enum { HOOK_WAITER = 1, HOOK_WAIT, HOOK_WAKE, HOOK_RESOLVE };

/* A socket has two sides that wait apart, as OpenResty's cosockets do:
 * one coroutine may wait to read while another waits to write.  connect
 * and sslhandshake wait on the write side and keep the socket to
 * themselves meanwhile. */
enum { SIDE_READ, SIDE_WRITE };

/* Uservalues: the coroutine waiting on each side, the function that
 * stops that wait (made once per side), the pool key and the host of
 * the last connect (the default name for TLS). */
enum { UV_SOCK_CO = 1,              /* + the side */
       UV_SOCK_STOP = 3,            /* + the side */
       UV_SOCK_KEY = 5, UV_SOCK_HOST, SOCK_NUV = UV_SOCK_HOST };

#define MAX_LINE_DEFAULT 65536
#define KEEPALIVE_IDLE_DEFAULT 60.0
#define KEEPALIVE_POOL_DEFAULT 30

enum {
  SF_UNIX = 1 << 0,         /* a Unix domain socket */
  SF_CONNECTED = 1 << 1,    /* connect is done */
  SF_SETTING_UP = 1 << 2,   /* a connect or a TLS handshake runs: a
                               cancelled wait leaves no half socket */
  SF_NODELAY = 1 << 3,      /* options, applied once connected */
  SF_KEEPALIVE = 1 << 4,
};

/* The wait of one side.  While armed it is in m->waiting and anchors
 * its socket, so that the loop may call back into it. */
struct ms_socket_wait {
  ev_io io;                         /* first: io_cb's cast */
  ev_timer timer;                   /* the call's timeout */
  struct ms_socket *s;
  struct ms_socket_wait *prev, *next;  /* in m->waiting while armed */
  double deadline;                  /* of the call that runs */
  int ref;                          /* the anchor; LUA_NOREF: idle */
};

struct ms_socket {
  struct ms_socket_wait side[2];    /* SIDE_READ, SIDE_WRITE */
  struct ms_module *m;
  SSL *ssl;                         /* after sslhandshake */
  struct ms_sockbuf in;             /* received, not yet taken */
  size_t scanned;                   /* of in, the bytes known to hold no
                                       LF (a line's search goes on) */
  double timeout;                   /* per call, in seconds; < 0: none */
  size_t max_line;                  /* receive("*l") gives up beyond */
  size_t sent;                      /* by the send that runs */
  pid_t pid;                        /* the process that connected */
  int fd;                           /* -1: closed */
  unsigned reused;                  /* times taken from the pool */
  unsigned flags;
};

/* The socket at 1.  Every function that takes one has the metatable as
 * its first upvalue: one pointer comparison, where luaL_checkudata
 * looks the metatable up in the registry by name on every call. */
static struct ms_socket *check_socket(lua_State *L) {
  void *p = lua_touserdata(L, 1);
  if (p && lua_getmetatable(L, 1)) {
    int ours = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (ours) return p;
  }
  luaL_typeerror(L, 1, SOCKET_MT);
  return NULL;
}

static void push_hook(lua_State *L, int which) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, HOOKS_KEY) != LUA_TTABLE)
    luaL_error(L, "moonsocket.socket is not loaded");
  lua_rawgeti(L, -1, which);
  lua_remove(L, -2);
}

static int fail(lua_State *L, const char *why) {
  luaL_pushfail(L);
  lua_pushstring(L, why);
  return 2;
}

/* ------------------------------------------------------------------ */
/* Waiting on the loop                                                 */
/* ------------------------------------------------------------------ */

/* Whether a coroutine waits on that side. */
static int waits(const struct ms_socket *s, int side) {
  return s->side[side].ref != LUA_NOREF;
}

/* Take the coroutine waiting on that side out of its wait: the watchers
 * stop, the anchor goes, and the coroutine is pushed (returns 1); 0
 * when none waits. */
static int take_waiter(struct ms_socket *s, int side, lua_State *L) {
  struct ms_socket_wait *w = &s->side[side];
  if (w->ref == LUA_NOREF) return 0;
  struct ms_module *m = s->m;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->ref);         /* the socket */
  lua_getiuservalue(L, -1, UV_SOCK_CO + side);
  lua_pushnil(L);
  lua_setiuservalue(L, -3, UV_SOCK_CO + side);
  lua_remove(L, -2);                                 /* the coroutine */
  ev_io_stop(m->loop, &w->io);
  ev_timer_stop(m->loop, &w->timer);
  if (w->prev) w->prev->next = w->next;
  else m->waiting = w->next;
  if (w->next) w->next->prev = w->prev;
  w->prev = w->next = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
  w->ref = LUA_NOREF;
  return 1;
}

/* Wake the coroutine at co with the value at value (0: nil): true when
 * it may go on, false when its time is up, nil or (for a reader) the
 * bytes it had received when the socket was closed meanwhile. */
static void wake(lua_State *L, int co, int value) {
  push_hook(L, HOOK_WAKE);
  lua_pushvalue(L, co);
  if (value) lua_pushvalue(L, value);
  else lua_pushnil(L);
  ms_pcall(NULL, L, 2, 0, "socket wake");
}

/* The wait of w ends: ready (1) or timed out (0). */
static void end_wait(struct ms_socket_wait *w, int ready) {
  lua_State *L = w->s->m->L;
  int top = lua_gettop(L);
  if (take_waiter(w->s, (int)(w - w->s->side), L)) {
    lua_pushboolean(L, ready);
    wake(L, top + 1, top + 2);
  }
  lua_settop(L, top);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  (void)revents;
  end_wait((struct ms_socket_wait *)w, 1);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  end_wait((struct ms_socket_wait *)((char *)w -
           offsetof(struct ms_socket_wait, timer)), 0);
}

static void close_socket(struct ms_socket *s, lua_State *L);

/* What the runtime calls when it cancels a wait (thread:cancel, a
 * shutdown): the coroutine will not be resumed.  A connect or a
 * handshake cut short leaves the socket closed. */
static int stop_waiting(lua_State *L) {
  struct ms_socket *s = lua_touserdata(L, lua_upvalueindex(1));
  if (take_waiter(s, (int)lua_tointeger(L, lua_upvalueindex(2)), L))
    lua_pop(L, 1);
  if (s->flags & SF_SETTING_UP) close_socket(s, L);
  return 0;
}

/* Wait on a side until the descriptor is ready for what an operation
 * wants (MS_SOCK_WANT_READ or _WRITE), or the call's deadline passes;
 * then k runs with true (ready), false (timeout), or nil or a string
 * (closed meanwhile) pushed.  The socket is argument 1.  what names the
 * call in the error raised where the running coroutine cannot wait. */
static int wait_for(lua_State *L, struct ms_socket *s, int side, int want,
                    const char *what, lua_KContext ctx, lua_KFunction k) {
  struct ms_socket_wait *w = &s->side[side];
  double left = -1;
  if (s->timeout >= 0) {
    left = w->deadline - ev_now(s->m->loop);
    if (left <= 0) {
      lua_pushboolean(L, 0);
      return k(L, LUA_OK, ctx);
    }
  }
  push_hook(L, HOOK_WAITER);
  lua_pushstring(L, what);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {        /* it cannot wait here */
    if (s->flags & SF_SETTING_UP) close_socket(s, L);  /* no half socket */
    return lua_error(L);
  }
  int co = lua_gettop(L);
  lua_pushvalue(L, co);
  lua_setiuservalue(L, 1, UV_SOCK_CO + side);
  ev_io_set(&w->io, s->fd, want == MS_SOCK_WANT_WRITE ? EV_WRITE : EV_READ);
  ev_io_start(s->m->loop, &w->io);
  if (left >= 0) {
    ev_timer_set(&w->timer, left, 0);
    ev_timer_start(s->m->loop, &w->timer);
  }
  lua_pushvalue(L, 1);
  w->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  w->next = s->m->waiting;
  if (w->next) w->next->prev = w;
  s->m->waiting = w;
  push_hook(L, HOOK_WAIT);
  lua_insert(L, co);                            /* wait, co */
  if (lua_getiuservalue(L, 1, UV_SOCK_STOP + side) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, side);
    lua_pushcclosure(L, stop_waiting, 2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, UV_SOCK_STOP + side);
  }
  lua_callk(L, 2, 1, ctx, k);
  return k(L, LUA_OK, ctx);
}

/* In a continuation: pop what the wait ended with; 1 ready, 0 timed
 * out, -1 closed meanwhile. */
static int wait_result(lua_State *L) {
  int how = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : -1;
  lua_pop(L, 1);
  return how;
}

/* Ready for the next call: buffered bytes in a block of their own. */
static void settle(lua_State *L, struct ms_socket *s) {
  if (ms_sockbuf_settle(&s->in) < 0) luaL_error(L, "not enough memory");
}

/* A call on a side may begin: its deadline.  A buffer still borrowing
 * the scratch block was left so by an error raised mid-call (memory ran
 * out): its bytes are lost. */
static void begin(struct ms_socket *s, int side) {
  if (s->in.borrowed) {
    memset(&s->in, 0, sizeof s->in);
    s->scanned = 0;
  }
  s->side[side].deadline = s->timeout >= 0
                           ? ev_now(s->m->loop) + s->timeout : 0;
}

/* ------------------------------------------------------------------ */
/* Life                                                                */
/* ------------------------------------------------------------------ */

/* Close it.  The coroutines waiting on it are taken out of their waits
 * first and woken last, finding it closed (a reader with what it had
 * received): what they run may use the socket anew. */
static void close_socket(struct ms_socket *s, lua_State *L) {
  int top = lua_gettop(L);
  int reader = take_waiter(s, SIDE_READ, L);
  if (reader)
    lua_pushlstring(L, s->in.data ? s->in.data + s->in.start : "",
                    s->in.len);
  int writer = take_waiter(s, SIDE_WRITE, L);
  if (s->ssl) {
    /* a worker must not end the master's session with close_notify */
    if ((s->flags & SF_CONNECTED) && s->pid == getpid())
      ms_tls_shutdown(s->ssl);
    SSL_free(s->ssl);
    s->ssl = NULL;
  }
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  s->flags &= ~(SF_CONNECTED | SF_SETTING_UP);
  ms_sockbuf_free(&s->in);
  s->scanned = 0;
  if (reader) wake(L, top + 1, top + 2);
  if (writer) wake(L, top + 1 + 2 * reader, 0);
  lua_settop(L, top);
}

/* core.socket(kind, options): a closed socket, "tcp" or "unix";
 * options.max_line bounds receive("*l"). */
static int l_socket(lua_State *L) {
  static const char *const kinds[] = { "tcp", "unix", NULL };
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  size_t max_line = MAX_LINE_DEFAULT;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "max_line") != LUA_TNIL) {
      lua_Integer n = lua_tointeger(L, -1);
      if (!lua_isinteger(L, -1) || n < 1)
        luaL_error(L, "option 'max_line' must be an integer from 1");
      max_line = (size_t)n;
    }
    lua_pop(L, 1);
  }
  struct ms_module *m = ms_module_get(L);
  struct ms_socket *s = lua_newuserdatauv(L, sizeof *s, SOCK_NUV);
  memset(s, 0, sizeof *s);
  s->m = m;
  s->fd = -1;
  s->timeout = -1;
  s->max_line = max_line;
  s->flags = kind == 1 ? SF_UNIX : 0;
  for (int side = SIDE_READ; side <= SIDE_WRITE; side++) {
    struct ms_socket_wait *w = &s->side[side];
    w->s = s;
    w->ref = LUA_NOREF;
    ev_init(&w->io, io_cb);
    ev_init(&w->timer, timer_cb);
    /* in a loop iteration, the server's own connections go first: a
     * burst of replies to many waiting coroutines delays them less */
    ev_set_priority(&w->io, -1);
  }
  luaL_setmetatable(L, SOCKET_MT);
  return 1;
}

/* sock:close() -> 1 */
static int sock_close(lua_State *L) {
  close_socket(check_socket(L), L);
  lua_pushinteger(L, 1);
  return 1;
}

static int sock_gc(lua_State *L) {
  struct ms_socket *s = check_socket(L);
  for (int side = SIDE_READ; side <= SIDE_WRITE; side++)
    if (take_waiter(s, side, L)) lua_pop(L, 1);  /* only at lua_close */
  close_socket(s, L);
  return 0;
}

static int sock_tostring(lua_State *L) {
  struct ms_socket *s = check_socket(L);
  lua_pushfstring(L, "moonsocket.socket (%s, %s%s): %p",
                  s->flags & SF_UNIX ? "unix" : "tcp",
                  s->flags & SF_CONNECTED ? "connected" : "closed",
                  s->ssl ? ", tls" : "", (void *)s);
  return 1;
}

void ms_sockets_stop_waits(struct ms_module *m) {
  while (m->waiting) {
    struct ms_socket_wait *w = m->waiting;
    if (take_waiter(w->s, (int)(w - w->s->side), m->L)) lua_pop(m->L, 1);
  }
}

/* ------------------------------------------------------------------ */
/* Connecting                                                          */
/* ------------------------------------------------------------------ */

static void apply_options(struct ms_socket *s) {
  int on = 1;
  if (s->flags & SF_NODELAY)
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  if (s->flags & SF_KEEPALIVE)
    setsockopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
}

static int connected(lua_State *L, struct ms_socket *s) {
  s->flags = (s->flags | SF_CONNECTED) & ~SF_SETTING_UP;
  s->reused = 0;
  s->pid = getpid();
  if (!(s->flags & SF_UNIX)) apply_options(s);
  lua_pushinteger(L, 1);
  return 1;
}

static int try_address(lua_State *L, struct ms_socket *s, lua_Integer i,
                       const char *why);

/* An address literal into sa; 0 when it is none. */
static socklen_t parse_address(const char *host, int port,
                               struct sockaddr_storage *sa) {
  struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
  memset(sa, 0, sizeof *sa);
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    return sizeof *v4;
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    return sizeof *v6;
  }
  return 0;
}

/* After the wait of a connect in progress; ctx: the next address of
 * the list at 5 to try if this one fails (0: none). */
static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  struct ms_socket *s = lua_touserdata(L, 1);
  int how = wait_result(L);
  (void)status;
  if (s->fd < 0) return fail(L, "closed");
  int err = how > 0 ? ms_sock_connect_result(s->fd) : ETIMEDOUT;
  if (!err) return connected(L, s);
  close_socket(s, L);
  if (ctx > 0 && how > 0)
    return try_address(L, s, (lua_Integer)ctx, ms_sock_strerror(err));
  return fail(L, ms_sock_strerror(err));
}

/* Connect to sa; next is the index of the address to try after it in
 * the list at 5, 0 when there is none. */
static int start_connect(lua_State *L, struct ms_socket *s,
                         const struct sockaddr_storage *sa, socklen_t len,
                         lua_Integer next) {
  int err;
  int fd = ms_sock_connect((const struct sockaddr *)sa, len, &err);
  if (fd < 0) {
    if (next > 0) return try_address(L, s, next, ms_sock_strerror(err));
    return fail(L, ms_sock_strerror(err));
  }
  s->fd = fd;
  s->flags |= SF_SETTING_UP;
  if (err == 0) return connected(L, s);
  return wait_for(L, s, SIDE_WRITE, MS_SOCK_WANT_WRITE, "connect()", next,
                  connect_k);
}

/* Try the addresses of the list at 5 from i on; why is the last
 * failure, returned when none is left (NULL: none was tried). */
static int try_address(lua_State *L, struct ms_socket *s, lua_Integer i,
                       const char *why) {
  int port = (int)lua_tointeger(L, 3);
  for (;; i++) {
    if (lua_rawgeti(L, 5, i) == LUA_TNIL) {
      if (why) return fail(L, why);
      luaL_pushfail(L);
      lua_pushfstring(L, "cannot resolve '%s': no address",
                      lua_tostring(L, 2));
      return 2;
    }
    struct sockaddr_storage sa;
    const char *a = lua_tostring(L, -1);
    socklen_t len = a ? parse_address(a, port, &sa) : 0;
    lua_pop(L, 1);
    if (len) return start_connect(L, s, &sa, len, i + 1);
  }
}

/* After the resolver: its list, or nil and "cannot resolve 'NAME':
 * why", which connect returns as it is. */
static int resolved_k(lua_State *L, int status, lua_KContext ctx) {
  struct ms_socket *s = lua_touserdata(L, 1);
  (void)status;
  (void)ctx;
  if (!lua_istable(L, -2)) {
    if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushfstring(L, "cannot resolve '%s'", lua_tostring(L, 2));
    }
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_pop(L, 1);
  lua_replace(L, 5);
  if (s->fd >= 0) return fail(L, "already connected");
  return try_address(L, s, 1, NULL);
}

/* sock:connect(host, port [, options]) or, for a Unix socket,
 * sock:connect(path [, options]) -> 1 | nil, err.  options.pool names
 * the keep-alive pool (else "host:port", "unix:path"). */
static int sock_connect(lua_State *L) {
  struct ms_socket *s = check_socket(L);
  int is_unix = s->flags & SF_UNIX;
  const char *host = luaL_checkstring(L, 2);
  lua_Integer port = 0;
  int opts = 3;
  if (!is_unix) {
    port = luaL_checkinteger(L, 3);
    luaL_argcheck(L, port >= 1 && port <= 65535, 3,
                  "port from 1 to 65535 expected");
    opts = 4;
  }
  if (!lua_isnoneornil(L, opts)) luaL_checktype(L, opts, LUA_TTABLE);
  lua_settop(L, 4);
  if (s->fd >= 0) return fail(L, "already connected");
  /* the pool key, at 5 for now */
  if (lua_istable(L, opts) && lua_getfield(L, opts, "pool") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "option 'pool' must be a string");
  } else {
    lua_settop(L, 4);
    if (is_unix) lua_pushfstring(L, "unix:%s", host);
    else lua_pushfstring(L, "%s:%d", host, (int)port);
  }
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 1, UV_SOCK_KEY);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, UV_SOCK_HOST);
  begin(s, SIDE_WRITE);
  size_t keylen;
  const char *key = lua_tolstring(L, 5, &keylen);
  int fd;
  SSL *ssl;
  unsigned reused;
  if (ms_pool_take(s->m, key, keylen, &fd, &ssl, &reused)) {
    s->fd = fd;
    s->ssl = ssl;
    connected(L, s);
    s->reused = reused + 1;
    return 1;
  }
  lua_pushnil(L);
  lua_replace(L, 5);                    /* 5: the resolver's list */
  struct sockaddr_storage sa;
  socklen_t len;
  if (is_unix) {
    struct sockaddr_un *un = (struct sockaddr_un *)&sa;
    size_t n = strlen(host);
    if (n >= sizeof un->sun_path) return fail(L, "path too long");
    memset(un, 0, sizeof *un);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, host, n);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return start_connect(L, s, &sa, len, 0);
  }
  if ((len = parse_address(host, (int)port, &sa)))
    return start_connect(L, s, &sa, len, 0);
  push_hook(L, HOOK_RESOLVE);           /* a name: it may wait, for */
  lua_pushvalue(L, 2);                  /* the socket's timeout at most */
  if (s->timeout >= 0) lua_pushnumber(L, s->timeout);
  else lua_pushnil(L);
  lua_callk(L, 2, 2, 0, resolved_k);
  return resolved_k(L, LUA_OK, 0);
}

/* ------------------------------------------------------------------ */
/* TLS                                                                 */
/* ------------------------------------------------------------------ */

static int handshake_k(lua_State *L, int status, lua_KContext ctx);

static int handshake_step(lua_State *L, struct ms_socket *s) {
  char why[256];
  int r = ms_sock_tls_handshake(s->ssl, why, sizeof why);
  if (r == 1) {
    s->flags &= ~SF_SETTING_UP;
    lua_pushboolean(L, 1);
    return 1;
  }
  if (r == MS_SOCK_ERROR) {
    close_socket(s, L);
    return fail(L, why);
  }
  return wait_for(L, s, SIDE_WRITE, r, "sslhandshake()", 0, handshake_k);
}

static int handshake_k(lua_State *L, int status, lua_KContext ctx) {
  struct ms_socket *s = lua_touserdata(L, 1);
  int how = wait_result(L);
  (void)status;
  (void)ctx;
  if (how < 0 || s->fd < 0) return fail(L, "closed");
  if (how == 0) {
    close_socket(s, L);
    return fail(L, "timeout");
  }
  return handshake_step(L, s);
}

/* sock:sslhandshake{ server_name, verify = true, cafile } -> true |
 * nil, err.  server_name defaults to the host given to connect. */
static int sock_sslhandshake(lua_State *L) {
  struct ms_socket *s = check_socket(L);
  const char *name = NULL, *cafile = NULL;
  int verify = 1;
  lua_settop(L, 2);
  if (!lua_isnil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "server_name") != LUA_TNIL &&
        !(name = lua_tostring(L, -1)))
      luaL_error(L, "option 'server_name' must be a string");
    if (lua_getfield(L, 2, "verify") != LUA_TNIL) {
      if (!lua_isboolean(L, -1))
        luaL_error(L, "option 'verify' must be a boolean");
      verify = lua_toboolean(L, -1);
    }
    if (lua_getfield(L, 2, "cafile") != LUA_TNIL &&
        !(cafile = lua_tostring(L, -1)))
      luaL_error(L, "option 'cafile' must be a string");
  }
  if (!(s->flags & SF_CONNECTED)) return fail(L, "closed");
  if (waits(s, SIDE_READ) || waits(s, SIDE_WRITE))
    return fail(L, "socket busy");
  if (s->ssl) {                         /* from the pool: TLS already */
    lua_pushboolean(L, 1);
    return 1;
  }
  if (!name && lua_getiuservalue(L, 1, UV_SOCK_HOST) == LUA_TSTRING &&
      !(s->flags & SF_UNIX))
    name = lua_tostring(L, -1);
  char why[256];
  if (!(s->ssl = ms_sock_tls_new(s->m, s->fd, name, verify, cafile, why,
                                 sizeof why)))
    return fail(L, why);
  lua_settop(L, 2);
  begin(s, SIDE_WRITE);
  s->flags |= SF_SETTING_UP;
  return handshake_step(L, s);
}

/* ------------------------------------------------------------------ */
/* Receiving                                                           */
/* ------------------------------------------------------------------ */

enum { PAT_LINE, PAT_ALL, PAT_COUNT };

/* The pattern at 2 (LuaSocket's: "*l" or "l", "*a" or "a", a count). */
static int receive_pattern(lua_State *L, size_t *count) {
  int type = lua_type(L, 2);
  if (type == LUA_TNONE || type == LUA_TNIL) return PAT_LINE;
  if (type == LUA_TSTRING) {   /* no count starts with '*', 'l' or 'a' */
    const char *p = lua_tostring(L, 2);
    if (p[0] == '*') p++;
    if (p[0] == 'l') return PAT_LINE;
    if (p[0] == 'a') return PAT_ALL;
  }
  if (!lua_isnumber(L, 2))
    return luaL_argerror(L, 2, "invalid receive pattern");
  lua_Number n = lua_tonumber(L, 2);
  luaL_argcheck(L, n >= 0 && n < 0x1p53, 2, "invalid receive count");
  *count = (size_t)n;
  return PAT_COUNT;
}

/* Push the prefix at 3 and p[0..n), without the CRs of a line. */
static void push_data(lua_State *L, const char *p, size_t n, int line) {
  size_t plen = 0;
  const char *prefix = lua_isnil(L, 3) ? NULL : lua_tolstring(L, 3, &plen);
  size_t keep = line && n && p[n - 1] == '\r' ? n - 1 : n;
  int crs = line && memchr(p, '\r', keep) != NULL;
  if (!prefix && !crs) {
    lua_pushlstring(L, p, keep);
    return;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (prefix) luaL_addlstring(&b, prefix, plen);
  for (size_t i = 0; i < keep; i++)
    if (p[i] != '\r') luaL_addchar(&b, p[i]);
  luaL_pushresult(&b);
}

/* Take n bytes from the front of the buffer. */
static void consume(struct ms_socket *s, size_t n) {
  ms_sockbuf_consume(&s->in, n);
  s->scanned = 0;
}

/* A failed receive: nil, why and what had come (taken). */
static int fail_partial(lua_State *L, struct ms_socket *s, int pat,
                        const char *why) {
  luaL_pushfail(L);
  lua_pushstring(L, why);
  push_data(L, s->in.data ? s->in.data + s->in.start : "", s->in.len,
            pat == PAT_LINE);
  consume(s, s->in.len);
  settle(L, s);
  return 3;
}

/* Take what the pattern asks from the buffer when it is there: 1 (the
 * data pushed), 0 (more is needed), -1 (a line over max_line). */
static int take(lua_State *L, struct ms_socket *s, int pat, size_t count) {
  struct ms_sockbuf *b = &s->in;
  const char *p = b->data ? b->data + b->start : "";
  if (pat == PAT_COUNT) {
    if (b->len < count) return 0;
    push_data(L, p, count, 0);
    consume(s, count);
    return 1;
  }
  if (pat == PAT_ALL || b->len == 0) return 0;
  const char *nl = memchr(p + s->scanned, '\n', b->len - s->scanned);
  size_t n = nl ? (size_t)(nl - p) : b->len;
  if (n > s->max_line) return -1;
  if (!nl) {
    s->scanned = b->len;
    return 0;
  }
  push_data(L, p, n, 1);
  consume(s, n + 1);
  return 1;
}

static int receive_k(lua_State *L, int status, lua_KContext ctx);

static int receive_step(lua_State *L, struct ms_socket *s) {
  size_t count = 0;
  int pat = receive_pattern(L, &count);
  for (;;) {
    int r = take(L, s, pat, count);
    if (r > 0) {
      settle(L, s);
      return 1;
    }
    if (r < 0) {
      close_socket(s, L);
      return fail(L, "line too long");
    }
    int err = 0;
    ssize_t n = ms_sock_read(s->m, s->fd, s->ssl, &s->in, &err);
    if (n > 0) continue;
    if (n == MS_SOCK_EOF) {
      /* LuaSocket: "*a" gives what came before the end, if anything */
      if (pat != PAT_ALL || s->in.len == 0)
        return fail_partial(L, s, pat, "closed");
      push_data(L, s->in.data ? s->in.data + s->in.start : "", s->in.len,
                0);
      consume(s, s->in.len);
      settle(L, s);
      return 1;
    }
    if (n == MS_SOCK_ERROR)
      return fail_partial(L, s, pat, ms_sock_strerror(err));
    settle(L, s);
    return wait_for(L, s, SIDE_READ, (int)n, "receive()", 0, receive_k);
  }
}

static int receive_k(lua_State *L, int status, lua_KContext ctx) {
  struct ms_socket *s = lua_touserdata(L, 1);
  size_t count;
  int pat = receive_pattern(L, &count);
  (void)status;
  (void)ctx;
  if (lua_type(L, -1) == LUA_TSTRING) { /* closed: what it had received */
    size_t n;
    const char *p = lua_tolstring(L, -1, &n);
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    push_data(L, p, n, pat == PAT_LINE);
    return 3;
  }
  int how = wait_result(L);
  if (how < 0 || s->fd < 0) return fail_partial(L, s, pat, "closed");
  if (how == 0) return fail_partial(L, s, pat, "timeout");
  return receive_step(L, s);
}

/* sock:receive(pattern, prefix) -> data | nil, err, partial */
static int sock_receive(lua_State *L) {
  struct ms_socket *s = check_socket(L);
  size_t count;
  receive_pattern(L, &count);           /* raises on a bad one */
  if (!lua_isnoneornil(L, 3)) luaL_checkstring(L, 3);
  lua_settop(L, 3);
  if (!(s->flags & SF_CONNECTED)) return fail_partial(L, s, 0, "closed");
  if (waits(s, SIDE_READ) || (s->flags & SF_SETTING_UP))
    return fail(L, "socket busy");
  begin(s, SIDE_READ);
  return receive_step(L, s);
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */
/* ------------------------------------------------------------------ */

/* The span of send(data, i, j), as string.sub takes it: first index
 * and length. */
static size_t send_span(lua_State *L, size_t size, size_t *first) {
  lua_Integer i = luaL_optinteger(L, 3, 1), j = luaL_optinteger(L, 4, -1);
  lua_Integer n = (lua_Integer)size;
  if (i < 0) i = n + i + 1;
  if (j < 0) j = n + j + 1;
  if (i < 1) i = 1;
  if (j > n) j = n;
  *first = (size_t)i;
  return i <= j ? (size_t)(j - i + 1) : 0;
}

static int send_k(lua_State *L, int status, lua_KContext ctx);

static int send_step(lua_State *L, struct ms_socket *s) {
  size_t size, first;
  const char *data = lua_tolstring(L, 2, &size);
  size_t len = send_span(L, size, &first);
  while (s->sent < len) {
    int err = 0;
    ssize_t n = ms_sock_write(s->fd, s->ssl, data + first - 1 + s->sent,
                              len - s->sent, &err);
    if (n > 0) {
      s->sent += (size_t)n;
      continue;
    }
    if (n == MS_SOCK_ERROR) {
      luaL_pushfail(L);
      lua_pushstring(L, ms_sock_strerror(err));
      lua_pushinteger(L, (lua_Integer)(first - 1 + s->sent));
      return 3;
    }
    return wait_for(L, s, SIDE_WRITE, (int)n, "send()", 0, send_k);
  }
  lua_pushinteger(L, (lua_Integer)(first - 1 + s->sent));
  return 1;
}

static int send_k(lua_State *L, int status, lua_KContext ctx) {
  struct ms_socket *s = lua_touserdata(L, 1);
  int how = wait_result(L);
  (void)status;
  (void)ctx;
  if (how <= 0 || s->fd < 0) {
    size_t size, first;
    lua_tolstring(L, 2, &size);
    send_span(L, size, &first);
    luaL_pushfail(L);
    lua_pushstring(L, how == 0 && s->fd >= 0 ? "timeout" : "closed");
    lua_pushinteger(L, (lua_Integer)(first - 1 + s->sent));
    return 3;
  }
  return send_step(L, s);
}

/* sock:send(data, i, j) -> last index sent | nil, err, last sent */
static int sock_send(lua_State *L) {
  struct ms_socket *s = check_socket(L);
  size_t size, first;
  luaL_checklstring(L, 2, &size);
  send_span(L, size, &first);           /* raises on bad indices */
  lua_settop(L, 4);
  int connected = s->flags & SF_CONNECTED;
  if (!connected || waits(s, SIDE_WRITE) || (s->flags & SF_SETTING_UP)) {
    luaL_pushfail(L);
    lua_pushstring(L, connected ? "socket busy" : "closed");
    lua_pushinteger(L, (lua_Integer)first - 1);
    return 3;
  }
  begin(s, SIDE_WRITE);
  s->sent = 0;
  return send_step(L, s);
}

/* ------------------------------------------------------------------ */
/* Keep-alive                                                          */
/* ------------------------------------------------------------------ */

/* sock:setkeepalive(idle_seconds, pool_size) -> 1 | nil, err.  The
 * connection goes to its pool (the socket is closed); a connect to the
 * same pool key takes it back. */
static int sock_setkeepalive(lua_State *L) {
  struct ms_socket *s = check_socket(L);
  lua_Number idle = luaL_optnumber(L, 2, KEEPALIVE_IDLE_DEFAULT);
  lua_Integer size = luaL_optinteger(L, 3, KEEPALIVE_POOL_DEFAULT);
  luaL_argcheck(L, idle >= 0 && idle <= 1e9, 2, "seconds from 0 expected");
  luaL_argcheck(L, size >= 1 && size <= 1000000, 3,
                "pool size from 1 expected");
  if (!(s->flags & SF_CONNECTED)) return fail(L, "closed");
  if (waits(s, SIDE_READ) || waits(s, SIDE_WRITE))
    return fail(L, "socket busy");
  int state = s->in.len ? MS_IDLE_UNREAD : ms_sock_idle_check(s->fd, s->ssl);
  if (state != MS_IDLE_OK) {
    close_socket(s, L);
    return fail(L, state == MS_IDLE_UNREAD ? "unread data in buffer"
                                           : "closed");
  }
  size_t keylen;
  lua_getiuservalue(L, 1, UV_SOCK_KEY);
  const char *key = lua_tolstring(L, -1, &keylen);
  if (!key || ms_pool_put(s->m, key, keylen, s->fd, s->ssl, s->reused,
                          idle, (size_t)size) < 0) {
    close_socket(s, L);
    return fail(L, "not enough memory");
  }
  s->fd = -1;                           /* the pool has it now */
  s->ssl = NULL;
  close_socket(s, L);
  lua_pushinteger(L, 1);
  return 1;
}

/* sock:getreusedtimes() -> n | nil, "closed" */
static int sock_getreusedtimes(lua_State *L) {
  struct ms_socket *s = check_socket(L);
  if (!(s->flags & SF_CONNECTED)) return fail(L, "closed");
  lua_pushinteger(L, s->reused);
  return 1;
}

/* ------------------------------------------------------------------ */
/* Options and addresses                                               */
/* ------------------------------------------------------------------ */

/* sock:settimeout(seconds [, mode]) -> 1; nil or negative: none.  The
 * time bounds each call as a whole (LuaSocket's modes "b" and "t" are
 * taken and mean the same). */
static int sock_settimeout(lua_State *L) {
  struct ms_socket *s = check_socket(L);
  lua_Number t = luaL_optnumber(L, 2, -1);
  const char *mode = luaL_optstring(L, 3, "b");
  luaL_argcheck(L, mode[0] == 'b' || mode[0] == 't' || mode[0] == 'r', 3,
                "invalid timeout mode");
  s->timeout = t >= 0 ? (t > 1e9 ? 1e9 : t) : -1;
  lua_pushinteger(L, 1);
  return 1;
}

/* sock:setoption(name, value) -> 1 | nil, err: "tcp-nodelay" and
 * "keepalive" (booleans, kept until connected), "max-line" (bytes). */
static int sock_setoption(lua_State *L) {
  static const char *const names[] = { "tcp-nodelay", "keepalive",
                                       "max-line", NULL };
  static const unsigned bits[] = { SF_NODELAY, SF_KEEPALIVE };
  struct ms_socket *s = check_socket(L);
  int opt = luaL_checkoption(L, 2, NULL, names);
  if (opt == 2) {
    lua_Integer n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, n >= 1, 3, "bytes from 1 expected");
    s->max_line = (size_t)n;
    lua_pushinteger(L, 1);
    return 1;
  }
  luaL_checkany(L, 3);
  int on = lua_toboolean(L, 3);
  if (on) s->flags |= bits[opt];
  else s->flags &= ~bits[opt];
  if (s->flags & SF_CONNECTED) {
    int level = opt == 0 ? IPPROTO_TCP : SOL_SOCKET;
    int name = opt == 0 ? TCP_NODELAY : SO_KEEPALIVE;
    if (setsockopt(s->fd, level, name, &on, sizeof on) < 0)
      return fail(L, ms_sock_strerror(errno));
  }
  lua_pushinteger(L, 1);
  return 1;
}

/* sock:shutdown(how) -> 1 | nil, err; how "both" (default), "send",
 * "receive". */
static int sock_shutdown(lua_State *L) {
  static const char *const hows[] = { "receive", "send", "both", NULL };
  struct ms_socket *s = check_socket(L);
  int how = luaL_checkoption(L, 2, "both", hows);
  if (!(s->flags & SF_CONNECTED)) return fail(L, "closed");
  if (s->ssl && how != 0) ms_tls_shutdown(s->ssl);
  if (shutdown(s->fd, how == 0 ? SHUT_RD : how == 1 ? SHUT_WR
                                                   : SHUT_RDWR) < 0)
    return fail(L, ms_sock_strerror(errno));
  lua_pushinteger(L, 1);
  return 1;
}

/* LuaSocket's form: address, port, "inet" or "inet6"; a Unix socket's
 * path. */
static int push_name(lua_State *L, const struct sockaddr_storage *sa,
                     socklen_t len) {
  char text[INET6_ADDRSTRLEN];
  if (sa->ss_family == AF_UNIX) {
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                 ? strnlen(un->sun_path, len - offsetof(struct sockaddr_un,
                                                        sun_path))
                 : 0;
    lua_pushlstring(L, un->sun_path, n);
    return 1;
  }
  int v6 = sa->ss_family == AF_INET6;
  const void *addr = v6 ? (const void *)&((const struct sockaddr_in6 *)sa)
                                           ->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)sa)
                                           ->sin_addr;
  uint16_t port = v6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                     : ((const struct sockaddr_in *)sa)->sin_port;
  inet_ntop(sa->ss_family, addr, text, sizeof text);
  lua_pushstring(L, text);
  lua_pushinteger(L, ntohs(port));
  lua_pushstring(L, v6 ? "inet6" : "inet");
  return 3;
}

static int get_name(lua_State *L, int peer) {
  struct ms_socket *s = check_socket(L);
  if (!(s->flags & SF_CONNECTED)) return fail(L, "closed");
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  if ((peer ? getpeername(s->fd, (struct sockaddr *)&sa, &len)
            : getsockname(s->fd, (struct sockaddr *)&sa, &len)) < 0)
    return fail(L, ms_sock_strerror(errno));
  return push_name(L, &sa, len);
}

static int sock_getpeername(lua_State *L) {
  return get_name(L, 1);
}

static int sock_getsockname(lua_State *L) {
  return get_name(L, 0);
}

/* core.socket_hooks(waiter, wait, wake, resolve): the runtime's waits
 * and the resolver's door (moonsocket.socket sets them once). */
static int l_socket_hooks(lua_State *L) {
  lua_createtable(L, 4, 0);
  for (int i = 1; i <= 4; i++) {
    luaL_checktype(L, i, LUA_TFUNCTION);
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, HOOKS_KEY);
  return 0;
}

void ms_open_socket(lua_State *L) {
  static const luaL_Reg socket_methods[] = {
    { "connect", sock_connect }, { "sslhandshake", sock_sslhandshake },
    { "send", sock_send }, { "receive", sock_receive },
    { "settimeout", sock_settimeout }, { "setoption", sock_setoption },
    { "setkeepalive", sock_setkeepalive },
    { "getreusedtimes", sock_getreusedtimes },
    { "shutdown", sock_shutdown }, { "close", sock_close },
    { "getpeername", sock_getpeername },
    { "getsockname", sock_getsockname }, { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", sock_gc }, { "__close", sock_close },
    { "__tostring", sock_tostring }, { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "socket", l_socket }, { "socket_hooks", l_socket_hooks },
    { NULL, NULL }
  };
  if (luaL_newmetatable(L, SOCKET_MT)) {
    lua_pushvalue(L, -1);              /* check_socket's upvalue */
    luaL_setfuncs(L, meta, 1);
    luaL_newlibtable(L, socket_methods);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, socket_methods, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
