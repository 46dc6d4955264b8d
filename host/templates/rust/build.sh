#!/bin/sh
# Builds ../{{name}}.wasm, where ingot finds it (`cargo test` runs the rules natively).
set -e
cd "$(dirname "$0")"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{name}}.wasm" ../{{name}}.wasm
echo "built $(cd .. && pwd)/{{name}}.wasm"
