#!/usr/bin/env bash
# Set up (if needed) and run the test suite offline. Usage: scripts/test.sh [pytest args]
#   scripts/test.sh                               # the whole suite (what CI runs)
#   scripts/test.sh -m "not slow and not browser" # the fast loop: no browser, no process/OCR/long tests
#   scripts/test.sh tests/test_sync.py -x         # any pytest arguments pass through
# Setup (scripts/setup.sh --test) reruns only when pyproject.toml, constraints.txt or setup.sh changed since
# the last successful one (stamp in .venv), so a local loop does not pay for pip's checks every time.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.test-setup-ok
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml constraints.txt scripts/setup.sh -newer "$stamp" 2>/dev/null)" ]; then
  scripts/setup.sh --test
  touch "$stamp"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/python -m pytest -q "$@"
