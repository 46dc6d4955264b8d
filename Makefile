# Ingot's build and test entry points. `make test` is what CI runs (through .ci/run).

WASM_TARGET := wasm32-wasip2
WASM_OUT    := target/wasm/$(WASM_TARGET)/release
# Example processors: processors/<name>/ builds processors/<name>.wasm.
RUST_EXAMPLES := customer_data orders
# Guest toolchains, pinned, installed under target/ (never system-wide).
COMPONENTIZE_PY_VERSION := 0.25.1
PY_TOOLS    := $(CURDIR)/target/toolchains/python
COMPONENTIZE_PY := $(PY_TOOLS)/bin/componentize-py
INGOT       := target/release/ingot
# zig cc with wasi-libc compiles the C example and the C test guest; ziglang from PyPI, pinned.
ZIG_VERSION := 0.15.2
ZIG_TOOLS   := $(CURDIR)/target/toolchains/zig
ZIG         := $(ZIG_TOOLS)/zig
# The ingot that writes C bindings and componentizes C guests: the test build in `make test`, the
# release build in `make demo` (one host build either way).
GUEST_INGOT ?= target/debug/ingot
C_PROBE     := $(WASM_OUT)/c_probe.wasm
DEMO_DB     := $(CURDIR)/.ingot/pg/run

.PHONY: FORCE setup processors processors-rust processor-unit-tests test-guests build release test lint demo bench clean

## Installs what a fresh machine needs: the wasm target for processors, and libclang, which the
## pg_query crate's bindgen needs to build PostgreSQL's parser into the host.
setup:
	rustup target add $(WASM_TARGET)
	@if command -v dpkg >/dev/null && ! dpkg -s libclang-dev >/dev/null 2>&1; then \
	  echo "installing libclang-dev (needed to build the SQL gate's parser)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libclang-dev >/dev/null; \
	fi

## Builds every example processor (Rust, Python, JavaScript, C) into processors/<batch_type>.wasm.
processors: processors-rust processors/transaction_feed.wasm processors/orders_py.wasm processors/product_catalog.wasm \
    processors/inventory.wasm

processors-rust: setup
	cargo build --release --target $(WASM_TARGET) --manifest-path processors/Cargo.toml --target-dir target/wasm
	@for p in $(RUST_EXAMPLES); do cp $(WASM_OUT)/$$p.wasm processors/$$p.wasm && echo "processors/$$p.wasm"; done

$(COMPONENTIZE_PY):
	python3 -m venv $(PY_TOOLS)
	$(PY_TOOLS)/bin/pip install --quiet componentize-py==$(COMPONENTIZE_PY_VERSION)

processors/transaction_feed.wasm: $(COMPONENTIZE_PY) wit/processor.wit guest-sdk/python/ingot.py processors/transaction_feed/app.py
	cd processors/transaction_feed && $(COMPONENTIZE_PY) -d ../../wit -w import-processor componentize app \
	    -p . -p ../../guest-sdk/python -o ../transaction_feed.wasm
	@echo processors/transaction_feed.wasm

processors/orders_py.wasm: $(COMPONENTIZE_PY) wit/processor.wit guest-sdk/python/ingot.py processors/orders_py/app.py
	cd processors/orders_py && $(COMPONENTIZE_PY) -d ../../wit -w import-processor componentize app \
	    -p . -p ../../guest-sdk/python -o ../orders_py.wasm
	@echo processors/orders_py.wasm

# componentize-js's own command line: jco 1.35's `componentize` cannot read WIT files (os error 44).
# npm ci (which empties node_modules first) runs only when the lock file changes, not on every edit.
PRODUCT_CATALOG_DEPS := processors/product_catalog/node_modules/.package-lock.json
$(PRODUCT_CATALOG_DEPS): processors/product_catalog/package-lock.json
	cd processors/product_catalog && npm ci --no-audit --no-fund --loglevel=error

processors/product_catalog.wasm: $(PRODUCT_CATALOG_DEPS) wit/processor.wit processors/product_catalog/app.js
	cd processors/product_catalog && npm run --silent build
	@echo processors/product_catalog.wasm

$(ZIG):
	python3 -m venv $(ZIG_TOOLS)
	$(ZIG_TOOLS)/bin/pip install --quiet ziglang==$(ZIG_VERSION)
	ln -sf "$$($(ZIG_TOOLS)/bin/python -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')" $@

# Cargo knows whether the host is up to date; make asks it every time.
target/debug/ingot: FORCE setup
	cargo test --workspace --no-run
target/release/ingot: FORCE setup
	cargo build --release -p ingot

processors/inventory.wasm: $(ZIG) $(GUEST_INGOT) guest-sdk/c/ingot.h guest-sdk/c/ingot.c processors/inventory/inventory.c
	ZIG=$(ZIG) INGOT=$(CURDIR)/$(GUEST_INGOT) processors/inventory/build.sh

## The example processors' own unit tests, natively: their rules, without a database (what
## `cargo test` does in a processor project).
processor-unit-tests: setup
	cargo test --manifest-path processors/Cargo.toml --target-dir target/wasm

## Builds the guest programs the tests use.
test-guests: setup $(C_PROBE)
	cargo build --release --target $(WASM_TARGET) --manifest-path tests/guests/Cargo.toml --target-dir target/wasm

# The C guests here share one copy of the bindings and one set of flags (those of build.sh in
# an `ingot new --lang c` project).
C_BINDINGS := target/c/bindings
ZIG_CC      = $(ZIG) cc --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror -Wl,--strip-debug \
              -Wl,-z,stack-size=1048576 -I guest-sdk/c -I $(C_BINDINGS)
C_LINKED   := guest-sdk/c/ingot.c $(C_BINDINGS)/import_processor.c $(C_BINDINGS)/import_processor_component_type.o
C_DEPS     := $(ZIG) $(GUEST_INGOT) $(C_BINDINGS)/import_processor.h guest-sdk/c/ingot.h guest-sdk/c/ingot.c

$(C_BINDINGS)/import_processor.h: $(GUEST_INGOT)
	$(GUEST_INGOT) bindings --lang c --out $(C_BINDINGS) >/dev/null

$(C_PROBE): $(C_DEPS) tests/guests/c_probe/probe.c
	mkdir -p $(WASM_OUT)
	$(ZIG_CC) tests/guests/c_probe/probe.c $(C_LINKED) -o target/c/c_probe.core.wasm
	$(GUEST_INGOT) componentize target/c/c_probe.core.wasm -o $@

## Builds the host (test profile: dependencies optimised, our code with debug assertions).
build: setup
	cargo build --workspace

release: setup
	cargo build --release -p ingot

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## Everything CI checks: formatting, lints, and every test against the local PostgreSQL.
test: processors test-guests lint processor-unit-tests
	cargo test --workspace

## The main job on a fresh clone: embedded database, the processors' schemas (ingot migrate), an import with failures,
## one failure's logs, and a reprocess of the failed items.
demo: release
	$(MAKE) --no-print-directory processors GUEST_INGOT=$(INGOT)
	@unset DATABASE_URL; set -e; \
	$(INGOT) migrate; \
	echo; echo "== ingot run customer_data processors/customer_data/sample.csv --allow-duplicate"; \
	$(INGOT) run customer_data processors/customer_data/sample.csv --allow-duplicate || test $$? -eq 3; \
	id=$$($(INGOT) batch list --limit 1 --json | sed -n 's/.*"batch_id": "\([^"]*\)".*/\1/p' | head -n1); \
	item=$$($(INGOT) logs $$id --level error --json | sed -n 's/.*"item_index": *\([0-9]*\).*/\1/p' | head -n1); \
	echo; echo "== ingot logs $$id --item $$item"; \
	$(INGOT) logs $$id --item $$item; \
	echo; echo "== ingot reprocess $$id --failed-only"; \
	$(INGOT) reprocess $$id --failed-only || test $$? -eq 3

## customer_data's rules in Python, JavaScript, C and Zig, for the benchmark only (languages on equal work).
BENCH_PROCESSORS := target/bench/processors
$(BENCH_PROCESSORS)/customer_data_py.wasm: $(COMPONENTIZE_PY) wit/processor.wit guest-sdk/python/ingot.py host/benches/processors/customer_data.py
	mkdir -p $(BENCH_PROCESSORS)
	cd host/benches/processors && $(COMPONENTIZE_PY) -d ../../../wit -w import-processor componentize customer_data \
	    -p . -p ../../../guest-sdk/python -o $(CURDIR)/$@

$(BENCH_PROCESSORS)/customer_data_js.wasm: $(PRODUCT_CATALOG_DEPS) wit/processor.wit host/benches/processors/customer_data.js
	mkdir -p $(BENCH_PROCESSORS)
	processors/product_catalog/node_modules/.bin/componentize-js host/benches/processors/customer_data.js \
	    --wit wit --world-name import-processor --disable http fetch-event --out $@

$(BENCH_PROCESSORS)/customer_data_c.wasm: $(C_DEPS) host/benches/processors/customer_data.c
	mkdir -p $(BENCH_PROCESSORS)
	$(ZIG_CC) host/benches/processors/customer_data.c $(C_LINKED) -o target/c/customer_data_c.core.wasm
	$(GUEST_INGOT) componentize target/c/customer_data_c.core.wasm -o $@

$(BENCH_PROCESSORS)/customer_data_zig.wasm: $(C_DEPS) host/benches/processors/customer_data.zig
	mkdir -p $(BENCH_PROCESSORS)
	$(ZIG) build-exe -target wasm32-wasi -fno-entry -mexec-model=reactor -O ReleaseFast -fstrip -lc --stack 1048576 \
	    -I guest-sdk/c -I $(C_BINDINGS) host/benches/processors/customer_data.zig $(C_LINKED) \
	    --cache-dir target/c/zig-cache -femit-bin=target/c/customer_data_zig.core.wasm
	$(GUEST_INGOT) componentize target/c/customer_data_zig.core.wasm -o $@

## Throughput against raw PostgreSQL on this machine (not part of `make test`). BENCH_ITEMS sets the
## processing runs' size (default 20000), BENCH_REPEAT the rounds (default 3); BENCH_LARGE=0 skips
## the 100k/1M creation and 1M runs.
bench: processors $(BENCH_PROCESSORS)/customer_data_py.wasm $(BENCH_PROCESSORS)/customer_data_js.wasm \
    $(BENCH_PROCESSORS)/customer_data_c.wasm $(BENCH_PROCESSORS)/customer_data_zig.wasm
	cargo bench -p ingot --bench throughput

clean:
	cargo clean
	rm -f processors/*.wasm
