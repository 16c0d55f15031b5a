# moonsocket: `make run` serves the echo sample, `make test` runs every
# suite.  Both install missing Debian packages first (`make deps`).

CC      ?= cc
LUA_INC ?= $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
CFLAGS  ?= -O2 -g
WARN     = -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
ALL_CFLAGS = $(WARN) $(CFLAGS) -fPIC $(LUA_INC)
LIBS     = -lev -lssl -lcrypto -lz -lhiredis -lcares -lnghttp2
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=undefined

# Every csrc/*.c but the runner's main.c is the core.  Each compiles to
# its own object (hidden visibility: the core's names stay inside what
# it is linked into), with its header dependencies (-MMD), so an edit
# rebuilds what it touches; the plain and the sanitized builds keep
# their objects apart.
CORE_SRC = $(filter-out csrc/main.c,$(sort $(wildcard csrc/*.c)))
HEADERS  = $(wildcard csrc/*.h)
OBJ_CFLAGS = $(ALL_CFLAGS) -fvisibility=hidden -MMD -MP

BUILD    = build
PORT    ?= 5000
LUA_PATH_DEV = lua/?.lua;lua/?/init.lua;;

DEB_PACKAGES = lua5.4 liblua5.4-dev libev-dev libssl-dev zlib1g-dev lua-busted \
               lua-socket python3-websockets pkg-config gcc make libhiredis-dev \
               libc-ares-dev libnghttp2-dev \
               lua-cjson
# what only the suites call: the browser test, memcheck and the callgrind
# guard, the Redis backplane, the soak (gdb), the nginx proxy, the
# rockspec (luarocks), test certificates (openssl, and python3's
# cryptography in spec/peers), the fuzz smoke (clang and libFuzzer),
# lua-redis over moonsocket.socket, lua-filesystem (the socket soak),
# HTTP/2 clients (python3-h2, nghttp), promtool (prometheus) for the
# metrics
TEST_PACKAGES = chromium valgrind redis-server gdb nginx luarocks openssl \
                python3-cryptography clang libclang-rt-dev lua-redis \
                lua-filesystem python3-h2 nghttp2-client prometheus
# Node.js for the browser test: Debian's when the machine has none
NODE_PACKAGES = $(if $(shell command -v node 2>/dev/null),,nodejs npm)

.PHONY: all build asan deps test-deps apt-install run test install clean \
        chat dashboard game webhook bridge bench bench-peers fuzz lib examples FORCE install-lua install-lib \
        valgrind soak packages

# `make install` (and luarocks) put the Lua modules under LUADIR, the
# core under LIBDIR and the runner under BINDIR.
PREFIX  ?= /usr/local
LUADIR  ?= $(PREFIX)/share/lua/5.4
LIBDIR  ?= $(PREFIX)/lib/lua/5.4
BINDIR  ?= $(PREFIX)/bin
# ...and the library a host program links (examples/embed) under
# CLIBDIR, its header under INCLUDEDIR and moonsocket.pc under PCDIR.
CLIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PCDIR   ?= $(CLIBDIR)/pkgconfig
LUA_PC  ?= lua5.4
VERSION  = $(shell sed -n 's/.*MOONSOCKET_VERSION "\(.*\)".*/\1/p' \
                   csrc/moonsocket.h)

all: build

build: $(BUILD)/moonsocket $(BUILD)/lib/moonsocket/core.so

asan: $(BUILD)/asan/moonsocket $(BUILD)/asan/lib/moonsocket/core.so \
      $(BUILD)/asan/examples/embed-host

CORE_OBJ = $(CORE_SRC:csrc/%.c=$(BUILD)/obj/%.o)
ASAN_OBJ = $(CORE_SRC:csrc/%.c=$(BUILD)/asan/obj/%.o)

$(BUILD)/obj/%.o: csrc/%.c
	@mkdir -p $(@D)
	$(CC) $(OBJ_CFLAGS) -c -o $@ $<

$(BUILD)/asan/obj/%.o: csrc/%.c
	@mkdir -p $(@D)
	$(CC) $(OBJ_CFLAGS) $(SAN) -O1 -c -o $@ $<

-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/asan/obj/*.d)

# core.so exports luaopen_moonsocket_core alone (csrc/core.map).
$(BUILD)/moonsocket: $(CORE_OBJ) $(BUILD)/obj/main.o
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $^ -llua5.4 $(LIBS) -lm

$(BUILD)/lib/moonsocket/core.so: $(CORE_OBJ) csrc/core.map
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -shared -Wl,--version-script=csrc/core.map \
	  -o $@ $(CORE_OBJ) $(LIBS)

$(BUILD)/asan/moonsocket: $(ASAN_OBJ) $(BUILD)/asan/obj/main.o
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN) -O1 -o $@ $^ -llua5.4 $(LIBS) -lm

$(BUILD)/asan/lib/moonsocket/core.so: $(ASAN_OBJ) csrc/core.map
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN) -O1 -shared \
	  -Wl,--version-script=csrc/core.map -o $@ $(ASAN_OBJ) $(LIBS)

# The library for host programs: the core without the runner, as an
# archive and a shared object.  Both hold one object whose only global
# symbols are the API of csrc/moonsocket.h, so the core's internal names
# (http_*, utf8_*, ms_*) cannot clash with a host's.  Lua is left to the
# host, which links it (moonsocket.pc requires it).
OBJCOPY ?= objcopy

lib: $(BUILD)/libmoonsocket.a $(BUILD)/libmoonsocket.so $(BUILD)/moonsocket.pc

$(BUILD)/libmoonsocket.o: $(CORE_OBJ)
	$(LD) -r -o $@.tmp $(CORE_OBJ)
	$(OBJCOPY) -w --keep-global-symbol='moonsocket_*' \
	  --keep-global-symbol=luaopen_moonsocket_core $@.tmp $@
	@rm -f $@.tmp

$(BUILD)/libmoonsocket.a: $(BUILD)/libmoonsocket.o
	rm -f $@
	$(AR) rcs $@ $<

$(BUILD)/libmoonsocket.so: $(BUILD)/libmoonsocket.o
	$(CC) -shared -o $@ $< $(LIBS)

# Written on every run: it holds PREFIX, which may differ from the last.
$(BUILD)/moonsocket.pc: moonsocket.pc.in FORCE
	@mkdir -p $(@D)
	@sed -e 's|@prefix@|$(PREFIX)|' \
	  -e 's|@libdir@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(CLIBDIR))|' \
	  -e 's|@includedir@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|' \
	  -e 's|@version@|$(VERSION)|' -e 's|@lua_pc@|$(LUA_PC)|' $< > $@

FORCE:

# examples/embed: a host program with its own loop, on the archive (and
# on the sources under the sanitizers, for the tests).
examples: $(BUILD)/examples/embed-host

$(BUILD)/examples/embed-host: examples/embed/host.c csrc/moonsocket.h \
                              $(BUILD)/libmoonsocket.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Icsrc -o $@ examples/embed/host.c \
	  $(BUILD)/libmoonsocket.a -llua5.4 $(LIBS) -lm

$(BUILD)/asan/examples/embed-host: examples/embed/host.c $(ASAN_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN) -O1 -Icsrc -o $@ examples/embed/host.c \
	  $(ASAN_OBJ) -llua5.4 $(LIBS) -lm

# Install what is missing (as root, or through sudo when there is one).
deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(DEB_PACKAGES)"

# What every suite calls: TEST_PACKAGES, Node.js (Debian's when the
# machine has none) and playwright-core from package-lock.json.
test-deps: deps
	@$(MAKE) --no-print-directory apt-install \
	  PACKAGES="$(TEST_PACKAGES) $(NODE_PACKAGES)"
	@[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund

# The Debian packages of `make deps test-deps` on one line (.ci/run
# installs them).
packages:
	@echo $(DEB_PACKAGES) $(TEST_PACKAGES) $(NODE_PACKAGES)

apt-install:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

run: deps
	@$(MAKE) --no-print-directory build
	PORT=$(PORT) LUA_PATH='$(LUA_PATH_DEV)' $(BUILD)/moonsocket examples/echo/app.lua

# The chat sample (examples/chat) on PORT when it is given, else 5001,
# beside the echo's 5000.
CHAT_PORT = $(if $(filter file,$(origin PORT)),5001,$(PORT))

chat: deps
	@$(MAKE) --no-print-directory build
	PORT=$(CHAT_PORT) LUA_PATH='$(LUA_PATH_DEV)' $(BUILD)/moonsocket examples/chat/app.lua

# The dashboard (examples/dashboard) on PORT when it is given, else 5002,
# with WORKERS processes (1); the game (examples/game) on PORT or 5003;
# the webhook (examples/webhook) on PORT or 5004; the bridge
# (examples/bridge, Redis on 127.0.0.1:6379) on PORT or 5005.
DASHBOARD_PORT = $(if $(filter file,$(origin PORT)),5002,$(PORT))
GAME_PORT = $(if $(filter file,$(origin PORT)),5003,$(PORT))
WEBHOOK_PORT = $(if $(filter file,$(origin PORT)),5004,$(PORT))
BRIDGE_PORT = $(if $(filter file,$(origin PORT)),5005,$(PORT))

dashboard: deps
	@$(MAKE) --no-print-directory build
	PORT=$(DASHBOARD_PORT) LUA_PATH='$(LUA_PATH_DEV)' $(BUILD)/moonsocket examples/dashboard/app.lua

game: deps
	@$(MAKE) --no-print-directory build
	PORT=$(GAME_PORT) LUA_PATH='$(LUA_PATH_DEV)' $(BUILD)/moonsocket examples/game/app.lua

webhook: deps
	@$(MAKE) --no-print-directory build
	PORT=$(WEBHOOK_PORT) LUA_PATH='$(LUA_PATH_DEV)' $(BUILD)/moonsocket examples/webhook/app.lua

bridge: deps
	@$(MAKE) --no-print-directory apt-install PACKAGES="lua-redis redis-server"
	@$(MAKE) --no-print-directory build
	PORT=$(BRIDGE_PORT) LUA_PATH='$(LUA_PATH_DEV)' $(BUILD)/moonsocket examples/bridge/app.lua

# Every suite; the last line sums them: "N passed, N failed".
test: test-deps
	@$(MAKE) --no-print-directory build asan examples
	@$(MAKE) --no-print-directory -C bench loadgen
	@sh spec/run.sh

# install-lua is what luarocks installs (into its tree); install-lib is
# the C library for host programs, which goes under PREFIX.
install: install-lua install-lib

install-lua: build
	install -d $(DESTDIR)$(LUADIR)/moonsocket/handlers \
	  $(DESTDIR)$(LIBDIR)/moonsocket $(DESTDIR)$(BINDIR)
	install -m 644 lua/moonsocket/*.lua $(DESTDIR)$(LUADIR)/moonsocket/
	install -m 644 lua/moonsocket/handlers/*.lua \
	  $(DESTDIR)$(LUADIR)/moonsocket/handlers/
	install -m 755 $(BUILD)/lib/moonsocket/core.so \
	  $(DESTDIR)$(LIBDIR)/moonsocket/core.so
	install -m 755 $(BUILD)/moonsocket $(DESTDIR)$(BINDIR)/moonsocket

install-lib: lib
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(CLIBDIR) \
	  $(DESTDIR)$(PCDIR)
	install -m 644 csrc/moonsocket.h $(DESTDIR)$(INCLUDEDIR)/moonsocket.h
	install -m 644 $(BUILD)/libmoonsocket.a \
	  $(DESTDIR)$(CLIBDIR)/libmoonsocket.a
	install -m 755 $(BUILD)/libmoonsocket.so \
	  $(DESTDIR)$(CLIBDIR)/libmoonsocket.so
	install -m 644 $(BUILD)/moonsocket.pc $(DESTDIR)$(PCDIR)/moonsocket.pc

# Benchmarks (bench/README.md): the load generator, and the matrix run
# against moonsocket and its peers side by side.
bench: build
	@$(MAKE) --no-print-directory -C bench

bench-peers: build
	@$(MAKE) --no-print-directory -C bench peers

# libFuzzer over every parser (fuzz/README.md): FUZZ_SECONDS each (60).
fuzz:
	@$(MAKE) --no-print-directory -C fuzz

# The busted suite once with every server under valgrind's memcheck
# (spec/valgrind.sh: a log per process in test-output/valgrind/); fails
# on any error or definite leak.
valgrind: deps
	@$(MAKE) --no-print-directory apt-install PACKAGES=valgrind
	@$(MAKE) --no-print-directory build examples
	@sh spec/valgrind.sh

# 10,000 connections churning for SOAK_SECONDS (300) against one server
# whose memory, descriptors and log are checked (bench/soak.py; gdb reads
# malloc's figures).
soak: deps
	@$(MAKE) --no-print-directory apt-install PACKAGES=gdb
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory -C bench soak

clean:
	rm -rf $(BUILD)
