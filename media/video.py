"""Videos as the model takes them: frames spread evenly over the whole clip, sized to share one pixel
budget as qwen-omni-utils sizes them, and the sound track beside them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from media.audio import checked_samples, decode_audio_track
from media.image import SIZE_FACTOR, smart_resize
from media.limits import DEFAULT_LIMITS, MediaError, MediaLimits, check_file
from media.probe import duration_s
from messages import Message

# Per video frame qwen-omni-utils keeps 128..768 tiles of SIZE_FACTOR x SIZE_FACTOR pixels.
VIDEO_FRAME_MIN_PIXELS = 128 * SIZE_FACTOR**2
VIDEO_FRAME_MAX_PIXELS = 768 * SIZE_FACTOR**2


@dataclass(frozen=True, eq=False)
class VideoClip:
    """What ``load_video`` returns."""

    frames: np.ndarray
    """uint8 array (T, H, W, 3), spread evenly from the first frame to the last."""
    fps: float
    """Frames taken per second of video: what the processor needs for the frames' time positions."""
    audio: np.ndarray | None
    """The sound track at 16 kHz mono float32, or None when the file has none."""
    times: tuple[float, ...] = ()
    """Each frame's time in the video, in seconds."""


def load_video(path: str | os.PathLike, limits: MediaLimits = DEFAULT_LIMITS) -> VideoClip:
    """Frames spread evenly from the first to the last (``frame_indices``), sized to share
    ``limits.video_total_pixels`` (``video_frame_size``), and the whole sound track."""
    import av

    check_file(path, limits)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, Message("media.no_video_stream"))
            stream = container.streams.video[0]
            total, duration = _checked(path, container, stream, limits)
            rate = float(stream.average_rate or 0) or (total / duration if duration else limits.video_fps)
            indices = frame_indices(total, rate, limits) if total else []
            size = video_frame_size(stream.codec_context.height, stream.codec_context.width, len(indices), limits)
            frames, times = _decode_frames(path, container, stream, indices, size, limits)
    except av.FFmpegError as err:
        raise MediaError(path, Message("media.unreadable_video", {"reason": err.__class__.__name__})) from err
    if not frames:
        raise MediaError(path, Message("media.no_frames"))
    # The vision encoder groups frames in pairs (temporal patch 2): keep an even count.
    if len(frames) % 2:
        frames.append(frames[-1])
        times.append(times[-1])
    fps = len(frames) / max(total, 1) * rate  # as qwen-omni-utils reports it: frames taken per second of video
    sound = decode_audio_track(path, limits)
    return VideoClip(np.stack(frames), fps, None if sound is None else checked_samples(path, sound), tuple(times))


def check_video(path: str | os.PathLike, limits: MediaLimits = DEFAULT_LIMITS) -> None:
    """What ``load_video`` refuses, without decoding frames (for sending the file as it is)."""
    import av

    check_file(path, limits)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, Message("media.no_video_stream"))
            _checked(path, container, container.streams.video[0], limits)
    except av.FFmpegError as err:
        raise MediaError(path, Message("media.unreadable_video", {"reason": err.__class__.__name__})) from err


def _checked(path, container, stream, limits: MediaLimits) -> tuple[int, float | None]:
    """(frames, seconds) of a video stream within ``limits``: its frame size by the header, before any frame
    is decoded at it, and its length by the header or, when the header doesn't say, by its packets' times."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > limits.max_video_frame_pixels:
        raise MediaError(path, Message("media.video_frame_too_big", {
            "width": width, "height": height, "limit": f"{limits.max_video_frame_pixels / 1e6:.0f}"}))
    duration, total = duration_s(container, stream), stream.frames
    if duration is None or not total:
        total, measured = _count_frames(path)
        duration = duration if duration is not None else measured
    if duration is None:  # no times at all: as many frames at the rate it claims (or 25 a second)
        duration = total / float(stream.average_rate or 25)
    if duration > limits.max_video_s:
        raise MediaError(path, Message("media.video_too_long", {"length": f"{duration:.0f}",
                                                                "limit": f"{limits.max_video_s:.0f}"}))
    return total, duration


def video_sound_track(path: str | os.PathLike, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray | None:
    """A video's sound at 16 kHz mono, or None when it has none."""
    check_video(path, limits)
    sound = decode_audio_track(path, limits)
    return checked_samples(path, sound) if sound is not None and sound.size else None


def frame_indices(total: int, rate: float, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Which of a video's ``total`` frames (at ``rate`` fps) the model sees: qwen-omni-utils' ``smart_nframes``
    (``video_fps`` per second, an even count within the frame limits) spread with its ``linspace``."""
    most = _floor_to(min(limits.max_video_frames, total), 2)
    least = _ceil_to(limits.min_video_frames, 2)
    wanted = total / rate * limits.video_fps
    count = max(2, _floor_to(min(max(wanted, least), most, total), 2))
    return np.linspace(0, total - 1, count).round().astype(int)


def video_frame_size(height: int, width: int, frames: int, limits: MediaLimits = DEFAULT_LIMITS) -> tuple[int, int]:
    """(height, width) of each of ``frames`` frames, as qwen-omni-utils' ``fetch_video`` sizes them."""
    share = limits.video_total_pixels / max(frames, 1) * 2
    max_pixels = max(min(VIDEO_FRAME_MAX_PIXELS, share), int(VIDEO_FRAME_MIN_PIXELS * 1.05))
    return smart_resize(height, width, VIDEO_FRAME_MIN_PIXELS, max_pixels)


def _floor_to(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


def _ceil_to(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def _count_frames(path) -> tuple[int, float | None]:
    """Frames of the first video stream and the seconds they span, by its packets (read, not decoded), when
    the header doesn't say (webm, mkv, a crafted file)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count, first, last = 0, None, None
        for packet in container.demux(stream):
            if not packet.size:
                continue
            count += 1
            if packet.pts is not None:
                end = packet.pts + (packet.duration or 0)
                first = packet.pts if first is None else min(first, packet.pts)
                last = end if last is None else max(last, end)
        if first is None or stream.time_base is None:
            return count, None
        return count, float((last - first) * stream.time_base)


def _decode_frames(path, container, stream, indices, size: tuple[int, int], limits: MediaLimits
                   ) -> tuple[list[np.ndarray], list[float]]:
    """The frames at ``indices`` (in presentation order) as RGB arrays of ``size``, and their times."""
    from collections import Counter

    wanted, (height, width) = Counter(int(i) for i in indices), size
    frames, times = [], []
    start = stream.start_time or 0
    for index, frame in enumerate(container.decode(stream)):
        if frame.width * frame.height > limits.max_video_frame_pixels:  # a stream may grow past its header
            raise MediaError(path, Message("media.video_frame_too_big", {
                "width": frame.width, "height": frame.height, "limit": f"{limits.max_video_frame_pixels / 1e6:.0f}"}))
        if index in wanted:
            image = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()
            t = float((frame.pts - start) * stream.time_base) if frame.pts is not None else index / float(
                stream.average_rate or 1)
            frames.extend([image] * wanted[index])
            times.extend([t] * wanted[index])
        if index >= max(wanted, default=-1):
            break
    return frames, times
