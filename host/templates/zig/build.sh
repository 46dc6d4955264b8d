#!/bin/sh
# Builds ../{{name}}.wasm, where ingot finds it: zig (from $ZIG, or ziglang {{zig}} from PyPI,
# installed in .venv the first time) compiles app.zig with the C helper and the contract's bindings
# into a WASI preview-1 reactor module, and `ingot componentize` (from $INGOT, or ingot on PATH)
# makes it a processor component.
set -e
cd "$(dirname "$0")"
{{zig_toolchain}}# A 1 MiB stack: zig's default of 16 MiB alone would fill the manifest's memory limit.
"$ZIG" build-exe -target wasm32-wasi -fno-entry -mexec-model=reactor -O ReleaseFast -fstrip -lc --stack 1048576 \
  -I . -I target/bindings app.zig ingot.c target/bindings/import_processor.c \
  target/bindings/import_processor_component_type.o \
  --cache-dir .zig-cache -femit-bin=target/{{name}}.core.wasm
"$INGOT" componentize target/{{name}}.core.wasm -o ../{{name}}.wasm
