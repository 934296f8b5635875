#!/usr/bin/env bash
# Wheels for the lent GPU machine (its python3 is 3.12 with torch, an older transformers and no av/soundfile):
# the app's locked versions of what it lacks, for CPython 3.12 on x86-64 Linux, into .whl/ (ignored; name it in
# the device tool's carry, 64 MiB in all). There:
#   python3 -m pip install -q --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
names=(transformers huggingface-hub tokenizers safetensors av soundfile soxr cffi pycparser httpx2 httpcore2 h11
       truststore anyio idna click typing-extensions)
mkdir -p .whl
for name in "${names[@]}"; do
    pin=$(grep -iE "^${name}==" requirements.txt | cut -d' ' -f1)
    [ -n "$pin" ] || { echo "no pin for $name in requirements.txt" >&2; exit 1; }
    python3 -m pip download -q --no-deps --only-binary=:all: --dest .whl --python-version 3.12 --implementation cp \
        --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any "$pin"
done
du -sh .whl
