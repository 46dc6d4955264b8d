#!/bin/sh
# Builds ../{{name}}.wasm, where ingot finds it. Installs componentize-py {{componentize_py}} in .venv
# the first time (or uses $COMPONENTIZE_PY).
set -e
cd "$(dirname "$0")"
if [ -z "$COMPONENTIZE_PY" ]; then
  if [ ! -x .venv/bin/componentize-py ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet componentize-py=={{componentize_py}}
  fi
  COMPONENTIZE_PY=.venv/bin/componentize-py
fi
"$COMPONENTIZE_PY" -d wit -w import-processor componentize app -p . -o ../{{name}}.wasm
echo "built $(cd .. && pwd)/{{name}}.wasm"
