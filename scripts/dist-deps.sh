#!/usr/bin/env bash
# Makes sure the headers the `dist` crate's C++ shim compiles against are in .deps/ (ignored):
#   .deps/gloo   Debian's libgloo-dev, unpacked (no root install): gloo's headers, which the torch
#                wheel does not ship but ProcessGroupGloo.hpp includes.
#   .deps/cuda   only when the torch wheel is a CUDA build (libtorch_cuda.so present): the headers of
#                PyPI's nvidia-cuda-crt and nvidia-cuda-cccl wheels (crt/, nv/target, cccl/), which
#                the wheel's own nvidia/cu13/include lacks and ProcessGroupNCCL.hpp needs.
# Run by scripts/libtorch.sh (so by `./x` before every cargo command). Idempotent and quiet when done.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps="$root/.deps"
gloo_version=0.0~git20220518.5b14351-3
crt_version=13.0.88
cccl_version=13.0.85

scratch=
cleanup() { [ -z "$scratch" ] || rm -rf "$scratch"; }
trap cleanup EXIT

# --- gloo headers (Debian) ---------------------------------------------------------------------
gloo_stamp="$deps/gloo/.complete"
if [ ! -f "$gloo_stamp" ]; then
  echo "rlvr: fetching gloo headers (Debian libgloo-dev) into $deps/gloo" >&2
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
    echo "rlvr: apt-get and dpkg-deb are needed to fetch libgloo-dev; or set RLVR_GLOO_INCLUDE" >&2
    exit 1
  }
  scratch=$(mktemp -d)
  # Pinned to the version the shim was checked against (bookworm); any other candidate is tried next.
  if ! (cd "$scratch" && apt-get download "libgloo-dev=$gloo_version" >"$scratch/log" 2>&1) &&
    ! (cd "$scratch" && apt-get download libgloo-dev >>"$scratch/log" 2>&1); then
    cat "$scratch/log" >&2
    echo "rlvr: 'apt-get download libgloo-dev' failed (run 'apt-get update' first?)" >&2
    exit 1
  fi
  rm -rf "$deps/gloo"
  mkdir -p "$deps/gloo"
  dpkg-deb -x "$scratch"/libgloo-dev_*.deb "$deps/gloo"
  [ -f "$deps/gloo/usr/include/gloo/config.h" ] || {
    echo "rlvr: libgloo-dev has no usr/include/gloo/config.h" >&2
    exit 1
  }
  dpkg-deb -f "$scratch"/libgloo-dev_*.deb Version >"$gloo_stamp"
  rm -rf "$scratch"
  scratch=
fi

# --- CUDA crt/cccl headers (PyPI), for the NCCL part --------------------------------------------
if [ -e "$root/.libtorch/lib/libtorch_cuda.so" ]; then
  cuda_stamp="$deps/cuda/.complete"
  want="nvidia-cuda-crt==$crt_version nvidia-cuda-cccl==$cccl_version"
  if [ "$(cat "$cuda_stamp" 2>/dev/null)" != "$want" ]; then
    echo "rlvr: fetching CUDA headers ($want) into $deps/cuda" >&2
    scratch=$(mktemp -d)
    # shellcheck disable=SC2086
    "$root/.venv/bin/python" -m pip download --quiet --no-deps --only-binary=:all: -d "$scratch" $want >&2
    rm -rf "$deps/cuda"
    mkdir -p "$deps/cuda"
    "$root/.venv/bin/python" - "$deps/cuda" "$scratch"/*.whl <<'PY'
import os, sys, zipfile
dest, wheels = sys.argv[1], sys.argv[2:]
prefix = "nvidia/cu13/include/"
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                path = os.path.join(dest, "include", name[len(prefix):])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with z.open(name) as src, open(path, "wb") as out:
                    out.write(src.read())
PY
    [ -f "$deps/cuda/include/crt/host_defines.h" ] && [ -d "$deps/cuda/include/cccl/nv" ] || {
      echo "rlvr: the CUDA header wheels lack crt/ or cccl/nv" >&2
      exit 1
    }
    echo "$want" >"$cuda_stamp"
  fi
fi
