"""One token's attention over a static KV cache (a decode step): transformers' sdpa path vs our Triton kernel
(backends/transformers/kernels/decode_attention.py), side by side in one process on a GPU.

    python benchmarks/decode_attention.py        # GPU

The real head layouts (thinker: 32 query heads over 4 key/value heads; talker: 16 over 2; head_dim 128),
bf16, caches of the app's sizes (the thinker's 2048 and 8192 slots, the talker's 8192 + 5 minutes of speech)
with a few hundred or a few thousand slots filled. ``--layers`` separate caches, so one layer's keys are not
in L2 when the next reads them. Each variant's calls over all layers are compiled (fullgraph) and captured
in one CUDA graph, as in the app's decode step (eager kernels; compiling each case would take minutes: one case
is also compiled, to show torch.compile traces the kernel and gives the same output). Our kernel twice: with
the cache's blocks in contiguous runs per split and dealt round-robin (the app's: decode_attention.INTERLEAVED).
Prints per layer: wall and GPU kernel time, and the largest difference from sdpa's output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.transformers.kernels import decode_attention  # noqa: E402
from backends.transformers.cuda_graphs import captured  # noqa: E402
from benchmarks.speech_latency import wall_and_kernels  # noqa: E402

LAYOUTS = {"thinker": (32, 4), "talker": (16, 2)}
HEAD_DIM = 128
CASES = [("thinker", 2048, 400), ("thinker", 8192, 400), ("thinker", 8192, 4000), ("thinker", 8192, 8192),
         ("talker", 11966, 450), ("talker", 11966, 4000)]
"""(model, cache slots, slots filled): a short chat with media (~400 tokens) and a long one; the talker's
cache in the app holds 8192 prompt tokens + 300 s of speech at 12.5 frames/s + 16."""


def variant(forward, queries, keys, values, masks, outputs, compiled: bool = False):
    module = SimpleNamespace(num_key_value_groups=queries[0].shape[1] // keys[0].shape[1], is_causal=True,
                             training=False)

    def run():
        for q, k, v, mask, out in zip(queries, keys, values, masks, outputs):
            attended, _ = forward(module, q, k, v, mask, dropout=0.0, scaling=HEAD_DIM ** -0.5)
            out.copy_(attended.reshape(out.shape))
    return captured(torch.compile(run, fullgraph=True, dynamic=False) if compiled else run)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, {args.layers} layers a graph, medians over {args.calls} replays\n")
    print("| model | cache slots | filled | sdpa (transformers) | our kernel, contiguous runs | "
          "our kernel, blocks round-robin (the app's) | max diff |")
    print("|---|---|---|---|---|---|---|")
    app_order = decode_attention.INTERLEAVED
    with torch.inference_mode(), torch.device("cuda"):
        for model, slots, filled in CASES:
            heads, kv_heads = LAYOUTS[model]
            queries = [torch.randn((1, heads, 1, HEAD_DIM), dtype=torch.bfloat16) for _ in range(args.layers)]
            keys = [torch.randn((1, kv_heads, slots, HEAD_DIM), dtype=torch.bfloat16) for _ in range(args.layers)]
            values = [torch.randn_like(k) for k in keys]
            masks = [(torch.arange(slots) < filled)[None, None, None, :] for _ in range(args.layers)]
            results = {}
            for name, forward, interleaved in (("sdpa", decode_attention.sdpa_attention_forward, False),
                                               ("contiguous", decode_attention._attention_forward, False),
                                               ("ours", decode_attention._attention_forward, True)):
                decode_attention.INTERLEAVED = interleaved  # read when the graph is captured
                outputs = [torch.empty((heads, HEAD_DIM), dtype=torch.bfloat16) for _ in range(args.layers)]
                wall, kernels = wall_and_kernels(variant(forward, queries, keys, values, masks, outputs), args.calls)
                results[name] = (wall / args.layers, kernels / args.layers, outputs)
            decode_attention.INTERLEAVED = app_order
            diff = max((a.float() - b.float()).abs().max().item()
                       for name in ("contiguous", "ours") for a, b in zip(results["sdpa"][2], results[name][2]))
            cells = [f"{wall * 1e3:.1f} µs ({kernels * 1e3:.1f} µs of kernels)"
                     for wall, kernels, _ in results.values()]
            print(f"| {model} | {slots} | {filled} | {' | '.join(cells)} | {diff:.2e} |", flush=True)
        eager_outputs = results["ours"][2]
        outputs = [torch.empty_like(out) for out in eager_outputs]
        wall, kernels = wall_and_kernels(variant(decode_attention._attention_forward, queries, keys, values, masks,
                                                 outputs, compiled=True), args.calls)
        diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(outputs, eager_outputs))
        print(f"\ncompiled (fullgraph) and captured, the last case: {wall / args.layers * 1e3:.1f} µs per layer "
              f"({kernels / args.layers * 1e3:.1f} µs of kernels); largest difference from the eager kernel's "
              f"outputs {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
