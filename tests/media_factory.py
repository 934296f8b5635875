"""Real test media made on the spot: espeak-ng speech, ffmpeg videos, Pillow images."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


def speech_wav(path: Path, text: str = "Hello, what can you hear in this recording?", voice: str = "en") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path


def test_video(path: Path, seconds: float = 2.0, with_audio: bool = True, size: str = "160x120", rate: int = 10) -> Path:
    """ffmpeg's test pattern at ``rate`` fps, with a 440 Hz tone as its sound track."""
    cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
           f"testsrc=size={size}:rate={rate}:duration={seconds}"]
    if with_audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def test_image(path: Path, size: tuple[int, int] = (224, 160)) -> Path:
    from PIL import Image

    gradient = np.linspace(0, 255, size[0], dtype=np.uint8)
    pixels = np.stack([np.tile(gradient, (size[1], 1)), np.full((size[1], size[0]), 90, np.uint8),
                       np.tile(gradient[::-1], (size[1], 1))], axis=-1)
    Image.fromarray(pixels).save(path)
    return path
