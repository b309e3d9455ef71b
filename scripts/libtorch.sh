#!/usr/bin/env bash
# Makes sure the project-local libtorch exists: a virtual environment at .venv holding PyPI's
# torch==2.11.0 (the build tch 0.24 links against), and a stable link .libtorch -> its torch/ folder
# that .cargo/config.toml points LIBTORCH and the binaries' rpath at. Idempotent and quiet when done.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
want=2.11.0
python=${RLVR_PYTHON:-python3}

have_torch() {
  [ -x "$venv/bin/python" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null)" = "$want" ] 2>/dev/null
}

if ! have_torch; then
  echo "rlvr: installing torch==$want into $venv (one time, ~4.6 GB)" >&2
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet "torch==$want" >&2
fi

torch_dir=$("$venv/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("torch")
print(os.path.dirname(spec.origin))
PY
)
if [ "$(readlink "$root/.libtorch" 2>/dev/null)" != "$torch_dir" ]; then
  ln -sfn "$torch_dir" "$root/.libtorch"
fi
bash "$root/scripts/dist-deps.sh"
