#!/usr/bin/env bash
# Set up edgekd on a fresh machine with only Python: a virtual environment in .venv (unless one
# is active or already there), torch 2.13.0 only when no torch is installed (an installed torch
# is never replaced), then edgekd with its OpenVINO, development and Hugging Face (hf) extras, editable,
# and the executorch extra with torch pinned.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ -n "${VIRTUAL_ENV:-}" ]; then
  VENV="$VIRTUAL_ENV"
else
  VENV=.venv
  if [ ! -x "$VENV/bin/python" ]; then
    echo "edgekd setup: creating virtual environment $VENV" >&2
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"

stamp="$VENV/.edgekd-setup-$(cat pyproject.toml tools/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && "$VPY" -c "import edgekd, torch, onnxruntime" 2>/dev/null; then
  exit 0
fi

if "$VPY" -c "import torch" 2>/dev/null; then
  echo "edgekd setup: keeping installed torch $("$VPY" -c 'import torch; print(torch.__version__)')" >&2
else
  echo "edgekd setup: installing torch==2.13.0" >&2
  "$VPY" -m pip install --quiet "torch==2.13.0"
fi

echo "edgekd setup: installing edgekd[openvino,dev,hf]" >&2
"$VPY" -m pip install --quiet -e ".[openvino,dev,hf]"

# ExecuTorch (executorch-xnnpack targets): installed with torch pinned to the one here, so it can
# never replace it; if it cannot install, its tests skip and say why.
if ! "$VPY" -c "import executorch" 2>/dev/null; then
  echo "edgekd setup: installing edgekd[executorch] (torch kept as is)" >&2
  pin=$(mktemp)
  "$VPY" -c 'import torch; print("torch==" + torch.__version__)' > "$pin"
  "$VPY" -m pip install --quiet -c "$pin" -e ".[executorch]" \
    || echo "edgekd setup: edgekd[executorch] did not install; the ExecuTorch tests will skip" >&2
  rm -f "$pin"
fi
rm -f "$VENV"/.edgekd-setup-*
touch "$stamp"
echo "edgekd setup: ready ($VPY)" >&2
