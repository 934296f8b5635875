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


def long_opus(path: Path, seconds: float, tell_length: bool = True) -> Path:
    """Hours of Opus silence in an instant: one encoded packet muxed over and over (a few KB a minute).
    ``tell_length=False`` writes WebM as a live stream would, with no duration anywhere in it."""
    import io

    import av

    class Unseekable(io.RawIOBase):
        def __init__(self, out):
            self.out = out

        def writable(self):
            return True

        def write(self, data):
            return self.out.write(data)

    with open(path, "wb") as raw, av.open(raw if tell_length else Unseekable(raw), "w",
                                          format="ogg" if tell_length else "webm") as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 48000), np.float32), format="flt", layout="mono")
        silence.sample_rate, silence.pts = 48000, 0
        template = list(stream.encode(silence))[-1]
        pts = 0
        while pts < seconds * 48000:
            packet = av.Packet(bytes(template))
            packet.pts = packet.dts = pts
            packet.time_base, packet.stream = template.time_base, stream
            out.mux(packet)
            pts += template.duration
    return path


def sound_only_mp4(path: Path, seconds: float = 2.0) -> Path:
    """An .mp4 holding a sound track and no pictures (how many phones and sites save a song)."""
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                    "-c:a", "aac", str(path)], check=True, capture_output=True)
    return path
