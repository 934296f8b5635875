"""Many replies prepared at once (media decoding + the processor): in threads against in worker processes.

    python benchmarks/prepare_many.py            # this machine (CPU); the tiny checkpoint's processor

The batched engine prepares each arriving reply off its loops. In threads, the Python of decoding and of the
processor holds the GIL; ``prepare_processes`` runs it in worker processes (backends/transformers/preparing.py).
This prepares speech_latency.py's prompt (10 s of audio, a 448x448 image, a question) for N replies started
together, each way, and prints when each reply's inputs were ready.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speech_latency import make_prompt_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replies", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4, help="threads, and worker processes")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from transformers import Qwen3OmniMoeProcessor

    from backends.checkpoints import resolve_checkpoint
    from backends.conversation import fit_to_context, processor_inputs
    from backends.request import ChatRequest, MediaPart, Turn
    from backends.transformers.preparing import PreparingProcesses
    import media

    checkpoint = resolve_checkpoint("tiny")
    processor = Qwen3OmniMoeProcessor.from_pretrained(checkpoint.path)
    audio, image = make_prompt_files(Path(tempfile.mkdtemp()))
    request = ChatRequest(turns=(Turn.user(MediaPart("audio", str(audio)), MediaPart("image", str(image)),
                                           "What do you hear, and what is in the picture?"),))
    context, limits = 65_536, media.DEFAULT_LIMITS

    def in_thread(_=None):
        def count(prompt):
            inputs = processor_inputs(processor, prompt)
            return inputs, int(inputs["input_ids"].shape[1])
        fit_to_context(request, count, context, limits)
        return time.perf_counter()

    processes = PreparingProcesses(checkpoint.path, args.workers)
    processes.fit(request, context, limits)  # the workers are up
    with ThreadPoolExecutor(args.workers) as warm:
        list(warm.map(lambda _: processes.fit(request, context, limits), range(args.workers)))

    def in_process(_=None):
        processes.fit(request, context, limits)
        return time.perf_counter()

    in_thread()
    alone = statistics.median(_timed(in_thread) for _ in range(args.rounds))
    print(f"one reply alone, in this process: {alone * 1e3:.1f} ms", flush=True)
    print(f"| {args.replies} replies at once | first ready | median | last ready |\n|---|---|---|---|")
    for name, prepare in (("threads", in_thread), ("worker processes", in_process)):
        rounds = []
        for _ in range(args.rounds):
            with ThreadPoolExecutor(args.workers if name == "threads" else args.replies) as pool:
                started = time.perf_counter()
                rounds.append(sorted(done - started for done in pool.map(prepare, range(args.replies))))
        first, middle, last = (statistics.median(r[i] for r in rounds) for i in (0, args.replies // 2, -1))
        print(f"| {args.workers} {name} | {first * 1e3:.0f} ms | {middle * 1e3:.0f} ms | {last * 1e3:.0f} ms |",
              flush=True)
    processes.close()


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
