"""The thinker's MoE layer for one token (a decode step): transformers' grouped_mm experts vs our fused
Triton kernels (backends/fused_moe.py), side by side in one process on a GPU.

    python benchmarks/moe_decode.py             # GPU; --layers 8 --compile
    TRITON_INTERPRET=1 python benchmarks/moe_decode.py --cpu --layers 1    # the same checks, slowly, on a CPU

Real sizes from the published config (2048 hidden, 128 experts of 768, 8 chosen), random bf16 weights,
``--layers`` separate layers so the chosen experts' weights (75 MB a layer) never sit in L2 between calls.
Each variant's calls over all layers are captured in one CUDA graph, as in the app's decode step; with
``--compile`` also through torch.compile first (what the app runs). Prints per layer: wall time, GPU
kernel time, the experts' weight bytes read per second, and how far the outputs are from the stock path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import fused_moe  # noqa: E402
from backends.decoding import _captured  # noqa: E402
from benchmarks.speech_latency import REAL_CONFIG, wall_and_kernels  # noqa: E402

TILES = [(8, 8, 256), (16, 16, 256), (32, 32, 128), (16, 8, 512), (8, 16, 128)]
"""Tile sizes tried for the experts alone: (gate_up_rows, down_rows, k), as in fused_moe.BLOCKS."""


def moe_layers(count: int, device: str):
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTextConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerTextSparseMoeBlock

    real = json.loads(REAL_CONFIG.read_text())["thinker_config"]["text_config"]
    config = Qwen3OmniMoeTextConfig(**{k: v for k, v in real.items() if k != "model_type"})
    config._experts_implementation = "grouped_mm"
    torch.manual_seed(0)
    layers = []
    with torch.device(device):
        for _ in range(count):
            layer = Qwen3OmniMoeThinkerTextSparseMoeBlock(config).to(torch.bfloat16).eval()
            for param in layer.parameters():
                param.data.normal_(0, 0.02)
            layers.append(layer)
    return config, layers


def variant_fn(layers, inputs, outputs, implementation: str, compiled: bool):
    """All layers, each on its own input, writing into fixed outputs: what gets captured."""
    forward = torch.compile(lambda layer, x: layer(x), fullgraph=True, dynamic=False) if compiled \
        else (lambda layer, x: layer(x))

    def run():
        for layer in layers:
            layer.experts.config._experts_implementation = implementation
        for index, layer in enumerate(layers):
            outputs[index].copy_(forward(layer, inputs[index]))
    return run


def timed(run, calls: int, on_gpu: bool) -> tuple[float, float]:
    """(wall ms per call, GPU kernel ms per call); on the CPU one call's wall time."""
    if on_gpu:
        return wall_and_kernels(run, calls, warm_up=3)
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1e3, float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--compile", action="store_true", help="also torch.compile each variant before capture")
    parser.add_argument("--cpu", action="store_true", help="no GPU: check the outputs only (TRITON_INTERPRET=1)")
    args = parser.parse_args()
    device = "cpu" if args.cpu else "cuda"
    on_gpu = device == "cuda"
    config, layers = moe_layers(args.layers, device)
    if not fused_moe.use_fused_decode_experts(torch.nn.ModuleList(layers)):
        sys.exit("the fused kernels don't fit this layer's layout")
    hidden, inter, top_k = config.hidden_size, config.moe_intermediate_size, config.num_experts_per_tok
    expert_bytes = top_k * 3 * hidden * inter * 2 + config.num_experts * hidden * 2  # chosen experts + router
    print(f"{args.layers} layers, {config.num_experts} experts of {inter}, {top_k} chosen; per layer "
          f"{expert_bytes / 1e6:.1f} MB of weights read; {torch.cuda.get_device_name() if on_gpu else 'CPU'}",
          flush=True)
    with torch.inference_mode():
        inputs = [torch.randn((1, 1, hidden), device=device, dtype=torch.bfloat16) for _ in layers]
        results = {}
        modes = [False, True] if args.compile and on_gpu else [False]
        for compiled in modes:
            for implementation in ("grouped_mm", fused_moe.FUSED_EXPERTS):
                outputs = [torch.empty_like(x) for x in inputs]
                run = variant_fn(layers, inputs, outputs, implementation, compiled)
                started = time.perf_counter()
                run()
                replay = _captured(run) if on_gpu else run  # captured as the app captures its steps
                prepared = time.perf_counter() - started
                wall, kernels = timed(replay, args.calls, on_gpu)
                name = f"{'compiled' if compiled else 'eager'} {implementation}"
                results[name] = [o.clone() for o in outputs]
                per_layer = kernels / args.layers
                print(f"{name}: {wall / args.layers * 1e3:.1f} µs per layer (graph replay), kernels "
                      f"{per_layer * 1e3:.1f} µs, {expert_bytes / (per_layer / 1e3) / 1e12:.2f} TB/s of weights; "
                      f"ready in {prepared:.1f} s", flush=True)
        stock = results["eager grouped_mm"]
        for name, outputs in results.items():
            diffs = [(o.float() - s.float()).abs().max().item() for o, s in zip(outputs, stock)]
            equal = statistics.mean((o == s).float().mean().item() for o, s in zip(outputs, stock))
            scale = max(s.abs().max().item() for s in stock)
            print(f"{name} vs eager grouped_mm: max |diff| {max(diffs):.2e} (outputs up to {scale:.2e}), "
                  f"{equal:.1%} of values identical", flush=True)
        if on_gpu:  # one layer, called again and again: part of its 76 MB may stay in L2, so compare only here
            x, experts = inputs[0].view(1, -1), layers[0].experts
            _, weights, ids = layers[0].gate(x)
            for gate_up_rows, down_rows, k in TILES:
                tiles = {"gate_up_rows": gate_up_rows, "down_rows": down_rows, "k": k}
                call = (lambda: fused_moe.fused_decode_experts(x, ids, weights, experts.gate_up_proj,
                                                               experts.down_proj, tiles))
                wall, kernels = timed(call, args.calls, on_gpu)
                print(f"tiles {tiles}: kernels {kernels * 1e3:.1f} µs (eager launch {wall * 1e3:.1f} µs)", flush=True)


if __name__ == "__main__":
    main()
