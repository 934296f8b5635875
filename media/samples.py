"""Sample arrays from one rate or format to another: the live microphone to what the audio encoder
hears, the model's speech to what browsers play. No file is read here."""

from __future__ import annotations

import numpy as np

from media.audio import INPUT_SAMPLE_RATE


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 at ``target`` Hz (soxr, high quality)."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == target or samples.size == 0:
        return samples
    import soxr

    return soxr.resample(samples, rate, target).astype(np.float32)


class StreamResampler:
    """A live stream to 16 kHz mono float32, chunk by chunk, without seams (soxr keeps its filter state)."""

    def __init__(self, rate: int, target: int = INPUT_SAMPLE_RATE):
        import soxr

        self.rate = rate
        self._stream = soxr.ResampleStream(rate, target, 1, dtype="float32") if rate != target else None

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        return self._stream.resample_chunk(samples) if self._stream is not None else samples


def pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] → int16, what browsers and Gradio's streaming audio expect."""
    return (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
