if [ -z "$ZIG" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet ziglang=={{zig}}
  fi
  ZIG=$(.venv/bin/python -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
fi
INGOT=${INGOT:-$(command -v ingot || true)}
if [ -z "$INGOT" ]; then
  echo "build.sh: ingot is not on PATH (it writes the bindings and makes the component): install it, or set INGOT=/path/to/ingot" >&2
  exit 1
fi
mkdir -p target
"$INGOT" bindings --lang c --out target/bindings >/dev/null
