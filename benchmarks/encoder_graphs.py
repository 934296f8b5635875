"""The audio and vision encoders, transformers' eager forward against the padded, captured passes of
backends/transformers/encoder_graphs.py, side by side (GPU; the CPU runs them eagerly, which checks only that it works).

    python benchmarks/encoder_graphs.py

Full-size encoders (random bf16 weights, the published config, sdpa). Per input: wall time of one call
(medians of ``--runs``, 20, synchronized), the captured size it ran in, and how far its output is from the eager one's
(bf16); then the GPU memory the captured passes keep.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.transformers.encoder_graphs import EncoderGraphs  # noqa: E402
from benchmarks.encoder_cache import median_ms  # noqa: E402
from benchmarks.speech_latency import REAL_CONFIG, kernels_of  # noqa: E402

AUDIO_SECONDS = (3.0, 10.0, 29.5)
IMAGES = ((448, 448), (640, 480), (1024, 768))
"""(width, height) in pixels: multiples of 32, as the processor resizes them."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20, help="calls timed per input (the median is shown)")
    parser.add_argument("--profile", action="store_true",
                        help="also each image's GPU kernels, eager and captured (GPU): wall vs kernel time")
    options = parser.parse_args()
    runs = options.runs
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeThinkerConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoder,
        Qwen3OmniMoeVisionEncoder,
    )

    config = Qwen3OmniMoeThinkerConfig(**json.loads(REAL_CONFIG.read_text())["thinker_config"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    with device:
        encoders = SimpleNamespace(
            audio_tower=Qwen3OmniMoeAudioEncoder._from_config(config.audio_config, dtype=torch.bfloat16,
                                                              attn_implementation="sdpa").eval(),
            visual=Qwen3OmniMoeVisionEncoder._from_config(config.vision_config, dtype=torch.bfloat16,
                                                          attn_implementation="sdpa").eval())
        for module in (encoders.audio_tower, encoders.visual):
            for param in module.parameters():
                param.data.normal_(0, 0.02)
    print(f"encoders on {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}", flush=True)
    inputs = []
    for seconds in AUDIO_SECONDS:
        frames = int(seconds * 100)
        features = torch.randn((config.audio_config.num_mel_bins, frames), device=device, dtype=torch.bfloat16)
        inputs.append((f"audio {seconds:g} s", encoders.audio_tower,
                       (features,), {"feature_lens": torch.tensor([frames], device=device)}))
    vision = config.vision_config
    for width, height in IMAGES:
        grid = (1, height // vision.patch_size, width // vision.patch_size)
        values = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
        pixels = torch.randn((grid[1] * grid[2], values), device=device, dtype=torch.bfloat16)
        inputs.append((f"image {width}×{height}", encoders.visual, (pixels,),
                       {"grid_thw": torch.tensor([grid], device=device)}))

    def output(result) -> torch.Tensor:
        return result.pooler_output if getattr(result, "pooler_output", None) is not None \
            else result.last_hidden_state

    with torch.inference_mode():
        # The first call of each (outside the timing) also warms up.
        eager = {name: (output(module(*args, **kwargs)), median_ms(lambda: module(*args, **kwargs), device.type, runs))
                 for name, module, args, kwargs in inputs}
        graphs = EncoderGraphs(encoders)
        put_back = graphs.install()
        before = torch.cuda.memory_reserved() if device.type == "cuda" else 0
        started = time.perf_counter()
        graphs.capture()
        captured_in = time.perf_counter() - started
        held = (torch.cuda.memory_reserved() - before) / 1e9 if device.type == "cuda" else 0.0
        print("| input | captured size | eager | captured | speed-up | max diff (largest value) |")
        print("|---|---|---|---|---|---|")
        for name, module, args, kwargs in inputs:
            reference, eager_ms = eager[name]
            served = output(module(*args, **kwargs))
            captured_ms = median_ms(lambda: module(*args, **kwargs), device.type, runs)
            size = (f"{graphs.audio_size(args[0].shape[1])} chunks" if module is encoders.audio_tower
                    else f"{graphs.vision_size(args[0].shape[0])} patches")
            print(f"| {name} | {size} | {eager_ms:.1f} ms | {captured_ms:.1f} ms | {eager_ms / captured_ms:.1f}× "
                  f"| {(served - reference).abs().max().item():.2e} ({reference.abs().max().item():.2e}) |",
                  flush=True)
        if options.profile and device.type == "cuda":
            for name, module, call_args, kwargs in inputs:
                if module is encoders.visual:
                    print(f"profile {name}, captured:", kernel_profile(lambda: module(*call_args, **kwargs)),
                          flush=True)
                    put_back()
                    print(f"profile {name}, eager:", kernel_profile(lambda: module(*call_args, **kwargs)),
                          flush=True)
                    put_back = graphs.install()
    print(f"captured {len(graphs.audio_chunks)} audio and {len(graphs.vision_patches)} vision sizes in "
          f"{captured_in:.1f} s; the allocator reserved {held:.2f} GB more for them", flush=True)


def kernel_profile(call, calls: int = 10, top: int = 8) -> str:
    """Wall and GPU kernel ms per call, and the kernels that take the most of it (GPU)."""
    wall = median_ms(call, "cuda", calls)
    kernels = kernels_of(call, calls)
    total = sum(e.self_device_time_total for e in kernels) / 1e3 / calls
    biggest = ", ".join(f"{e.key[:70]} {e.self_device_time_total / 1e3 / calls:.2f} ms ({e.count // calls}×)"
                        for e in kernels[:top])
    return f"{wall:.1f} ms wall, {total:.1f} ms of kernels; largest: {biggest}"


if __name__ == "__main__":
    main()
