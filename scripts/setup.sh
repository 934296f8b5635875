#!/usr/bin/env bash
# Set up everything the app (and, with `--dev`, the test suite) needs on a fresh Debian/Ubuntu machine:
# system packages, a virtual environment in .venv, pinned Python packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

# ffmpeg encodes the streamed reply audio in Gradio; fonts render Chinese and emoji in the UI.
APT_PACKAGES=(ffmpeg fonts-noto-cjk fonts-noto-color-emoji)
# espeak-ng makes real speech for tests; chromium runs the browser tests.
(( DEV )) && APT_PACKAGES+=(espeak-ng chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo ">> apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
REQUIREMENTS=requirements.txt
(( DEV )) && REQUIREMENTS=requirements-dev.txt
echo ">> pip install -r $REQUIREMENTS"
.venv/bin/python -m pip install -q -r "$REQUIREMENTS" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import transformers, gradio, torch; print('>> ready: torch', torch.__version__, \
'transformers', transformers.__version__, 'gradio', gradio.__version__)"
