#!/usr/bin/env bash
# Issue 25's GPU measurements, for the lent machine (device tool), in calls of under 10 minutes each:
#   bash scripts/device-wheels.sh                      # here, once a session: .whl/ for the machine's python
#   run(command="bash benchmarks/batching_gpu.sh kernels", carry=[".whl/base"])   # about 5 min
#   run(command="bash benchmarks/batching_gpu.sh users", carry=[".whl/base"])     # full size; cold compiles: 8-10 min
#   run(command="bash benchmarks/batching_gpu.sh app", carry=[".whl/base", ".whl/app"])  # 8 gradio_client sessions
#   run(command="bash benchmarks/batching_gpu.sh realtime", carry=[".whl/base", ".whl/realtime"])  # 1 and 8 sessions
# A "users" call cut off by the time limit leaves its compiled kernels in .cache/inductor (ignored, kept on a warm
# machine between calls): run it again. Everything printed also lands in $OUT/<part>.log.
set -uo pipefail
part=${1:?kernels or users}
python3 -m pip install -q --no-deps --target /tmp/site .whl/base/*.whl || exit 3
export PYTHONPATH=/tmp/site TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor PYTHONUNBUFFERED=1
mkdir -p "${OUT:=/tmp/out}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
case $part in
  kernels)  # the MoE layer for 1-8 tokens; the batched step eager, captured, compiled once, compiled per size;
            # preparing 8 replies in threads and in processes (the host's CPUs)
    { python3 benchmarks/moe_decode.py --layers 8 --compile --tokens 1,2,4,8
      python3 benchmarks/batched_step.py --layers 8 --static-compile-sizes 8
      python3 benchmarks/prepare_many.py --workers 4; } 2>&1 | grep -v Warning | tee "$OUT/kernels.log" ;;
  users)    # 1, 2, 4, 8 and 16 users at once and 8 arriving 200 ms apart, serialized against batched, full size
    # (16 slots of 4,096 tokens on an H200; SLOT_TOKENS=3072 where an H100's 80 GB must hold them)
    python3 benchmarks/concurrent_speech.py --full-size --static-cache-tokens "${SLOT_TOKENS:-4096}" --batch-slots 16 \
      --users 1,2,4,8,16 2>&1 | grep --line-buffered -v Warning | tee "$OUT/users.log" ;;
  app)      # 8 gradio_client sessions through the app (needs .whl/app: gradio and its pins, and ffmpeg there)
    python3 -m pip install -q --no-deps --target /tmp/site .whl/app/*.whl || exit 3
    python3 benchmarks/app_concurrent.py --full-size --static-cache-tokens 4096 --batch-slots 8 --users 8 2>&1 \
      | grep --line-buffered -v Warning | tee "$OUT/app.log" ;;
  realtime) # /v1/realtime through the openai SDK: end of speech → first audio delta, 1 and 8 sessions at once
    python3 -m pip install -q --no-deps --target /tmp/site .whl/realtime/*.whl || exit 3
    python3 benchmarks/realtime_latency.py --full-size --static-cache-tokens 4096 --batch-slots 8 --sessions 1,8 \
      --speech .whl/realtime/question.wav 2>&1 | grep --line-buffered -v Warning | tee "$OUT/realtime.log" ;;
  users-unpacked)  # the same with every prompt in a pass of its own: what packing the prompts changes
    python3 benchmarks/concurrent_speech.py --full-size --static-cache-tokens 4096 --paths batched --pack-tokens 1 \
      2>&1 | grep -v Warning | tee "$OUT/users-unpacked.log" ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac
