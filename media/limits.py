"""What media the app takes in, and the error that names a file it refuses and why."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from messages import Message


@dataclass(frozen=True)
class MediaLimits:
    """Refuse media the model can't take in, before it reaches the engine."""

    max_file_mb: float = 200.0
    max_audio_s: float = 600.0
    min_audio_s: float = 0.1
    """Shorter audio (a truncated file, a tap on Record) has nothing to hear, and breaks the audio encoder."""
    max_video_s: float = 300.0
    max_video_frame_pixels: int = 7680 * 4320
    """8K: a header may claim any size (16k × 16k is 400 MB a frame decoded), and frames are decoded at it."""
    video_fps: float = 2.0
    """Frames per second of video taken, within ``min_video_frames``..``max_video_frames``."""
    min_video_frames: int = 4
    max_video_frames: int = 256
    """qwen-omni-utils allows 768; 256 frames at their smallest size (``VIDEO_FRAME_MIN_PIXELS``) is what
    ``video_total_pixels`` holds, so a longer clip gets fewer frames over its whole length, not a cut."""
    video_total_pixels: int = 16384 * 28 * 28
    """All frames of one video together (about 16k vision tokens); qwen-omni-utils allows 0.9 x 128k tokens,
    more than the model's context. Frames shrink to share it, down to ``VIDEO_FRAME_MIN_PIXELS`` each."""
    min_image_pixels: int = 4 * 28 * 28
    max_image_pixels: int = 16384 * 28 * 28
    max_items_per_turn: int = 10
    max_items_per_conversation: int = 32
    """Older turns are left out (and the user told) beyond this many media files."""


DEFAULT_LIMITS = MediaLimits()


class MediaError(ValueError):
    """A file can't be used: ``reason`` says why, ``msg`` names the file too (``str(err)`` is it in English)."""

    def __init__(self, path: str | os.PathLike, reason: Message):
        self.path, self.reason = str(path), reason
        self.msg = Message("media.file_problem", {"file": Path(path).name, "problem": reason})
        super().__init__(str(self.msg))

    def __reduce__(self):  # rebuilt from its own arguments (a worker process that prepared a reply raises it)
        return type(self), (self.path, self.reason)

    @property
    def problem(self) -> str:
        """The reason in English."""
        return str(self.reason)


def check_file(path: str | os.PathLike, limits: MediaLimits) -> None:
    """What every kind of file must pass: it exists, holds something, and is within ``limits.max_file_mb``."""
    if not os.path.isfile(path):
        raise MediaError(path, Message("media.not_found"))
    size = os.path.getsize(path)
    if size == 0:
        raise MediaError(path, Message("media.empty"))
    if size > limits.max_file_mb * 1e6:
        raise MediaError(path, Message("media.too_big", {"size": f"{size / 1e6:.0f}",
                                                         "limit": f"{limits.max_file_mb:.0f}"}))
