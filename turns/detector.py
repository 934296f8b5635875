"""Who is talking: turns of a live microphone stream, found with silero-vad (its model ships in the wheel).

Pure audio logic, no Gradio: feed 16 kHz mono samples in any chunk size, get events back.
A turn starts once speech has lasted ``min_speech_ms`` (shorter noises are ignored) and ends
after ``silence_ms`` of silence; its audio includes a little of what came just before the
detector fired, so first syllables are not clipped.

Example::

    detector = TurnDetector(TurnSettings(silence_ms=600))
    for event in detector.push(samples_16k):
        if isinstance(event, TurnEnded): answer(event.audio)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
WINDOW = 512
"""silero-vad reads 32 ms windows at 16 kHz."""
QUIET_DBFS = -55.0
"""A window quieter than this is silence, whatever silero-vad says: after loud speech its recurrent state goes on
saying "speech" for ~100 ms of near-silence (measured on a browser's processed microphone), and a turn's end would
wait for it. pipecat gates silero by volume the same way. Speech this quiet doesn't reach us: browsers' gain
control lifts a voice to around -20 dBFS."""


@dataclass(frozen=True)
class TurnSettings:
    silence_ms: int = 600
    """Silence that ends a turn."""
    min_speech_ms: int = 250
    """Speech shorter than this (a cough, a click) is not a turn and doesn't interrupt a reply."""
    threshold: float = 0.5
    """silero-vad's speech probability threshold."""
    pre_roll_ms: int = 300
    max_turn_s: float = 60.0
    """A turn this long ends even without a pause (the model is not meant for endless audio)."""


@dataclass(frozen=True)
class SpeechStarted:
    """The user has been talking for ``min_speech_ms``: stop any reply that is playing (barge-in)."""

    at_s: float


@dataclass(frozen=True, eq=False)
class TurnEnded:
    audio: np.ndarray
    """The turn's speech, 16 kHz mono float32."""
    start_s: float
    end_s: float
    """Stream time at which the silence (or the length cap) ended the turn."""


class TurnDetector:
    def __init__(self, settings: TurnSettings = TurnSettings()):
        from silero_vad import VADIterator, load_silero_vad

        self.settings = settings
        # One model per detector: silero's recurrent state belongs to one stream.
        self._vad = VADIterator(_QuietIsSilence(load_silero_vad()), threshold=settings.threshold,
                                sampling_rate=SAMPLE_RATE, min_silence_duration_ms=settings.silence_ms,
                                speech_pad_ms=30)
        self._pending = np.zeros(0, np.float32)
        self._recent: deque[np.ndarray] = deque(maxlen=max(1, settings.pre_roll_ms * SAMPLE_RATE // 1000 // WINDOW))
        self._speech: list[np.ndarray] | None = None  # the current candidate turn, while the VAD says speech
        self._speech_start = 0.0
        self._first_sample = 0
        self._announced = False
        self.samples_seen = 0

    @property
    def in_speech(self) -> bool:
        return self._speech is not None

    @property
    def now_s(self) -> float:
        return self.samples_seen / SAMPLE_RATE

    def push(self, samples: np.ndarray) -> list[SpeechStarted | TurnEnded]:
        import torch

        events: list[SpeechStarted | TurnEnded] = []
        self._pending = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        usable = len(self._pending) // WINDOW * WINDOW
        windows, self._pending = self._pending[:usable], self._pending[usable:]
        for window in windows.reshape(-1, WINDOW):
            self.samples_seen += WINDOW
            change = self._vad(torch.from_numpy(window.copy())) or {}
            if "start" in change and self._speech is None:
                self._speech, self._speech_start, self._announced = [*self._recent, window], self.now_s, False
                self._first_sample = self.samples_seen - WINDOW * len(self._speech)
            elif self._speech is not None:
                self._speech.append(window)
            self._recent.append(window)
            if self._speech is None:
                continue
            spoken_s = self.now_s - self._speech_start
            if not self._announced and spoken_s * 1000 >= self.settings.min_speech_ms:
                self._announced = True
                events.append(SpeechStarted(self._speech_start))
            if "end" in change or spoken_s >= self.settings.max_turn_s:
                events.extend(self._end_turn(change.get("end")))
        return events

    def _end_turn(self, speech_end: int | None) -> list[TurnEnded]:
        speech, self._speech = self._speech, None
        if not self._announced:  # too short to count
            return []
        audio = np.concatenate(speech)
        if speech_end is None:  # the length cap: the next words start a new turn
            self._vad.reset_states()
        else:  # drop the silence that ended the turn (the VAD's end already includes a little padding)
            audio = audio[: max(0, speech_end - self._first_sample)]
        return [TurnEnded(audio, self._speech_start, self.now_s)]


class _QuietIsSilence:
    """silero-vad's model, whose speech probability is 0 for a window quieter than ``QUIET_DBFS``. The model still
    hears every window, so its state follows the stream."""

    def __init__(self, model):
        self.model, self.floor = model, 10 ** (QUIET_DBFS / 20)

    def __call__(self, window, sampling_rate):
        probability = self.model(window, sampling_rate)
        return probability * 0 if float(window.square().mean().sqrt()) < self.floor else probability

    def reset_states(self):
        self.model.reset_states()
