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

# .whl/app: what benchmarks/app_concurrent.py adds (gradio and the pins it needs beyond the above), with gradio's
# browser front end and example media left out of its wheel (31 MB → 1.4 MB): the benchmark drives the API only.
app_names=(gradio gradio-client fastapi starlette uvicorn pydantic pydantic-core annotated-types typing-inspection
           brotli orjson groovy hf-gradio pydub python-multipart pytz safehttpx semantic-version tomlkit)
mkdir -p .whl/app
for name in "${app_names[@]}"; do
    pin=$(grep -iE "^${name}==" requirements.txt | cut -d' ' -f1)
    [ -n "$pin" ] || { echo "no pin for $name in requirements.txt" >&2; exit 1; }
    python3 -m pip download -q --no-deps --only-binary=:all: --dest .whl/app --python-version 3.12 --implementation cp \
        --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any "$pin" 2>&1 | { grep -v "^WARNING: Location" || true; }
done
python3 - .whl/app/gradio-*.whl <<'PY'
import sys, zipfile, os
path = sys.argv[1]
left_out = ("gradio/templates/frontend/assets/", "gradio/templates/frontend/static/", "gradio/templates/node/",
            "gradio/media_assets/", "gradio/test_data/", "gradio/_frontend_code/")
with zipfile.ZipFile(path) as source, zipfile.ZipFile(path + ".slim", "w", zipfile.ZIP_DEFLATED) as out:
    for info in source.infolist():
        if not info.filename.startswith(left_out):
            out.writestr(info, source.read(info))
os.replace(path + ".slim", path)
PY
du -sh .whl/app
