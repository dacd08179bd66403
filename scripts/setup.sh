#!/usr/bin/env bash
# Set up the project in ./.venv: CPU torch first, then everything else pinned against it.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--test]   (--test adds test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --disable-pip-version-check --upgrade pip >&2
# torch first: any later requirement that names torch must find this CPU build already satisfied,
# otherwise pip pulls several GB of CUDA wheels.
pip install -q --disable-pip-version-check -c constraints.txt "torch==2.13.0" >&2
pip install -q --disable-pip-version-check -c constraints.txt -e ".${extras}" >&2
# unstructured's PDF extras can pull a CUDA torchvision that breaks `import sentence_transformers`
# on CPU torch; we never need it (hi_res PDF layout models need the Hub anyway).
if .venv/bin/python -c "import torchvision" >/dev/null 2>&1 || pip show -q torchvision >/dev/null 2>&1; then
  pip uninstall -y -q torchvision >&2
fi
DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 .venv/bin/python -c "import sentence_transformers, qdrant_edge, unstructured, gradio" \
  || { echo "setup: imports failed after install" >&2; exit 1; }

if [ -n "$extras" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  # Browser tests drive Debian's chromium; docker-compose validates docker-compose.yml offline.
  missing=""
  command -v chromium >/dev/null || missing="$missing chromium"
  command -v docker-compose >/dev/null || missing="$missing docker-compose"
  # OCR of scanned PDFs and images (settings.ocr) runs Debian's Tesseract with English data.
  command -v tesseract >/dev/null || missing="$missing tesseract-ocr tesseract-ocr-eng"
  if [ -n "$missing" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >&2 \
      || echo "setup: could not install$missing; those tests will be skipped" >&2
  fi
fi
command -v tesseract >/dev/null || echo "setup: Tesseract is not installed, so scanned PDFs and images are reported as" \
  "needing OCR and the OCR tests are skipped; install it with: apt-get install tesseract-ocr tesseract-ocr-eng" >&2
echo "setup: ok (.venv ready)" >&2
