"""What a file is before it is decoded: its kind by extension, and with PyAV the streams a container
holds and how long it says they last."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from media.limits import MediaError
from messages import Message

MediaKind = Literal["image", "audio", "video"]
"""The kinds of file the app takes (``backends.request.MediaPart.kind``)."""

EXTENSIONS: dict[MediaKind, frozenset[str]] = {
    "image": frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}),
    "audio": frozenset({".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".oga"}),
    "video": frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}),
}


def kind_of(path: str | os.PathLike) -> MediaKind:
    """The media kind a file's extension announces; a video container holding only sound (an .mp4
    of a song, a .webm recording) is heard as audio."""
    suffix = Path(path).suffix.lower()
    for kind in ("image", "video", "audio"):
        if suffix in EXTENSIONS[kind]:  # type: ignore[index]
            if kind == "video" and not has_video_stream(path) and (suffix == ".webm" or _has_audio_stream(path)):
                return "audio"
            return kind  # type: ignore[return-value]
    raise MediaError(path, Message("media.unsupported_type", {"suffix": suffix or "(none)"}))


def duration_s(container, stream) -> float | None:
    """Seconds the stream lasts by its header, else by the container's; None when neither says."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def has_video_stream(path) -> bool:
    return "video" in _stream_types(path)


def _has_audio_stream(path) -> bool:
    return "audio" in _stream_types(path)


def _stream_types(path) -> set[str]:
    """The kinds of stream a container holds (none when PyAV can't open it)."""
    import av

    try:
        with av.open(str(path)) as container:
            return {stream.type for stream in container.streams}
    except (av.FFmpegError, OSError):
        return set()
