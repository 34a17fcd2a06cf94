#!/usr/bin/env bash
# Set up facemargin in ./.venv: torch==2.13.0 first when torch is absent (a plain "torch"
# requirement would pull several GB of CUDA wheels), then the package with its dev, detect (MTCNN
# weights, without tensorflow) and tb (TensorBoard) extras,
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
echo "[setup] installing facemargin[dev,detect,tb]"
.venv/bin/pip install --disable-pip-version-check -q -e ".[dev,detect,tb]" 2>&1 | grep -v "^WARNING: Location" || true
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
# Fonts covering Hangul: the glyph identity set of the main job renders each syllable in each of them
KOREAN_FONTS="fonts-nanum fonts-nanum-extra fonts-nanum-eco fonts-naver-d2coding fonts-unfonts-core fonts-unfonts-extra \
fonts-baekmuk fonts-noto-cjk fonts-noto-cjk-extra fonts-alee fonts-lexi-gulim fonts-lexi-saebom fonts-woowa-bm \
fonts-wqy-microhei fonts-wqy-zenhei"
MISSING_FONTS=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $KOREAN_FONTS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || MISSING_FONTS="$MISSING_FONTS $p"
  done
fi
if [ -n "$MISSING_FONTS" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing the Korean/CJK font packages:$MISSING_FONTS"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $MISSING_FONTS) >/dev/null 2>&1 \
      || echo "[setup] warning: apt could not install some font packages; 'facemargin glyphs' uses whatever fonts are installed"
  else
    echo "[setup] note: font packages missing ($MISSING_FONTS); 'facemargin glyphs' uses whatever fonts are installed"
  fi
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, facemargin; print("facemargin", facemargin.__version__, "torch", torch.__version__)')"
