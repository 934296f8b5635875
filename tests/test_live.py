"""The Live tab's session logic on the tiny model: microphone chunks in, spoken answers out, barge-in."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest
import soundfile

from media import pcm16, resample
from tests import media_factory
from ui.live.tab import LiveSession, answer

MIC_RATE = 48_000  # what browsers deliver


@pytest.fixture(scope="module")
def question(tmp_path_factory) -> np.ndarray:
    """A spoken question at the microphone's rate, as int16 stereo like a browser chunk, with 1 s of silence after."""
    path = media_factory.speech_wav(tmp_path_factory.mktemp("live") / "q.wav", "What is the weather like today")
    samples, rate = soundfile.read(path, dtype="float32")
    samples = np.concatenate([np.zeros(rate // 2, np.float32), samples, np.zeros(rate, np.float32)])
    mono = pcm16(resample(samples, rate, MIC_RATE))
    return np.stack([mono, mono], axis=1)


def speak_into(session: LiveSession, audio: np.ndarray, chunk_s: float = 0.5, silence_ms: int = 600) -> None:
    step = int(chunk_s * MIC_RATE)
    for start in range(0, len(audio), step):
        session.hear(MIC_RATE, audio[start: start + step], silence_ms)


async def run_answer(backend, session, max_new_tokens=32, on_update=None):
    updates = []
    async for outputs in answer(backend, session, "ethan", "", max_new_tokens):
        updates.append(outputs)
        if on_update:
            on_update(session, outputs)
    return updates


def test_a_spoken_turn_is_answered_in_speech_and_remembered(instruct_backend, question):
    session = LiveSession()
    speak_into(session, question)
    assert session.turn_id == 1 and len(session.pending) == 1
    (audio_part,) = session.pending[0].media
    heard, rate = soundfile.read(audio_part.path)
    assert rate == 16_000 and 1.0 < len(heard) / rate < 3.5

    updates = asyncio.run(run_answer(instruct_backend, session))
    players = [u[2] for u in updates if isinstance(u[2], bytes)]
    assert any(len(wav) > 44 for wav in players), "reply speech streams to the player (WAV bytes past the header)"
    assert [t.role for t in session.turns] == ["user", "assistant"] and session.turns[1].text
    kinds = [m["role"] for m in session.messages]
    assert kinds[0] == "user" and "assistant" in kinds
    assert any(isinstance(m["content"], dict) and m["role"] == "assistant" for m in session.messages), \
        "the whole spoken reply stays in the transcript"
    assert session.phase == "listening"

    speak_into(session, question)  # the next turn carries the conversation so far
    asyncio.run(run_answer(instruct_backend, session))
    assert [t.role for t in session.turns] == ["user", "assistant", "user", "assistant"]


def test_talking_over_a_reply_stops_it_and_the_new_turn_is_heard(instruct_backend, question):
    session = LiveSession()
    speak_into(session, question)
    feed = iter(range(0, len(question), MIC_RATE // 2))
    stopped = {}

    def user_talks_while_it_speaks(live: LiveSession, _outputs):
        if live.phase == "speaking" and "at" not in stopped:
            for start in feed:  # the user's words arrive while the reply plays
                live.hear(MIC_RATE, question[start: start + MIC_RATE // 2], 600)
                if live.barge_in:
                    stopped["at"] = time.perf_counter()
                    break

    asyncio.run(run_answer(instruct_backend, session, max_new_tokens=2000, on_update=user_talks_while_it_speaks))
    finished = time.perf_counter()
    assert "at" in stopped, "speech from the user while the reply plays is a barge-in"
    assert finished - stopped["at"] < 0.5, "the reply stops at once"
    assert instruct_backend._lock.acquire(timeout=0.5), "the engine is free again"
    instruct_backend._lock.release()
    assert session.messages[-1]["content"] == "✋ Interrupted." and not session.barge_in
    for start in feed:  # the rest of the user's words complete the new turn
        session.hear(MIC_RATE, question[start: start + MIC_RATE // 2], 600)
    assert len(session.pending) == 1 and session.turn_id == 2


def test_a_backend_that_cannot_speak_answers_in_text(captioner_backend, question):
    session = LiveSession()
    speak_into(session, question)
    updates = asyncio.run(run_answer(captioner_backend, session))
    assert not any(isinstance(u[2], bytes) for u in updates)
    assert session.turns[-1].role == "assistant" and session.turns[-1].text


def test_noise_is_no_turn_and_an_expired_session_frees_its_files(question):
    session = LiveSession()
    rng = np.random.default_rng(0)
    hiss = pcm16(0.003 * rng.standard_normal(3 * MIC_RATE).astype(np.float32))
    speak_into(session, hiss)
    assert session.turn_id == 0 and not session.pending
    speak_into(session, question)
    folder = session.folder
    assert folder and os.listdir(folder)
    session.close()  # what Gradio calls when the session expires
    assert not os.path.exists(folder) and session.detector is None and not session.pending
