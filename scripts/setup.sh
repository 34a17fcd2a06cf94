#!/usr/bin/env bash
# Set up facemargin in ./.venv: torch==2.13.0 first when torch is absent (a plain "torch"
# requirement would pull several GB of CUDA wheels), then the package with its dev extras,
# then Fashion-MNIST from Debian where apt is available. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $PY"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0 (CPU build where available)"
  .venv/bin/pip install --disable-pip-version-check -q "torch==2.13.0"
fi
echo "[setup] installing facemargin[dev]"
.venv/bin/pip install --disable-pip-version-check -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import facemargin, torch" || { echo "[setup] facemargin failed to install" >&2; exit 1; }
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Fashion-MNIST from Debian (dataset-fashion-mnist)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      || echo "[setup] warning: apt could not install dataset-fashion-mnist; 'facemargin bench' will try --data or a download"
  else
    echo "[setup] note: Fashion-MNIST not in $FMNIST and apt not usable; pass --data DIR to facemargin bench"
  fi
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, facemargin; print("facemargin", facemargin.__version__, "torch", torch.__version__)')"
