#!/usr/bin/env bash
# Set up (first time) and start the app; extra arguments go to app.py, e.g. `-c /models/Qwen3-Omni`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
