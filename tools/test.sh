#!/usr/bin/env bash
# Set up (see tools/setup.sh) and run the whole test suite headless under Xvfb.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k energy`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh testing
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
chmod 700 "$XDG_RUNTIME_DIR"
# The installed package (not the checkout) is tested: .venv/bin/pytest keeps the repo root off
# sys.path, so a file missing from the wheel fails here too.
exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/pytest "$@"
