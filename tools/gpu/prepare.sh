#!/usr/bin/env bash
# Build .gpu/ (ignored by git) for a lent GPU machine: the dataset resized to the training size
# (the package's weights already fill most of what a call may carry), the wheels its Python lacks
# (spikingjelly, kornia, loguru, SciencePlots, platformdirs), and a stand-in for kornia_rs, which
# kornia imports but training never calls. Then: bash tools/gpu/train.sh ... on that machine.
#   bash tools/gpu/prepare.sh ../shared/data/kvasir-seg 128
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?dataset folder}; SIZE=${2:?training size}
mkdir -p .git/info .gpu/whl .gpu/stub/kornia_rs
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
.venv/bin/python tools/gpu/resize_dataset.py "$DATA" .gpu "$SIZE"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
    spikingjelly==2.0.0 kornia "loguru<1,>=0.7" SciencePlots platformdirs
echo '"""Stand-in: kornia imports kornia_rs.io; training never reads files through kornia."""' > .gpu/stub/kornia_rs/__init__.py
echo '"""Stand-in for kornia_rs.io (never called in training)."""' > .gpu/stub/kornia_rs/io.py
du -sh --apparent-size .gpu
