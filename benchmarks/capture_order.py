"""The thinker's captured prompt passes share one memory pool: what it grows to when the lengths are captured
smallest first (as before 2026-12-03) and largest first (now), side by side on one model (GPU).

    python benchmarks/capture_order.py

Full-size model, random bf16 weights, the compiled backend's kernels (no warm-up: only the prompt passes are
captured). Prints per order the memory the allocator reserved for the pool, and one prompt pass's wall time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.transformers.cuda_graphs import captured_each  # noqa: E402
from backends.transformers.thinker_decoder import ThinkerDecoder  # noqa: E402
from backends.checkpoints.tiny import ensure_tiny_checkpoint  # noqa: E402
from backends.transformers.model import THINKER_PROMPT_LENGTHS  # noqa: E402
from benchmarks.speech_latency import full_size_backends  # noqa: E402


def main() -> None:
    _, compiled = full_size_backends(ensure_tiny_checkpoint("instruct")).values()
    first = compiled.thinker_decoders[0]
    thinker = compiled.model.thinker
    decoders = {"smallest first": first,
                "largest first": ThinkerDecoder(thinker, first.max_tokens, THINKER_PROMPT_LENGTHS, first.talker_layer)}
    print(f"{torch.cuda.get_device_name()}; prompt lengths {THINKER_PROMPT_LENGTHS}", flush=True)
    for order, decoder in decoders.items():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        reserved, allocated = torch.cuda.memory_reserved(), torch.cuda.memory_allocated()
        started = time.perf_counter()
        decoder._prefills = captured_each(decoder._prefill_fn, decoder.prefill_lengths, decoder.token_in.device,
                                          order, decoder.capture_stream, largest_first=order == "largest first")
        took = time.perf_counter() - started
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # the warm-up runs' blocks: only the pool stays
        pool = (torch.cuda.memory_reserved() - reserved) / 1e9
        kept = (torch.cuda.memory_allocated() - allocated) / 1e9
        replay = decoder._prefills[384]
        for _ in range(3):
            replay()
        torch.cuda.synchronize()
        timed = time.perf_counter()
        for _ in range(10):
            replay()
        torch.cuda.synchronize()
        print(f"{order}: {len(decoder._prefills)} passes captured in {took:.1f} s; reserved {pool:.2f} GB more "
              f"(tensors {kept:.3f} GB); a 384-token pass {(time.perf_counter() - timed) * 100:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
