"""code2wav for one streamed chunk: a whole decode of the chunk and its context, against decode_tail (the
transformer over every frame, the convolutions over the new frames and their reach only), side by side (GPU).

    python benchmarks/code2wav_chunks.py

Full-size code2wav (random bf16 weights, the published config). Prints per case the activations' peak (GPU
memory above what was allocated before the call), the time per call (eager, medians of 10) and how far the
new frames' samples are from the whole decode's.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.transformers.vocoder import CONV_REACH_FRAMES, decode_tail  # noqa: E402
from benchmarks.speech_latency import REAL_CONFIG  # noqa: E402

CASES = [(74, 20), (105, 25)]
"""(frames decoded, new frames): a 5.9 s reply's last chunk (54 frames sent), a long reply's steady chunk."""


def main() -> None:
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeCode2WavConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeCode2Wav

    config = Qwen3OmniMoeCode2WavConfig(**json.loads(REAL_CONFIG.read_text())["code2wav_config"])
    torch.manual_seed(0)
    with torch.device("cuda"):
        code2wav = Qwen3OmniMoeCode2Wav._from_config(config, dtype=torch.bfloat16).eval()
        for param in code2wav.parameters():
            param.data.normal_(0, 0.02)
    upsample = int(code2wav.total_upsample)
    print(f"code2wav, {sum(p.numel() for p in code2wav.parameters()) / 1e6:.0f} M parameters; "
          f"{torch.cuda.get_device_name()}", flush=True)
    print("| frames | new | upsampled | activations' peak | time | max diff of the new samples |")
    print("|---|---|---|---|---|---|")
    with torch.inference_mode():
        for frames, new in CASES:
            codes = torch.randint(0, config.codebook_size, (1, config.num_quantizers, frames), device="cuda")
            whole = code2wav(codes)[0, 0]
            trim = frames * upsample - whole.shape[-1]
            reference = whole[(frames - new) * upsample - trim:].float()
            for conv_frames in (frames, new + CONV_REACH_FRAMES):
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                wav = decode_tail(code2wav, codes, conv_frames)[0, 0]
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() - before
                times = []
                for _ in range(10):
                    started = time.perf_counter()
                    decode_tail(code2wav, codes, conv_frames)
                    torch.cuda.synchronize()
                    times.append((time.perf_counter() - started) * 1e3)
                ours = wav[(conv_frames - new) * upsample - trim:].float()
                diff = (ours - reference).abs().max().item()
                print(f"| {frames} | {new} | {conv_frames} | {peak / 1e6:.0f} MB | {statistics.median(times):.1f} ms | "
                      f"{diff:.2e} (samples up to {reference.abs().max().item():.2f}) |", flush=True)


if __name__ == "__main__":
    main()
