#!/usr/bin/env bash
# Makes sure PyPI package NAME is installed at exactly VERSION in the project venv (.venv, made by
# scripts/libtorch.sh, or here with `python3 -m venv .venv` when absent); quiet when it already is.
#   bash scripts/pip-pin.sh NAME VERSION
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bash scripts/pip-pin.sh NAME VERSION" >&2; exit 2; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
have=$("$venv/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || true)
if [ "$have" != "$2" ]; then
  echo "rlvr: installing $1==$2 into $venv" >&2
  "$venv/bin/python" -m pip install --quiet "$1==$2" >&2
fi
