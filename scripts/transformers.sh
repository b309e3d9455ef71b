#!/usr/bin/env bash
# Makes sure transformers==5.23.0 (the version the golden fixtures and the benchmarks are measured
# against) is in the project venv .venv, made by scripts/libtorch.sh. Quiet when it is there.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
want=5.23.0
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
have=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("transformers"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "rlvr: installing transformers==$want into $venv" >&2
  "$venv/bin/python" -m pip install --quiet "transformers==$want" >&2
fi
