"""Audio as the audio encoder takes it, mono float32 at 16 kHz, from any file that soundfile or PyAV
reads, never decoding past the length limit."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from media.limits import DEFAULT_LIMITS, MediaError, MediaLimits, check_file
from media.probe import EXTENSIONS, duration_s, has_video_stream
from messages import Message

INPUT_SAMPLE_RATE = 16_000
"""The audio encoder listens at 16 kHz mono."""


def load_audio(path: str | os.PathLike, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Mono float32 samples at 16 kHz.

    Only what the limits allow is ever decoded: a file whose header says it is too long, or has
    an absurd sample rate, is refused before decoding, and one that turns out too long is refused
    as soon as decoding passes the limit (a 20 MB Opus file holds 8 hours).
    """
    check_file(path, limits)
    samples = _read_with_soundfile(path, limits)
    if samples is None:
        samples = decode_audio_track(path, limits)
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
    return checked_samples(path, samples)


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


def decode_audio_track(path, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray | None:
    """The first audio stream of any container PyAV reads, at 16 kHz mono; None if absent.

    Stops with a ``MediaError`` once past ``limits.max_audio_s``. Raises one too when the stream breaks
    part-way: what came before is not the whole sound, and a reply to it would be about a part the user
    can't tell.
    """
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError):
        return None
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        sink = _SoundSink(path, stream.sample_rate or INPUT_SAMPLE_RATE, limits, duration_s(container, stream),
                          resample_here=False)
        try:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=INPUT_SAMPLE_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    sink.add(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                sink.add(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, OSError) as err:
            if not sink.size:
                return None  # nothing decodes at all: the caller says it isn't readable sound
            raise MediaError(path, Message("media.sound_breaks", {
                "at": f"{sink.size / INPUT_SAMPLE_RATE:.1f}", "reason": err.__class__.__name__})) from err
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


def checked_samples(path, samples: np.ndarray) -> np.ndarray:
    """NaN or infinite samples (a broken float WAV) would turn every feature into NaN and fail the
    reply without the file's name: refuse them here."""
    if not np.isfinite(samples).all():
        raise MediaError(path, Message("media.invalid_samples"))
    return samples
