# Build, install and test the platform's uWSGI plugins.
#
#   make                         build every plugin as target/plugins/NAME_plugin.so
#   make install                 copy them into the target uWSGI's plugin dir
#   make test                    build, then run every test (unit, integration, end to end)
#   make UWSGI_SRC=/path/to/uwsgi   build against a uWSGI source tree instead of the
#                                installed binary (plugins land in target/uwsgi-src/plugins)
#   make UWSGI_BIN=/opt/x/uwsgi  build against another installed uWSGI binary
#
# PLUGIN_DIR defaults to the plugin dir compiled into the target uWSGI; DESTDIR is honoured.

CARGO        ?= cargo
UWSGI_BIN    ?= $(shell command -v uwsgi 2>/dev/null || echo uwsgi)
PLUGINS      := unbit_containers uwsgi_selftest unbit_subscriptions unbit_router unbit_vassal unbit_alarms unbit_cluster
CARGO_FLAGS  ?= --release

export UWSGI_BIN
ifdef UWSGI_PROFILE
  export UWSGI_PROFILE
endif

# A CI run builds once from a fresh clone: incremental caches would only add gigabytes to disk.
ifdef CI
  export CARGO_INCREMENTAL ?= 0
endif

ifdef UWSGI_SRC
  export UWSGI_SRC
  # A source-tree build must never overwrite the plugins built for the installed uWSGI.
  export CARGO_TARGET_DIR := $(CURDIR)/target/uwsgi-src
  TARGET_CFLAGS = $(shell cd $(UWSGI_SRC) && python3 uwsgiconfig.py --cflags $(UWSGI_PROFILE) | tail -n1)
else
  export CARGO_TARGET_DIR ?= $(CURDIR)/target
  TARGET_CFLAGS = $(shell $(UWSGI_BIN) --cflags)
endif
OUT := $(CARGO_TARGET_DIR)/plugins

# -DUWSGI_PLUGIN_DIR="\"/usr/lib/uwsgi/plugins\"" -> /usr/lib/uwsgi/plugins
PLUGIN_DIR ?= $(shell echo '$(TARGET_CFLAGS)' | tr ' ' '\n' | sed -n 's/^-DUWSGI_PLUGIN_DIR=//p' | tr -d '"\\')

.PHONY: all deps plugins binaries install uninstall test check clean run legion-demo

all: plugins

# cargo names a cdylib libNAME.so; uWSGI derives the entry symbol from the file name, so the
# file must be NAME_plugin.so to export NAME_plugin.
# With them the containers' NSS module, libnss_unbit.so.2 (crates/nss-unbit): it goes into the
# platform dir's lib/ (/opt/unbit/lib in containers), where the distros link to it.
plugins: deps
	$(CARGO) build $(CARGO_FLAGS) $(addprefix -p ,$(PLUGINS)) -p nss-unbit
	@mkdir -p $(OUT)
	@for p in $(PLUGINS); do \
	  install -m 0755 $(CARGO_TARGET_DIR)/release/lib$$p.so $(OUT)/$${p}_plugin.so.tmp && \
	  mv -f $(OUT)/$${p}_plugin.so.tmp $(OUT)/$${p}_plugin.so; \
	done
	@install -m 0644 $(CARGO_TARGET_DIR)/release/libnss_unbit.so $(OUT)/libnss_unbit.so.2.tmp && \
	  mv -f $(OUT)/libnss_unbit.so.2.tmp $(OUT)/libnss_unbit.so.2
	@echo "plugins in $(OUT): $(PLUGINS) (and libnss_unbit.so.2)"

install: plugins
	@test -n "$(PLUGIN_DIR)" || { echo "cannot tell the target uWSGI's plugin dir; pass PLUGIN_DIR=..."; exit 1; }
	install -d $(DESTDIR)$(PLUGIN_DIR)
	@for p in $(PLUGINS); do install -m 0644 $(OUT)/$${p}_plugin.so $(DESTDIR)$(PLUGIN_DIR)/$${p}_plugin.so; done
	@echo "installed into $(DESTDIR)$(PLUGIN_DIR)"

uninstall:
	@for p in $(PLUGINS); do rm -f $(DESTDIR)$(PLUGIN_DIR)/$${p}_plugin.so; done

# System packages (stock uWSGI, libclang for bindgen, test servers). Quick when all present.
deps:
	@bash scripts/install-deps.sh

# The node's programs, built as a node runs them: the end-to-end tests start these binaries.
binaries: deps
	$(CARGO) build --release -p unbit-api -p node-sync -p acme -p ssh-session -p metrics -p alarms -p oci-import -p cluster-links

# The README's test command. Lints first: a warning is a failure.
test: deps plugins binaries check
	$(CARGO) test --workspace --no-fail-fast

check:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# A local single-node platform (API, node Emperor, demo customer); Ctrl-C stops it.
run: deps
	@bash scripts/run-platform.sh

# A small Legion on this machine: three nodes in network namespaces, a cluster domain balanced
# across two of them through the Lord's address, the Lord's failover (docs/clustering.md).
legion-demo: deps
	@bash scripts/legion-demo.sh

clean:
	$(CARGO) clean
