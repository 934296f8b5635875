"""The input audio buffer of one realtime session, and server VAD over it (``turns.TurnDetector``, silero-vad).

Appends arrive as PCM16 at the session's input rate; the buffer keeps them at 16 kHz, what the model hears. With
server VAD, a finished turn comes back from ``append`` as the audio to commit; without it, the client commits the
buffer. The buffer is bounded: with VAD it keeps only the newest ``max_seconds`` (outside speech it holds silence
nobody will commit); without VAD an append past the bound is refused, since the client decides what is committed.

``append`` runs silero on the CPU (about 4 ms per 100 ms of audio): call it off the event loop, one call at a time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad

from media import INPUT_SAMPLE_RATE, StreamResampler
from turns import SpeechStarted, TurnDetector, TurnEnded, TurnSettings


@dataclass(frozen=True)
class Heard:
    """What an append made the detector say, in milliseconds of this session's input audio."""

    started_ms: int | None = None
    """Speech has started (after the detector's minimum speech length): barge-in."""
    turn: np.ndarray | None = None
    """A finished turn (16 kHz float32, pre-roll included) to commit."""
    stopped_ms: int | None = None


class InputAudio:
    def __init__(self, rate: int, vad: ServerVad | None, max_seconds: float):
        self.rate, self.vad, self.max_samples = rate, vad, int(max_seconds * INPUT_SAMPLE_RATE)
        self._resample = StreamResampler(rate)
        self._chunks: deque[np.ndarray] = deque()
        self._held = 0
        self._heard = 0  # samples at 16 kHz since the session began: the protocol's audio_start_ms / audio_end_ms
        self._detector: TurnDetector | None = None
        self._detector_origin = 0
        self._new_detector()

    @property
    def seconds(self) -> float:
        return self._held / INPUT_SAMPLE_RATE

    @property
    def ms(self) -> int:
        return self._heard * 1000 // INPUT_SAMPLE_RATE

    def would_overflow(self, samples_at_rate: int) -> bool:
        """Without VAD, an append this long would pass the bound (and is refused before it is taken)."""
        return self.vad is None and self._held + samples_at_rate * INPUT_SAMPLE_RATE // self.rate > self.max_samples

    def append(self, samples: np.ndarray) -> list[Heard]:
        """Take ``samples`` (float32 at ``rate``); what the detector heard in them, in order."""
        audio = self._resample(samples)
        self._chunks.append(audio)
        self._held += len(audio)
        self._heard += len(audio)
        while self._held > self.max_samples and self.vad is not None:  # VAD: the oldest silence goes
            self._held -= len(self._chunks.popleft())
        if self._detector is None:
            return []
        heard = []
        for event in self._detector.push(audio):
            if isinstance(event, SpeechStarted):
                heard.append(Heard(started_ms=self._ms_of(event.at_s)))
            elif isinstance(event, TurnEnded):
                # The turn is committed: what the buffer held up to here goes with it (the protocol clears it).
                self._chunks.clear()
                self._held = 0
                speech_end = event.end_s - self._detector.settings.silence_ms / 1000
                heard.append(Heard(turn=event.audio, stopped_ms=self._ms_of(speech_end)))
        return heard

    def take(self) -> np.ndarray:
        """The buffer's audio for a client's commit; the buffer is empty after, and VAD starts afresh."""
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        self.clear()
        return audio

    def clear(self) -> None:
        self._chunks.clear()
        self._held = 0
        if self._detector is not None and self._detector.in_speech:  # a half-heard turn must not end later
            self._new_detector()

    def _new_detector(self) -> None:
        if self.vad is None:
            self._detector = None
            return
        self._detector = TurnDetector(TurnSettings(
            silence_ms=self.vad.silence_duration_ms or 500, threshold=self.vad.threshold or 0.5,
            pre_roll_ms=self.vad.prefix_padding_ms if self.vad.prefix_padding_ms is not None else 300,
            max_turn_s=self.max_samples / INPUT_SAMPLE_RATE))
        self._detector_origin = self._heard

    def _ms_of(self, detector_s: float) -> int:
        return int((self._detector_origin / INPUT_SAMPLE_RATE + detector_s) * 1000)
