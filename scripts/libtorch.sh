#!/usr/bin/env bash
# Makes sure the project-local libtorch exists: a virtual environment at .venv holding PyPI's
# torch==2.11.0 (the build tch 0.24 links against), and a stable link .libtorch -> its torch/ folder
# that .cargo/config.toml points LIBTORCH and the binaries' rpath at. Idempotent and quiet when done.
#
# PyPI's torch 2.11.0 is the CUDA 13 build (NVIDIA driver >= 580). For an older driver, set
# RLVR_TORCH_CUDA to one of PyTorch's own wheel indexes, e.g. RLVR_TORCH_CUDA=cu126 (driver >= 560)
# or cu128, or cpu: torch==2.11.0 then comes from https://download.pytorch.org/whl/$RLVR_TORCH_CUDA
# (the same version tch 0.24 links, built against that CUDA), and an installed torch of another
# build is replaced. `rlvr inspect` reports the CUDA runtime and driver the binary then sees.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
want=2.11.0
python=${RLVR_PYTHON:-python3}
flavor=${RLVR_TORCH_CUDA:-}
case "$flavor" in
  "" | cpu | cu[0-9][0-9][0-9]) ;;
  *) echo "rlvr: RLVR_TORCH_CUDA=$flavor is not a PyTorch wheel index (cpu, cu126, cu128, cu130, ...)" >&2; exit 2 ;;
esac

# The installed torch's version, e.g. 2.11.0 (PyPI) or 2.11.0+cu126 (PyTorch's index).
installed() {
  "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null
}

have_torch() {
  [ -x "$venv/bin/python" ] || return 1
  local v
  v=$(installed) || return 1
  if [ -z "$flavor" ]; then
    [ "${v%%+*}" = "$want" ]
  else
    [ "$v" = "$want+$flavor" ]
  fi
}

if ! have_torch; then
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  if [ -z "$flavor" ]; then
    echo "rlvr: installing torch==$want into $venv (one time, ~4.6 GB)" >&2
    "$venv/bin/python" -m pip install --quiet "torch==$want" >&2
  else
    echo "rlvr: installing torch==$want+$flavor from https://download.pytorch.org/whl/$flavor into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --force-reinstall \
      --index-url "https://download.pytorch.org/whl/$flavor" "torch==$want" >&2
  fi
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
