/* lfile.c - files for static content (opened here, sent by sendfile),
 * HTTP dates, and core.reader for a descriptor beside the sockets */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "binding.h"

static int push_errno(lua_State *L, const char *what, const char *path) {
  int e = errno;
  static const struct { int e; const char *code; } codes[] = {
    { ENOENT, "ENOENT" }, { ENOTDIR, "ENOTDIR" }, { EACCES, "EACCES" },
    { EISDIR, "EISDIR" }, { ELOOP, "ELOOP" }, { ENAMETOOLONG, "ENAMETOOLONG" },
    { EMFILE, "EMFILE" },
  };
  const char *code = "EIO";
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
    if (codes[i].e == e) code = codes[i].code;
  return ms_push_fail(L, lua_pushfstring(L, "%s %s: %s", what, path,
                                         strerror(e)), code);
}

/* An IMF-fixdate (RFC 9110 section 5.6.7), "Sun, 06 Nov 1994 08:49:37
 * GMT", into out[30]: by hand, in English whatever the locale.  The
 * length, or 0 when t is out of range. */
static size_t http_date(char *out, time_t t) {
  static const char days[] = "SunMonTueWedThuFriSat";
  static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  struct tm tm;
  if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
    return 0;
  int year = tm.tm_year + 1900;
  char *p = out;
  memcpy(p, days + 3 * tm.tm_wday, 3);
  p += 3;
  *p++ = ',';
  *p++ = ' ';
  *p++ = (char)('0' + tm.tm_mday / 10);
  *p++ = (char)('0' + tm.tm_mday % 10);
  *p++ = ' ';
  memcpy(p, months + 3 * tm.tm_mon, 3);
  p += 3;
  *p++ = ' ';
  *p++ = (char)('0' + year / 1000);
  *p++ = (char)('0' + year / 100 % 10);
  *p++ = (char)('0' + year / 10 % 10);
  *p++ = (char)('0' + year % 10);
  *p++ = ' ';
  int hms[3] = { tm.tm_hour, tm.tm_min, tm.tm_sec };
  for (int i = 0; i < 3; i++) {
    *p++ = (char)('0' + hms[i] / 10);
    *p++ = (char)('0' + hms[i] % 10);
    *p++ = i < 2 ? ':' : ' ';
  }
  memcpy(p, "GMT", 3);
  return (size_t)(p + 3 - out);
}

/* Lowercase hexadecimal digits of v at p; returns the end. */
static char *put_hex(char *p, unsigned long long v) {
  char tmp[16];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  while (n) *p++ = tmp[--n];
  return p;
}

/* The path of what fd is open at, its links resolved, into buf: asked
 * of /proc (one system call, and the very file opened), else resolved
 * from the name it was opened by.  Its length, or -1. */
static ssize_t resolved(int fd, const char *path, char buf[PATH_MAX]) {
  char proc[32] = "/proc/self/fd/", digits[12];
  size_t at = 14;
  int n = 0;
  do {
    digits[n++] = (char)('0' + fd % 10);
    fd /= 10;
  } while (fd);
  while (n) proc[at++] = digits[--n];
  proc[at] = '\0';
  ssize_t len = readlink(proc, buf, PATH_MAX - 1);
  if (len > 0 && buf[0] == '/') {
    buf[len] = '\0';
    return len;
  }
  return realpath(path, buf) ? (ssize_t)strlen(buf) : -1;
}

/* Whether real (resolved) is root or under it. */
static int under(const char *real, size_t len, const char *root,
                 size_t root_len) {
  if (root_len == 1 && root[0] == '/') return real[0] == '/';
  return len >= root_len && memcmp(real, root, root_len) == 0 &&
         (len == root_len || real[root_len] == '/');
}

/* core.open_file(path [, root]) -> file | nil, message, code.  Regular
 * files only; file.size, file.mtime (s), file.mtime_ns, file.ino, and
 * what a static answer says of it: file.etag, file.last_modified, read
 * from the userdata, not from a table made per file.  With root (an
 * absolute path without links), what path names once its links are
 * resolved must be root or under it, else "EXDEV"; the file is then
 * followed by that resolved path. */
static int l_open_file(lua_State *L) {
  size_t len, root_len = 0;
  const char *path = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, strlen(path) == len, 1, "path contains a NUL byte");
  const char *root = luaL_optlstring(L, 2, NULL, &root_len);
  luaL_argcheck(L, !root || (root[0] == '/' && strlen(root) == root_len),
                2, "absolute path expected");
  struct ms_file *f = lua_newuserdatauv(L, sizeof *f, 0);
  memset(f, 0, sizeof *f);
  f->fd = -1;                          /* closed until it is open */
  luaL_setmetatable(L, FILE_MT);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return push_errno(L, "cannot open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return push_errno(L, "cannot stat", path);
  }
  char real[PATH_MAX];
  ssize_t real_len = 0;
  if (root) {
    real_len = resolved(fd, path, real);
    if (real_len < 0) {
      close(fd);
      return push_errno(L, "cannot resolve", path);
    }
    if (!under(real, (size_t)real_len, root, root_len)) {
      close(fd);
      return ms_push_fail(L, lua_pushfstring(L, "cannot serve %s: outside "
                                             "%s", path, root), "EXDEV");
    }
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    errno = S_ISDIR(st.st_mode) ? EISDIR : EACCES;
    return push_errno(L, "cannot serve", path);
  }
  f->fd = fd;
  f->size = (size_t)st.st_size;
  f->mtime = (long long)st.st_mtim.tv_sec;
  f->mtime_ns = st.st_mtim.tv_nsec;
  f->ino = (unsigned long long)st.st_ino;
  if (!root) return 1;
  lua_pushlstring(L, real, (size_t)real_len);
  return 2;
}

static int file_close(lua_State *L) {
  struct ms_file *f = luaL_checkudata(L, 1, FILE_MT);
  if (f->fd >= 0) {
    close(f->fd);
    f->fd = -1;
  }
  return 0;
}

/* The entity tag of a file as moonsocket.static gives it: its inode,
 * size and mtime in milliseconds, in hexadecimal, quoted. */
static void push_etag(lua_State *L, const struct ms_file *f) {
  char tag[64], *p = tag;
  *p++ = '"';
  p = put_hex(p, f->ino);
  *p++ = '-';
  p = put_hex(p, f->size);
  *p++ = '-';
  p = put_hex(p, (unsigned long long)(f->mtime * 1000 +
                                      f->mtime_ns / 1000000));
  *p++ = '"';
  lua_pushlstring(L, tag, (size_t)(p - tag));
}

static int file_index(lua_State *L) {
  const struct ms_file *f = luaL_checkudata(L, 1, FILE_MT);
  size_t len;
  const char *key = lua_type(L, 2) == LUA_TSTRING
                    ? lua_tolstring(L, 2, &len) : "";
  char date[30];
  size_t n;
  if (strcmp(key, "etag") == 0) push_etag(L, f);
  else if (strcmp(key, "last_modified") == 0 &&
           (n = http_date(date, (time_t)f->mtime)))
    lua_pushlstring(L, date, n);
  else if (strcmp(key, "size") == 0) lua_pushinteger(L, (lua_Integer)f->size);
  else if (strcmp(key, "mtime") == 0) lua_pushinteger(L, f->mtime);
  else if (strcmp(key, "mtime_ns") == 0) lua_pushinteger(L, f->mtime_ns);
  else if (strcmp(key, "ino") == 0) lua_pushinteger(L, (lua_Integer)f->ino);
  else if (strcmp(key, "close") == 0) lua_pushcfunction(L, file_close);
  else lua_pushnil(L);
  return 1;
}

/* core.realpath(path) -> absolute path without links | nil, msg, code */
static int l_realpath(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, strlen(path) == len, 1, "path contains a NUL byte");
  char buf[PATH_MAX];
  if (!realpath(path, buf)) return push_errno(L, "cannot resolve", path);
  lua_pushstring(L, buf);
  return 1;
}

/* core.http_date(seconds) -> "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 7231
 * section 7.1.1.1), and core.parse_http_date(s) -> seconds | nil */
static int l_http_date(lua_State *L) {
  char buf[30];
  size_t n = http_date(buf, (time_t)luaL_checkinteger(L, 1));
  if (!n) return luaL_argerror(L, 1, "time out of range");
  lua_pushlstring(L, buf, n);
  return 1;
}

static int l_parse_http_date(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!end || *end) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)timegm(&tm));
  return 1;
}

/* ------------------------------------------------------------------ */
/* core.reader                                                        */
/* ------------------------------------------------------------------ */

/* core.reader(fd, fn): fn(data) for the bytes that arrive on fd, as
 * they arrive, then fn(nil) at its end; a reader object whose close()
 * stops it.  For a terminal or a pipe (stdin) beside the sockets. */
#define READER_MT "moonsocket.reader"

struct ms_reader {
  ev_io io;
  struct ms_module *module;
  int ref;                      /* anchors the reader while it reads */
  int fn;
};

static void reader_stop(struct ms_reader *r, lua_State *L) {
  if (r->ref == LUA_NOREF) return;
  ev_io_stop(r->module->loop, &r->io);
  luaL_unref(L, LUA_REGISTRYINDEX, r->fn);
  luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
  r->ref = r->fn = LUA_NOREF;
}

static void reader_cb(struct ev_loop *loop, ev_io *w, int revents) {
  struct ms_reader *r = (struct ms_reader *)w;
  lua_State *L = r->module->L;
  char buf[16384];
  (void)loop;
  (void)revents;
  ssize_t n = read(w->fd, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn);
  if (n > 0) {
    lua_pushlstring(L, buf, (size_t)n);
  } else {
    lua_pushnil(L);                      /* the end, or an error */
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
    reader_stop(r, L);
    lua_insert(L, -3);                   /* anchored for the call */
  }
  ms_pcall(NULL, L, 1, 0, "reader");
  if (n <= 0) lua_pop(L, 1);
}

static int l_reader(lua_State *L) {
  struct ms_module *m = ms_module_get(L);
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "not a descriptor");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  struct ms_reader *r = lua_newuserdatauv(L, sizeof *r, 0);
  r->module = m;
  r->ref = r->fn = LUA_NOREF;
  luaL_setmetatable(L, READER_MT);
  lua_pushvalue(L, 2);
  r->fn = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  ev_io_init(&r->io, reader_cb, (int)fd, EV_READ);
  ev_io_start(m->loop, &r->io);
  return 1;
}

static int reader_close(lua_State *L) {
  reader_stop(luaL_checkudata(L, 1, READER_MT), L);
  return 0;
}

void ms_open_file(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "open_file", l_open_file }, { "realpath", l_realpath },
    { "http_date", l_http_date }, { "parse_http_date", l_parse_http_date },
    { "reader", l_reader }, { NULL, NULL }
  };
  static const luaL_Reg file_meta[] = {
    { "__index", file_index }, { "__gc", file_close },
    { "__close", file_close }, { NULL, NULL }
  };
  static const luaL_Reg reader_methods[] = {
    { "close", reader_close }, { NULL, NULL }
  };
  static const luaL_Reg reader_meta[] = {
    { "__close", reader_close }, { "__gc", reader_close }, { NULL, NULL }
  };
  if (luaL_newmetatable(L, FILE_MT)) luaL_setfuncs(L, file_meta, 0);
  lua_pop(L, 1);
  if (luaL_newmetatable(L, READER_MT)) {
    luaL_setfuncs(L, reader_meta, 0);
    luaL_newlib(L, reader_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
