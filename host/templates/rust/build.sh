#!/bin/sh
# Builds ../{{name}}.wasm, where ingot finds it.
set -e
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{name}}.wasm" ../{{name}}.wasm
echo "built $(cd .. && pwd)/{{name}}.wasm"
