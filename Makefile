# moonsocket: `make run` serves the echo sample, `make test` runs every
# suite.  Both install missing Debian packages first (`make deps`).

CC      ?= cc
LUA_INC ?= $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
CFLAGS  ?= -O2 -g
WARN     = -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
ALL_CFLAGS = $(WARN) $(CFLAGS) -fPIC $(LUA_INC)
LIBS     = -lev -lssl -lcrypto -lz
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=undefined

CORE_SRC = csrc/utf8.c csrc/frame.c csrc/http.c csrc/handshake.c \
           csrc/options.c csrc/listener.c csrc/conn.c csrc/tls.c \
           csrc/deflate.c csrc/topic.c csrc/lmoonsocket.c
HEADERS  = $(wildcard csrc/*.h)

BUILD    = build
PORT    ?= 5000
LUA_PATH_DEV = lua/?.lua;lua/?/init.lua;;

DEB_PACKAGES = lua5.4 liblua5.4-dev libev-dev libssl-dev zlib1g-dev lua-busted \
               lua-socket python3-websockets pkg-config gcc make
TEST_PACKAGES = chromium valgrind

.PHONY: all build asan deps test-deps apt-install run test install clean \
        bench bench-peers fuzz

# `make install` (and luarocks) put the Lua modules under LUADIR, the
# core under LIBDIR and the runner under BINDIR.
PREFIX  ?= /usr/local
LUADIR  ?= $(PREFIX)/share/lua/5.4
LIBDIR  ?= $(PREFIX)/lib/lua/5.4
BINDIR  ?= $(PREFIX)/bin

all: build

build: $(BUILD)/moonsocket $(BUILD)/lib/moonsocket/core.so

asan: $(BUILD)/asan/moonsocket $(BUILD)/asan/lib/moonsocket/core.so

$(BUILD)/moonsocket: $(CORE_SRC) csrc/main.c $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $(CORE_SRC) csrc/main.c -llua5.4 $(LIBS) -lm

$(BUILD)/lib/moonsocket/core.so: $(CORE_SRC) $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(CORE_SRC) $(LIBS)

$(BUILD)/asan/moonsocket: $(CORE_SRC) csrc/main.c $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN) -O1 -o $@ $(CORE_SRC) csrc/main.c -llua5.4 $(LIBS) -lm

$(BUILD)/asan/lib/moonsocket/core.so: $(CORE_SRC) $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN) -O1 -shared -o $@ $(CORE_SRC) $(LIBS)

# Install what is missing (as root, or through sudo when there is one).
deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(DEB_PACKAGES)"

# The browser test: Debian's Chromium, Node.js (Debian's when the machine
# has none) and playwright-core from package-lock.json.
test-deps: deps
	@pkgs="$(TEST_PACKAGES)"; command -v node >/dev/null || \
	  pkgs="$$pkgs nodejs npm"; \
	$(MAKE) --no-print-directory apt-install PACKAGES="$$pkgs"
	@[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund

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

# Every suite; the last line sums them: "N passed, N failed".
test: test-deps
	@$(MAKE) --no-print-directory build asan
	@sh spec/run.sh

install: build
	install -d $(DESTDIR)$(LUADIR)/moonsocket/handlers \
	  $(DESTDIR)$(LIBDIR)/moonsocket $(DESTDIR)$(BINDIR)
	install -m 644 lua/moonsocket/*.lua $(DESTDIR)$(LUADIR)/moonsocket/
	install -m 644 lua/moonsocket/handlers/*.lua \
	  $(DESTDIR)$(LUADIR)/moonsocket/handlers/
	install -m 755 $(BUILD)/lib/moonsocket/core.so \
	  $(DESTDIR)$(LIBDIR)/moonsocket/core.so
	install -m 755 $(BUILD)/moonsocket $(DESTDIR)$(BINDIR)/moonsocket

# Benchmarks (bench/README.md): the load generator, and the matrix run
# against moonsocket and its peers side by side.
bench: build
	@$(MAKE) --no-print-directory -C bench

bench-peers: build
	@$(MAKE) --no-print-directory -C bench peers

# libFuzzer over every parser (fuzz/README.md): FUZZ_SECONDS each (60).
fuzz:
	@$(MAKE) --no-print-directory -C fuzz

clean:
	rm -rf $(BUILD)
