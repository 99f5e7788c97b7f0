#!/usr/bin/env bash
# Set up (see tools/setup.sh) and open napari with the plugin on its bundled sample.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh qt
exec .venv/bin/python -m napari_medspike "$@"
