#!/usr/bin/env bash
# Wheels for the lent GPU machine (its python3 is 3.12 with torch, an older transformers and no av/soundfile):
# the app's locked versions of what it lacks, for CPython 3.12 on x86-64 Linux, into .whl/ (ignored; name it in
# the device tool's carry, 64 MiB in all). Three folders, so each call carries what it needs within that:
#   .whl/base      the model's: every benchmark       carry=[".whl/base"]
#   .whl/app       + gradio: app_concurrent.py         carry=[".whl/base", ".whl/app"]
#   .whl/realtime  + the openai SDK, silero-vad, uvicorn: realtime_latency.py   carry=[".whl/base", ".whl/realtime"]
# There: python3 -m pip install -q --no-deps --target /tmp/site .whl/base/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
names=(transformers huggingface-hub tokenizers safetensors av soundfile soxr cffi pycparser httpx2 httpcore2 h11
       truststore anyio idna click typing-extensions)
fetch() {  # fetch FOLDER NAME...: the locked wheels of NAME... for the lent machine's CPython 3.12
    local folder=$1 name pin
    shift
    mkdir -p "$folder"
    for name in "$@"; do  # websockets: the openai SDK's realtime client, pinned with the tests
        pin=$(grep -ihE "^${name}==" requirements.txt requirements-dev.txt | head -1 | cut -d' ' -f1)
        [ -n "$pin" ] || { echo "no pin for $name in requirements.txt" >&2; exit 1; }
        python3 -m pip download -q --no-deps --only-binary=:all: --dest "$folder" --python-version 3.12 \
            --implementation cp --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any "$pin" 2>&1 \
            | { grep -v "^WARNING: Location" || true; }
    done
}
fetch .whl/base "${names[@]}"
# .whl/app: what benchmarks/app_concurrent.py adds (gradio and the pins it needs beyond the above), with gradio's
# browser front end and example media left out of its wheel (31 MB → 1.4 MB): the benchmark drives the API only.
app_names=(gradio gradio-client fastapi starlette uvicorn pydantic pydantic-core annotated-types typing-inspection
           brotli orjson groovy hf-gradio pydub python-multipart pytz safehttpx semantic-version tomlkit)
realtime_names=(openai jiter sniffio websockets silero-vad starlette uvicorn pydantic pydantic-core annotated-types
                typing-inspection)
fetch .whl/app "${app_names[@]}"
fetch .whl/realtime "${realtime_names[@]}"
# silero-vad's wheel keeps only the model turns/detector.py loads (load_silero_vad(): silero_vad.jit), not its
# eight ONNX and safetensors variants (11 MB → 2 MB), so everything fits the device tool's 64 MiB.
python3 - .whl/app/gradio-*.whl .whl/realtime/silero_vad-*.whl <<'PY'
import sys, zipfile, os
left_out = {"gradio": ("gradio/templates/frontend/assets/", "gradio/templates/frontend/static/",
                       "gradio/templates/node/", "gradio/media_assets/", "gradio/test_data/", "gradio/_frontend_code/"),
            "silero_vad": tuple(f"silero_vad/data/{name}" for name in (
                "silero_vad.onnx", "silero_vad_half.onnx", "silero_vad_16k_op15.onnx", "silero_vad_op18_ifless.onnx",
                "silero_vad_openvino_16k.onnx", "silero_vad_16k_sequence.onnx", "silero_vad_16k.safetensors"))}
for path in sys.argv[1:]:
    dropped = left_out[os.path.basename(path).split("-")[0]]
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(path + ".slim", "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            if not info.filename.startswith(dropped):
                out.writestr(info, source.read(info))
    os.replace(path + ".slim", path)
PY
du -sh .whl/*
# The spoken question realtime_latency.py sends (the lent machine may have no espeak-ng).
espeak-ng -w .whl/realtime/question.wav "What is the tallest mountain in the world, and how high is it?"
