#!/usr/bin/env bash
# The README's test command: set up if needed, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/setup_system.sh
VPY="${VIRTUAL_ENV:-.venv}/bin/python"
exec "$VPY" -m pytest tests "$@"
