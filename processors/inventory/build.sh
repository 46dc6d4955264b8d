#!/bin/sh
# Builds ../inventory.wasm: zig cc (from $ZIG, or ziglang from PyPI installed in .venv the first
# time) compiles the C helper, the contract's bindings and the processor into a WASI preview-1
# reactor module, and `ingot componentize` (from $INGOT, or ingot on PATH) makes it a component.
set -e
cd "$(dirname "$0")"
if [ -z "$ZIG" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet ziglang==0.15.2
  fi
  ZIG=$(.venv/bin/python -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
fi
INGOT=${INGOT:-$(command -v ingot || true)}
if [ -z "$INGOT" ]; then
  echo "build.sh: ingot is not on PATH (it writes the bindings and makes the component): install it, or set INGOT=/path/to/ingot" >&2
  exit 1
fi
SDK=../../guest-sdk/c
mkdir -p target
"$INGOT" bindings --lang c --out target/bindings >/dev/null
# A 1 MiB stack: zig's default of 16 MiB alone would fill the manifest's memory limit.
"$ZIG" cc --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror -Wl,--strip-debug -Wl,-z,stack-size=1048576 -I "$SDK" -I target/bindings \
  inventory.c "$SDK/ingot.c" target/bindings/import_processor.c target/bindings/import_processor_component_type.o \
  -o target/inventory.core.wasm
"$INGOT" componentize target/inventory.core.wasm -o ../inventory.wasm
