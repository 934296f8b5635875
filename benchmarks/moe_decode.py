"""The thinker's MoE layer for a decode step's tokens (one reply: 1; a batched step: one per row):
transformers' grouped_mm experts vs our fused Triton kernels (backends/transformers/kernels/fused_moe.py), side
by side in one process on a GPU.

    python benchmarks/moe_decode.py             # GPU; --layers 8 --compile --tokens 1,2,4,8
    TRITON_INTERPRET=1 python benchmarks/moe_decode.py --cpu --layers 1    # the same checks, slowly, on a CPU

Real sizes from the published config (2048 hidden, 128 experts of 768, 8 chosen), random bf16 weights,
``--layers`` separate layers so the chosen experts' weights (75 MB a layer) never sit in L2 between calls.
Each variant's calls over all layers are captured in one CUDA graph, as in the app's decode step; with
``--compile`` also through torch.compile first (what the app runs). Prints per layer: wall time, GPU
kernel time, the distinct chosen experts' weight bytes read per second (what a step must read at least),
and how far the outputs are from the stock path.
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

from backends.transformers.kernels import fused_moe  # noqa: E402
from backends.transformers.cuda_graphs import captured  # noqa: E402
from benchmarks.speech_latency import REAL_CONFIG, wall_and_kernels  # noqa: E402

GATE_UP_TILES = [(8, 256, 4), (8, 512, 4), (4, 512, 4), (4, 1024, 4), (8, 1024, 8), (16, 512, 8), (8, 2048, 8),
                 (2, 2048, 4), (4, 256, 2)]
"""(rows, k, warps) tried for the gate/up kernel, with the default down kernel."""
DOWN_TILES = [(8, 256, 4, False), (8, 256, 4, True), (4, 256, 4, True), (16, 256, 4, True), (8, 1024, 8, True),
              (4, 1024, 4, True), (2, 1024, 4, False), (4, 1024, 4, False), (2, 256, 2, True)]
"""(rows, k, warps, one program per expert) tried for the down kernel, with the best gate/up tiles."""


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
    parser.add_argument("--sweep", action="store_true", help="also time the kernels' tile and launch sizes (GPU)")
    parser.add_argument("--cpu", action="store_true", help="no GPU: check the outputs only (TRITON_INTERPRET=1)")
    parser.add_argument("--tokens", default="1", help="tokens per layer call: 1 for one reply, N for a batched "
                        f"step of N rows (the kernels take up to {fused_moe.FUSED_MAX_TOKENS})")
    args = parser.parse_args()
    device = "cpu" if args.cpu else "cuda"
    on_gpu = device == "cuda"
    config, layers = moe_layers(args.layers, device)
    if not fused_moe.use_fused_decode_experts(torch.nn.ModuleList(layers)):
        sys.exit("the fused kernels don't fit this layer's layout")
    hidden, inter, top_k = config.hidden_size, config.moe_intermediate_size, config.num_experts_per_tok
    print(f"{args.layers} layers, {config.num_experts} experts of {inter}, {top_k} chosen; "
          f"{torch.cuda.get_device_name() if on_gpu else 'CPU'}", flush=True)
    for tokens in [int(t) for t in args.tokens.split(",")]:
        compare(config, layers, tokens, args, on_gpu)
    if on_gpu and args.sweep:
        with torch.inference_mode():
            sweep(config, layers, [torch.randn((1, 1, hidden), device=device, dtype=torch.bfloat16) for _ in layers],
                  args.calls)


def compare(config, layers, tokens: int, args, on_gpu: bool) -> None:
    """grouped_mm against the fused kernels, eager and (``--compile``) compiled, for ``tokens`` per call."""
    device, hidden, inter = layers[0].gate.weight.device, config.hidden_size, config.moe_intermediate_size
    torch._dynamo.reset()  # each count compiles afresh (else dynamo's recompile limit may leave one eager)
    with torch.inference_mode():
        inputs = [torch.randn((1, tokens, hidden), device=device, dtype=torch.bfloat16) for _ in layers]
        distinct = statistics.mean(len(set(layer.gate(x.view(tokens, -1))[2].flatten().tolist()))
                                   for layer, x in zip(layers, inputs))
        expert_bytes = distinct * 3 * hidden * inter * 2 + config.num_experts * hidden * 2  # chosen experts + router
        print(f"{tokens} token(s) a call: {distinct:.1f} distinct experts chosen per layer, "
              f"{expert_bytes / 1e6:.1f} MB of weights to read", flush=True)
        results = {}
        modes = [False, True] if args.compile and on_gpu else [False]
        for compiled in modes:
            for implementation in ("grouped_mm", fused_moe.FUSED_EXPERTS):
                outputs = [torch.empty_like(x) for x in inputs]
                run = variant_fn(layers, inputs, outputs, implementation, compiled)
                started = time.perf_counter()
                run()
                replay = captured(run) if on_gpu else run  # captured as the app captures its steps
                prepared = time.perf_counter() - started
                wall, kernels = timed(replay, args.calls, on_gpu)
                name = f"{tokens} token(s), {'compiled' if compiled else 'eager'} {implementation}"
                results[name] = [o.clone() for o in outputs]
                per_layer = kernels / args.layers
                print(f"{name}: {wall / args.layers * 1e3:.1f} µs per layer (graph replay), kernels "
                      f"{per_layer * 1e3:.1f} µs, {expert_bytes / (per_layer / 1e3) / 1e12:.2f} TB/s of weights; "
                      f"ready in {prepared:.1f} s", flush=True)
        stock = results[f"{tokens} token(s), eager grouped_mm"]
        for name, outputs in results.items():
            diffs = [(o.float() - s.float()).abs().max().item() for o, s in zip(outputs, stock)]
            equal = statistics.mean((o == s).float().mean().item() for o, s in zip(outputs, stock))
            scale = max(s.abs().max().item() for s in stock)
            print(f"{name} vs eager grouped_mm: max |diff| {max(diffs):.2e} (outputs up to {scale:.2e}), "
                  f"{equal:.1%} of values identical", flush=True)


def kernel_times(call, calls: int) -> dict[str, float]:
    """GPU µs per call of each kernel ``call`` launches (a captured graph's replay), by kernel name."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    return {e.key: e.self_device_time_total / calls for e in prof.key_averages() if e.self_device_time_total}


def sweep(config, layers, inputs, calls: int) -> None:
    """Tile and launch sizes of the fused kernels, each over every layer (its own weights and chosen experts)
    in one captured graph, as in a decode step: GPU µs per layer of each kernel, and the weights' read rate."""
    hidden, inter, top_k = config.hidden_size, config.moe_intermediate_size, config.num_experts_per_tok
    routed = []
    for layer, x in zip(layers, inputs):
        _, weights, ids = layer.gate(x.view(1, -1))
        routed.append((x.view(1, -1), ids, weights, layer.experts))
    outputs = [torch.empty_like(x) for x in inputs]

    def timed_blocks(blocks: dict) -> dict[str, float]:
        def run():
            for (x, ids, weights, experts), out in zip(routed, outputs):
                out.view(1, -1).copy_(fused_moe.fused_decode_experts(x, ids, weights, experts.gate_up_proj,
                                                                     experts.down_proj, blocks))
        run()
        times = kernel_times(captured(run), calls)
        per_layer = {"gate_up": sum(t for k, t in times.items() if "gate_up" in k) / len(layers),
                     "down": sum(t for k, t in times.items() if "_down" in k) / len(layers),
                     "all": sum(times.values()) / len(layers)}
        gate_up_bytes, down_bytes = top_k * 2 * hidden * inter * 2, top_k * hidden * inter * 2
        print(f"  {blocks}: gate/up {per_layer['gate_up']:.1f} µs ({gate_up_bytes / per_layer['gate_up'] / 1e6:.2f} "
              f"TB/s), down {per_layer['down']:.1f} µs ({down_bytes / per_layer['down'] / 1e6:.2f} TB/s), all kernels "
              f"{per_layer['all']:.1f} µs per layer", flush=True)
        return per_layer

    print(f"tile sweep, {len(layers)} layers per captured graph, medians of {calls} replays:", flush=True)
    best, best_gate_up = dict(fused_moe.BLOCKS), float("inf")
    for rows, k, warps in GATE_UP_TILES:
        blocks = {**fused_moe.BLOCKS, "gate_up_rows": rows, "gate_up_k": k, "gate_up_warps": warps}
        took = timed_blocks(blocks)["gate_up"]
        if took < best_gate_up:
            best, best_gate_up = blocks, took
    best_all = float("inf")
    for rows, k, warps, split in DOWN_TILES:
        blocks = {**best, "down_rows": rows, "down_k": k, "down_warps": warps, "down_split": split}
        took = timed_blocks(blocks)["all"]
        if took < best_all:
            chosen, best_all = blocks, took
    print(f"fastest: {chosen}, {best_all:.1f} µs per layer of kernels", flush=True)


if __name__ == "__main__":
    main()
