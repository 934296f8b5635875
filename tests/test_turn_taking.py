"""Turn-taking on real speech (espeak-ng) with silence and noise, fed in uneven chunks like a microphone."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from media import resample
from tests import media_factory
from turns import SAMPLE_RATE, SpeechStarted, TurnDetector, TurnEnded, TurnSettings


@pytest.fixture(scope="module")
def utterance(tmp_path_factory) -> np.ndarray:
    """A spoken sentence, 16 kHz, with espeak's leading and trailing silence cut off."""
    path = media_factory.speech_wav(tmp_path_factory.mktemp("vad") / "u.wav", "Could you tell me what the weather is like")
    samples, rate = soundfile.read(path, dtype="float32")
    samples = resample(samples, rate, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(samples) > 0.02)
    return samples[loud[0]: loud[-1] + 1]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def feed(detector: TurnDetector, signal: np.ndarray, seed: int = 0) -> list:
    """Push the signal in chunks of 0.1–0.6 s, as a browser microphone delivers it."""
    rng, events, pos = np.random.default_rng(seed), [], 0
    while pos < len(signal):
        size = int(rng.integers(1600, 9600))
        events += detector.push(signal[pos: pos + size])
        pos += size
    return events


def test_two_utterances_with_a_pause_are_two_turns_ended_after_the_silence(utterance):
    talk = len(utterance) / SAMPLE_RATE
    events = feed(TurnDetector(TurnSettings(silence_ms=600)),
                  np.concatenate([silence(1.0), utterance, silence(1.5), utterance, silence(1.5)]))
    turns = [e for e in events if isinstance(e, TurnEnded)]
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    assert len(turns) == 2 and len(starts) == 2
    for turn, speech_start in zip(turns, (1.0, 1.0 + talk + 1.5)):
        assert turn.start_s == pytest.approx(speech_start, abs=0.15)
        assert turn.end_s == pytest.approx(speech_start + talk + 0.6, abs=0.2), "ends ~silence_ms after the speech"
        assert len(turn.audio) / SAMPLE_RATE == pytest.approx(talk, abs=0.4)  # the words, not the silence after
    assert events.index(starts[0]) < events.index(turns[0]) < events.index(starts[1])


def test_a_short_pause_inside_a_turn_does_not_end_it(utterance):
    events = feed(TurnDetector(TurnSettings(silence_ms=600)),
                  np.concatenate([silence(0.5), utterance, silence(0.25), utterance, silence(1.2)]))
    (turn,) = [e for e in events if isinstance(e, TurnEnded)]
    assert len(turn.audio) / SAMPLE_RATE > 2 * len(utterance) / SAMPLE_RATE - 0.3


def test_the_silence_setting_decides_when_a_turn_ends(utterance):
    signal = np.concatenate([silence(0.5), utterance, silence(2.0)])
    quick = [e for e in feed(TurnDetector(TurnSettings(silence_ms=300)), signal) if isinstance(e, TurnEnded)]
    patient = [e for e in feed(TurnDetector(TurnSettings(silence_ms=1200)), signal) if isinstance(e, TurnEnded)]
    assert patient[0].end_s - quick[0].end_s == pytest.approx(0.9, abs=0.15)


def test_clicks_and_background_noise_are_not_turns():
    rng = np.random.default_rng(1)
    click = (0.8 * rng.standard_normal(int(0.08 * SAMPLE_RATE))).astype(np.float32)
    hum = (0.01 * np.sin(2 * np.pi * 50 * np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE)
           + 0.003 * rng.standard_normal(4 * SAMPLE_RATE)).astype(np.float32)
    events = feed(TurnDetector(), np.concatenate([silence(0.5), click, silence(1.0), hum, click, silence(1.0)]))
    assert events == []


def test_an_endless_talker_is_cut_into_turns_at_the_length_cap(utterance):
    events = feed(TurnDetector(TurnSettings(max_turn_s=2.0)), np.concatenate([utterance] * 3 + [silence(1.0)]))
    turns = [e for e in events if isinstance(e, TurnEnded)]
    assert len(turns) >= 2 and all(len(t.audio) / SAMPLE_RATE <= 2.5 for t in turns[:-1])


def test_a_turn_ends_a_pause_after_the_voice_stops_even_when_the_model_lingers(utterance, monkeypatch):
    """silero's state can go on saying "speech" over near-silence after loud speech (a browser's processed
    microphone): silence that quiet counts as silence, so the turn ends when the pause is over."""
    import silero_vad

    load = silero_vad.load_silero_vad

    def lingering():
        model = load()

        class Lingering:  # the real model's state, but it never lets go of "speech"
            def __call__(self, window, rate):
                return model(window, rate) * 0 + 0.99

            def reset_states(self):
                model.reset_states()

        return Lingering()

    monkeypatch.setattr(silero_vad, "load_silero_vad", lingering)
    talk = len(utterance) / SAMPLE_RATE
    events = feed(TurnDetector(TurnSettings(silence_ms=400)), np.concatenate([silence(0.5), utterance, silence(1.5)]))
    (turn,) = [e for e in events if isinstance(e, TurnEnded)]
    assert turn.end_s == pytest.approx(0.5 + talk + 0.4, abs=0.1)
