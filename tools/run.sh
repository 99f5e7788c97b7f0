#!/usr/bin/env bash
# Set up (see tools/setup.sh) and open napari with the plugin on its bundled sample.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -s)" = Linux ] && [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}${QT_QPA_PLATFORM:-}" ]; then
  echo "napari-medspike needs a display: no X11 or Wayland display was found. Run this from a desktop" >&2
  echo "session, or on a headless machine under a virtual display: xvfb-run -a bash tools/run.sh" >&2
  exit 2
fi
bash tools/setup.sh qt
exec .venv/bin/python -m napari_medspike "$@"
