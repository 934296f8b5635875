"""The encoder cache's own cost (backends/transformers/encoder_cache.py) for one 448×448 image, around an image encoder
that costs nothing: on a miss (sums, then copies of the input and outputs it keeps) and on a hit (sums and
one equality test, in host memory, and the copy back). Real sizes: the input 784 patches × 1536 values, outputs
196 × 2048 with 3 DeepStack levels.

    python benchmarks/encoder_cache.py            # --device cuda on a GPU (bf16 there)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.transformers.encoder_cache import EncoderCache  # noqa: E402


class FreeEncoder:
    """Outputs of the real shapes, made ahead: what remains is the cache's work."""

    def __init__(self, device: str, dtype: torch.dtype):
        self.pooled = torch.randn(196, 2048, device=device, dtype=dtype)

    def get_image_features(self, pixel_values, image_grid_thw=None, **kwargs):
        from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import BaseModelOutputWithDeepstackFeatures

        pooled = (self.pooled,) * len(image_grid_thw)
        return BaseModelOutputWithDeepstackFeatures(pooler_output=pooled, deepstack_features=[pooled] * 3)

    get_video_features = get_image_features

    def get_audio_features(self, *args, **kwargs):
        raise NotImplementedError


def median_ms(call, device: str, calls: int = 50) -> float:
    times = []
    for _ in range(calls):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        call()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    device = parser.parse_args().device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    encoder = FreeEncoder(device, dtype)
    cache = EncoderCache.on(encoder, max_bytes=256 << 20)
    pixels, grid = torch.randn(784, 1536, device=device, dtype=dtype), torch.tensor([[1, 28, 28]], device=device)
    with torch.inference_mode():
        alone = median_ms(lambda: FreeEncoder.get_image_features(encoder, pixels, grid), device)
        miss = median_ms(lambda: (cache.clear(), encoder.get_image_features(pixels, grid)), device)
        hit = median_ms(lambda: encoder.get_image_features(pixels, grid), device)
        reused = cache.reused
        served = encoder.get_image_features(pixels, grid)  # a hit: copied back from host memory
    outputs = (served.pooler_output[0], *(level[0] for level in served.deepstack_features))
    assert cache.reused == reused + 1 and all(out.device == pixels.device and torch.equal(out, encoder.pooled)
                                              for out in outputs), "a hit differs from the encoder's output"
    print(f"one 448x448 image on {device} ({dtype}), medians of 50: the free encoder alone {alone:.2f} ms; "
          f"through the cache: a miss {miss:.2f} ms, a hit {hit:.2f} ms")


if __name__ == "__main__":
    main()
