#!/usr/bin/env bash
# The README's main-job command: set up if needed, then run edgekd's main job on the embedded
# default (scikit-learn's bundled digits; nothing is downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
VENV="${VIRTUAL_ENV:-.venv}"
exec "$VENV/bin/python" -m edgekd compress --demo "$@"
