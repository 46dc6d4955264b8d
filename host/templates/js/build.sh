#!/bin/sh
# Builds ../{{name}}.wasm, where ingot finds it. Installs componentize-js the first time (or uses
# $COMPONENTIZE_JS). componentize-js's own command line is used because jco 1.35's `componentize`
# cannot read WIT files.
set -e
cd "$(dirname "$0")"
if [ -z "$COMPONENTIZE_JS" ]; then
  [ -d node_modules ] || npm install --no-audit --no-fund --loglevel=error
  COMPONENTIZE_JS=node_modules/.bin/componentize-js
fi
"$COMPONENTIZE_JS" app.js --wit wit --world-name import-processor --disable http fetch-event --out ../{{name}}.wasm
echo "built $(cd .. && pwd)/{{name}}.wasm"
