"""A corpus of inputs that fight back, made on the spot (nothing downloaded).

``refused`` files must be turned away with a message naming the file and the problem;
``accepted`` ones are odd but usable and must get a normal reply.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile

from tests import media_factory


def refused(folder: Path, speech: Path, image: Path, video: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, words the message must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Path, str]] = {}

    def make(name: str, data: bytes, expected: str) -> None:
        path = folder / name
        path.write_bytes(data)
        files[name] = (path, expected)

    make("truncated.wav", speech.read_bytes()[:60], "the audio is only 0 ms long; it takes at least 100 ms")
    make("garbage.png", np.random.default_rng(0).bytes(4000), "not a readable image")
    make("truncated.mp4", video.read_bytes()[:1500], "video")
    make("image-named.wav", image.read_bytes(), "not a readable audio file")
    make("audio-named.png", speech.read_bytes(), "not a readable image")
    make("empty.mp3", b"", "the file is empty")
    make("notes.txt", b"hello", "unsupported file type '.txt'")
    long_audio = folder / "eleven-minutes.wav"
    soundfile.write(long_audio, np.zeros(11 * 60 * 8000, np.int16), 8000)
    files[long_audio.name] = (long_audio, "audio is 660 s long, the limit is 600 s")
    long_video = folder / "six-minutes.mp4"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:size=64x48:rate=1:d=360",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(long_video)], check=True, capture_output=True)
    files[long_video.name] = (long_video, "video is 360 s long, the limit is 300 s")
    hour = media_factory.long_opus(folder / "an-hour.ogg", 3600)  # 1.4 MB
    files[hour.name] = (hour, "audio is 3600 s long, the limit is 600 s")
    one_hertz = folder / "one-hertz.wav"  # 16 KB that would resample to 512 MB
    soundfile.write(one_hertz, np.zeros(8000, np.int16), 1)
    files[one_hertz.name] = (one_hertz, "the audio's sample rate is 1 Hz; it takes 1000 to 768000 Hz")
    not_numbers = folder / "nan.wav"
    soundfile.write(not_numbers, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    files[not_numbers.name] = (not_numbers, "the audio holds invalid samples (NaN or infinity)")
    return files


def accepted(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    silent = folder / "silence.wav"
    soundfile.write(silent, np.zeros(32000, np.float32), 16000)
    huge = folder / "huge.png"
    from PIL import Image

    Image.new("RGB", (9000, 7000), (30, 120, 200)).save(huge)  # downscaled to the pixel limit, not refused
    banner = folder / "banner.png"
    Image.new("RGB", (8000, 20), (200, 30, 30)).save(banner)  # more elongated than the processor takes: padded
    mute_video = media_factory.test_video(folder / "no-sound.mp4", with_audio=False)
    song = media_factory.sound_only_mp4(folder / "song.mp4")  # heard as audio
    return {"silence.wav": silent, "huge.png": huge, "banner.png": banner, "no-sound.mp4": mute_video, "song.mp4": song}
