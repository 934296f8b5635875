"""All media decoding and validation of the app, in one place.

Images with Pillow, audio with soundfile (PyAV for compressed formats), video with
PyAV (frames spread evenly over the whole clip, plus the sound track). No decord,
torchcodec or ffmpeg binary is needed. Frame counts and sizes follow qwen-omni-utils,
what the official demo prepares media with, so the model sees what it was shown there
(tests/test_media_reference.py compares the two). Every failure is a ``MediaError`` naming the file and the problem,
a ``messages.Message`` the UI shows in the user's language.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from media.image import SIZE_FACTOR, smart_resize
from media.limits import DEFAULT_LIMITS, MediaError, MediaLimits, check_file
from media.probe import EXTENSIONS, duration_s, has_video_stream
from messages import Message

INPUT_SAMPLE_RATE = 16_000
"""The audio encoder listens at 16 kHz mono."""

# Per video frame qwen-omni-utils keeps 128..768 tiles of SIZE_FACTOR x SIZE_FACTOR pixels.
VIDEO_FRAME_MIN_PIXELS = 128 * SIZE_FACTOR**2
VIDEO_FRAME_MAX_PIXELS = 768 * SIZE_FACTOR**2


@dataclass(frozen=True, eq=False)
class VideoClip:
    frames: np.ndarray
    """uint8 array (T, H, W, 3), spread evenly from the first frame to the last."""
    fps: float
    """Frames taken per second of video: what the processor needs for the frames' time positions."""
    audio: np.ndarray | None
    """The sound track at 16 kHz mono float32, or None when the file has none."""
    times: tuple[float, ...] = ()
    """Each frame's time in the video, in seconds."""


def load_audio(path: str | os.PathLike, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Mono float32 samples at 16 kHz.

    Only what the limits allow is ever decoded: a file whose header says it is too long, or has
    an absurd sample rate, is refused before decoding, and one that turns out too long is refused
    as soon as decoding passes the limit (a 20 MB Opus file holds 8 hours).
    """
    check_file(path, limits)
    samples = _read_with_soundfile(path, limits)
    if samples is None:
        samples = _decode_audio_track(path, limits)
        if samples is None:
            problem = Message("media.unreadable_audio")
            if has_video_stream(path):  # a silent video, or a picture behind an audio name
                is_video = Path(path).suffix.lower() in EXTENSIONS["video"]
                problem = Message("media.no_sound_track" if is_video else "media.pictures_no_sound")
            raise MediaError(path, problem)
    if samples.size == 0:
        raise MediaError(path, Message("media.no_samples"))
    seconds = samples.size / INPUT_SAMPLE_RATE
    if seconds < limits.min_audio_s:
        raise MediaError(path, Message("media.audio_too_short", {
            "length": f"{seconds * 1000:.0f}", "minimum": f"{limits.min_audio_s * 1000:.0f}"}))
    return _checked_samples(path, samples)


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
            duration = duration_s(container, stream)
            if duration is not None and duration > limits.max_video_s:
                raise MediaError(path, Message("media.video_too_long", {"length": f"{duration:.0f}",
                                                                        "limit": f"{limits.max_video_s:.0f}"}))
            total = stream.frames or _count_frames(path)
            rate = float(stream.average_rate or 0) or (total / duration if duration else limits.video_fps)
            indices = frame_indices(total, rate, limits) if total else []
            size = video_frame_size(stream.codec_context.height, stream.codec_context.width, len(indices), limits)
            frames, times = _decode_frames(container, stream, indices, size)
    except av.FFmpegError as err:
        raise MediaError(path, Message("media.unreadable_video", {"reason": err.__class__.__name__})) from err
    if not frames:
        raise MediaError(path, Message("media.no_frames"))
    # The vision encoder groups frames in pairs (temporal patch 2): keep an even count.
    if len(frames) % 2:
        frames.append(frames[-1])
        times.append(times[-1])
    fps = len(frames) / max(total, 1) * rate  # as qwen-omni-utils reports it: frames taken per second of video
    sound = _decode_audio_track(path, limits)
    return VideoClip(np.stack(frames), fps, None if sound is None else _checked_samples(path, sound), tuple(times))


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


def _count_frames(path) -> int:
    """Frames of the first video stream, by its packets, when the header doesn't say (webm, mkv)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


def _decode_frames(container, stream, indices, size: tuple[int, int]) -> tuple[list[np.ndarray], list[float]]:
    """The frames at ``indices`` (in presentation order) as RGB arrays of ``size``, and their times."""
    from collections import Counter

    wanted, (height, width) = Counter(int(i) for i in indices), size
    frames, times = [], []
    start = stream.start_time or 0
    for index, frame in enumerate(container.decode(stream)):
        if index in wanted:
            image = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()
            t = float((frame.pts - start) * stream.time_base) if frame.pts is not None else index / float(
                stream.average_rate or 1)
            frames.extend([image] * wanted[index])
            times.extend([t] * wanted[index])
        if index >= max(wanted, default=-1):
            break
    return frames, times


def check_video(path: str | os.PathLike, limits: MediaLimits = DEFAULT_LIMITS) -> None:
    """What ``load_video`` refuses, without decoding frames (for sending the file as it is)."""
    import av

    check_file(path, limits)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, Message("media.no_video_stream"))
            duration = duration_s(container, container.streams.video[0])
    except av.FFmpegError as err:
        raise MediaError(path, Message("media.unreadable_video", {"reason": err.__class__.__name__})) from err
    if duration is not None and duration > limits.max_video_s:
        raise MediaError(path, Message("media.video_too_long", {"length": f"{duration:.0f}",
                                                                "limit": f"{limits.max_video_s:.0f}"}))


def video_sound_track(path: str | os.PathLike, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray | None:
    """A video's sound at 16 kHz mono, or None when it has none."""
    check_video(path, limits)
    sound = _decode_audio_track(path, limits)
    return _checked_samples(path, sound) if sound is not None and sound.size else None

def _read_with_soundfile(path, limits: MediaLimits) -> np.ndarray | None:
    """The file at 16 kHz mono if libsndfile reads it (WAV, FLAC, Ogg, MP3), read block by block."""
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as sound:
            sink = _SoundSink(path, sound.samplerate, limits, sound.frames / max(sound.samplerate, 1))
            # Blocks of about a million samples whatever the channel count, so no read holds much.
            block = max(1024, 2**20 // max(sound.channels, 1))
            while len(data := sound.read(block, dtype="float32", always_2d=True)):
                sink.add(data.mean(axis=1))
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None
    return sink.finish()


def _decode_audio_track(path, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray | None:
    """The first audio stream of any container PyAV reads, at 16 kHz mono; None if absent.

    Stops with a ``MediaError`` once past ``limits.max_audio_s``.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            sink = _SoundSink(path, stream.sample_rate or INPUT_SAMPLE_RATE, limits, duration_s(container, stream),
                              resample_here=False)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=INPUT_SAMPLE_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    sink.add(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                sink.add(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, OSError):
        return None
    return sink.finish()


MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
"""Rates outside these are a broken or crafted header, not sound: resampling a '1 Hz' file to
16 kHz multiplies its samples 16,000 times."""


class _SoundSink:
    """Collects decoded mono blocks at 16 kHz, refusing the file by name as soon as it is too long.

    ``length_s`` is what the file's header says (None when unknown); a rate or length out of
    bounds is refused before anything is decoded.
    """

    def __init__(self, path, rate: int, limits: MediaLimits, length_s: float | None, resample_here: bool = True):
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise MediaError(path, Message("media.sample_rate", {
                "rate": rate, "minimum": MIN_SAMPLE_RATE, "maximum": MAX_SAMPLE_RATE}))
        self.path, self.limit_s = path, limits.max_audio_s
        if length_s is not None and length_s > self.limit_s:
            self._refuse(length_s)
        self.max_size = int(self.limit_s * INPUT_SAMPLE_RATE) + 1
        self.chunks: list[np.ndarray] = []
        self.size = 0
        self.stream = None
        if resample_here and rate != INPUT_SAMPLE_RATE:
            import soxr

            self.stream = soxr.ResampleStream(rate, INPUT_SAMPLE_RATE, 1, dtype="float32")

    def add(self, mono: np.ndarray, last: bool = False) -> None:
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if self.stream is not None:
            mono = self.stream.resample_chunk(mono, last=last)
        self.chunks.append(mono)
        self.size += mono.size
        if self.size > self.max_size:
            self.chunks.clear()
            self._refuse(None)

    def finish(self) -> np.ndarray:
        if self.stream is not None:
            self.add(np.zeros(0, np.float32), last=True)
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    def _refuse(self, length_s: float | None):
        if length_s is None:
            raise MediaError(self.path, Message("media.audio_over_limit", {"limit": f"{self.limit_s:.0f}"}))
        raise MediaError(self.path, Message("media.audio_too_long", {"length": f"{length_s:.0f}",
                                                                     "limit": f"{self.limit_s:.0f}"}))


def _checked_samples(path, samples: np.ndarray) -> np.ndarray:
    """NaN or infinite samples (a broken float WAV) would turn every feature into NaN and fail the
    reply without the file's name: refuse them here."""
    if not np.isfinite(samples).all():
        raise MediaError(path, Message("media.invalid_samples"))
    return samples


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


def to_float_mono(data: np.ndarray) -> np.ndarray:
    """Browser microphone samples (int16, or float; mono or (N, channels)) → mono float32 in [-1, 1]."""
    data = np.asarray(data)
    samples = data.astype(np.float32) / 32768.0 if data.dtype == np.int16 else data.astype(np.float32)
    return samples.mean(axis=1) if samples.ndim == 2 else samples.reshape(-1)


def pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] → int16, what browsers and Gradio's streaming audio expect."""
    return (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
