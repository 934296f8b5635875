#!/usr/bin/env bash
# Set up everything the app (and, with `--dev`, the test suite) needs on a fresh Debian/Ubuntu machine:
# system packages, a virtual environment in .venv, and exactly the packages of a lock (requirements.txt, or
# requirements-dev.txt with `--dev`). Safe to run again.
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
# The locks are resolved for CPython 3.11 on x86-64 Linux (scripts/update-locks.sh); another Python could need
# other packages than they list.
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "!! Python 3.11 is needed (the locks are made for it); set PYTHON=/path/to/python3.11" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv

# Exactly the locked set: every package pinned with its hashes, installed without resolving anything (--no-deps),
# and whatever the lock doesn't list removed. A stamp of the lock's hash makes a second run instant.
LOCK=requirements.txt
(( DEV )) && LOCK=requirements-dev.txt
STAMP=.venv/installed-lock.sha256
WANT="$LOCK $(sha256sum "$LOCK" | cut -d' ' -f1)"
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]]; then
  echo ">> pip install --require-hashes --no-deps -r $LOCK"
  # pip's own exit status survives (pipefail); only the noise of this machine's local package index is dropped.
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$LOCK" 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
  .venv/bin/python scripts/prune_venv.py "$LOCK"
  echo "$WANT" > "$STAMP"
fi
.venv/bin/python -c "import transformers, gradio, torch; print('>> ready: torch', torch.__version__, \
'transformers', transformers.__version__, 'gradio', gradio.__version__)"
(( DEV )) && .venv/bin/python -c "import vllm; print('>> vllm', vllm.__version__, 'for tests of the vLLM backends')"
exit 0
