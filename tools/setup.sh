#!/usr/bin/env bash
# Set up napari-medspike in ./.venv: system libraries for Qt (Debian/Ubuntu, as root), a virtual
# environment, and the package with the extras given as arguments (e.g. `qt`, `testing`).
#
# torch: without an NVIDIA GPU we pin the CPU build, torch==2.13.0: a local wheel where pip finds
# one, else from PyTorch's CPU package index (PyPI's torch for Linux is the CUDA build, which
# brings gigabytes of NVIDIA libraries). With `nvidia-smi` present, pip's default CUDA build is
# used. Override with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0" or TORCH_SPEC="torch>=2.6".
set -euo pipefail
cd "$(dirname "$0")/.."
extras=$(IFS=,; echo "$*")

qt_libs="python3-venv xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3
 libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0
 libxcb-render-util0 libxcb-xinerama0 libxcb-randr0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1"
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=$(for p in $qt_libs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "[setup] installing system libraries:" $missing
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
cpu_index=()
if [ -z "${TORCH_SPEC:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    TORCH_SPEC="torch>=2.6"
  else
    TORCH_SPEC="torch==2.13.0"
    if ! .venv/bin/python -m pip install -q --dry-run --no-index --no-deps --ignore-installed "$TORCH_SPEC" \
        >/dev/null 2>&1; then  # no local wheel: the CPU build from PyTorch's own index
      cpu_index=(--extra-index-url https://download.pytorch.org/whl/cpu)
    fi
  fi
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
echo "[setup] pip install $target $TORCH_SPEC ${cpu_index[*]:-}"
.venv/bin/python -m pip install -q --disable-pip-version-check ${cpu_index[@]+"${cpu_index[@]}"} "$target" "$TORCH_SPEC"
