"""The `openai` backend against speech servers' wire shapes (vLLM-Omni, SGLang-Omni) and their faults.

Those servers need GPUs, so a local fixture of ours speaks their shapes; the same backend
is tested against a real `vllm serve` in test_vllm_server.py.
"""

from __future__ import annotations

import base64
import socket

import numpy as np
import pytest

from backends.events import AudioChunk, Metrics, TextDelta
from backends.openai.backend import NO_SPEECH_NOTE, OpenAIBackend, OpenAIOptions
from backends.openai.client import ServerError
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from tests.omni_server import MODEL, RATE, OmniServer
from tests.streams import audio_of, collect, errors_of, finish_of, seconds_to_stop, text_of

HELLO = "Hello from a fixture server."


@pytest.fixture
def omni():
    with OmniServer("vllm-omni") as server:
        yield server


def backend_for(server: OmniServer, **options) -> OpenAIBackend:
    return OpenAIBackend(OpenAIOptions(api_base=server.url, **options))


def ask(*parts, **request) -> ChatRequest:
    return ChatRequest(turns=(Turn.user(*parts),), **request)


@pytest.mark.parametrize("shape", ["vllm-omni", "sglang-omni"])
def test_speech_streams_as_audio_chunks_in_both_wire_shapes(shape):
    with OmniServer(shape) as server:
        backend = backend_for(server)
        assert backend.model == MODEL and backend.info.can_speak  # the model came from GET /v1/models
        events = collect(backend, ask("Hi", speaker="Chelsie"))

    assert text_of(events) == HELLO
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert len(chunks) == 3 and {c.sample_rate for c in chunks} == {24_000}
    audio = audio_of(events)
    assert audio.size == round(server.audio_seconds * RATE)
    # The fixture's tone runs on across chunks: appended in order, no sample lost or repeated at a seam.
    t = np.arange(audio.size) / RATE
    np.testing.assert_allclose(audio, 0.3 * np.sin(2 * np.pi * 220 * t), atol=2e-4)
    assert audio_of(events[: events.index(chunks[0]) + 1]).size, "audio must arrive before the reply ends"
    first_audio = events.index(chunks[0])
    assert any(isinstance(e, TextDelta) for e in events[first_audio:]), "text goes on after an audio chunk"
    metrics = next(e for e in events if isinstance(e, Metrics))
    assert metrics.audio_seconds == pytest.approx(server.audio_seconds, abs=1e-3)
    assert metrics.output_tokens == len(server.words) and metrics.prompt_tokens == 17
    assert finish_of(events) == "stop" and not errors_of(events)
    sent = server.requests[-1]
    assert sent["modalities"] == ["text", "audio"] and sent["speaker"] == "chelsie" and sent["stream"] is True


def test_the_request_carries_history_media_system_prompt_and_sampling(omni, speech_path, image_path, video_path):
    backend = backend_for(omni)
    turns = (
        Turn.user(MediaPart("image", str(image_path)), "What is this?"),
        Turn.assistant("A gradient.", MediaPart("audio", "/nonexistent/reply.wav")),  # past speech is not resent
        Turn.user(MediaPart("audio", str(speech_path)), MediaPart("video", str(video_path)), "And these?"),
    )
    sampling = Sampling(temperature=0.6, top_p=0.9, top_k=7, max_new_tokens=99, seed=5)
    events = collect(backend, ChatRequest(turns=turns, system_prompt="Be brief.", sampling=sampling,
                                          return_audio=False, use_audio_in_video=True))
    assert text_of(events) == HELLO and not audio_of(events).size

    sent = omni.requests[-1]
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert sent["messages"][0]["content"] == "Be brief."
    assert sent["messages"][2]["content"] == "A gradient."
    image, question = sent["messages"][1]["content"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,") and question["text"] == "What is this?"
    audio, video, text = sent["messages"][3]["content"]
    wav = base64.b64decode(audio["audio_url"]["url"].split(",", 1)[1])
    assert wav[:4] == b"RIFF" and video["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert base64.b64decode(video["video_url"]["url"].split(",", 1)[1]) == video_path.read_bytes()
    assert text == {"type": "text", "text": "And these?"}
    assert sent["mm_processor_kwargs"] == {"use_audio_in_video": True}
    assert (sent["temperature"], sent["top_p"], sent["top_k"], sent["max_tokens"], sent["seed"]) == (0.6, 0.9, 7, 99, 5)
    assert sent["modalities"] == ["text"], "speech off must say so: vLLM-Omni speaks by default"


def test_a_videos_sound_can_travel_as_its_own_audio_part(omni, video_path):
    backend = backend_for(omni, video_audio="separate")
    collect(backend, ask(MediaPart("video", str(video_path)), "Hm?", use_audio_in_video=True))
    sent = omni.requests[-1]
    kinds = [part["type"] for part in sent["messages"][0]["content"]]
    assert kinds == ["video_url", "audio_url", "text"]
    assert "mm_processor_kwargs" not in sent


def test_a_server_refusing_processor_settings_gets_the_videos_sound_as_an_audio_part(omni, video_path):
    omni.fault = "refuse-mm-kwargs"
    backend = backend_for(omni)
    for _ in range(2):
        events = collect(backend, ask(MediaPart("video", str(video_path)), "Hm?", use_audio_in_video=True))
        assert text_of(events) == HELLO and not errors_of(events)
    first, retried, later = omni.requests
    assert first["mm_processor_kwargs"] == {"use_audio_in_video": True}
    for body in (retried, later):  # remembered: later turns don't ask again
        assert "mm_processor_kwargs" not in body
        assert [p["type"] for p in body["messages"][0]["content"]] == ["video_url", "audio_url", "text"]


def test_a_text_only_server_degrades_to_text_with_a_note_once():
    with OmniServer("text-only") as server:
        backend = backend_for(server)
        first = collect(backend, ask("Hi"))
        second = collect(backend, ask("Again"))
    assert text_of(first) == HELLO and [e.message for e in errors_of(first)] == [NO_SPEECH_NOTE]
    assert errors_of(first)[0].stage == "speech" and finish_of(first) == "stop"
    assert text_of(second) == HELLO and not errors_of(second)
    assert server.requests[-1]["modalities"] == ["text"]


def test_a_server_that_refuses_audio_output_is_asked_again_for_text(omni):
    omni.fault = "refuse-audio"
    events = collect(backend_for(omni), ask("Hi"))
    assert text_of(events) == HELLO and [e.message for e in errors_of(events)] == [NO_SPEECH_NOTE]
    assert [r["modalities"] for r in omni.requests] == [["text", "audio"], ["text"]]


@pytest.mark.parametrize(("fault", "expected"), [
    ("400", "The model server refused the request (HTTP 400): Invalid speaker 'nobody'"),
    ("500", "The model server failed (HTTP 500): EngineCore encountered an issue"),
    ("error-event", "reported an error mid-reply: The engine died mid-reply. The text so far is kept."),
    ("cut", "The connection to the model server broke mid-reply"),
    ("no-finish", "The model server ended the reply early. The text so far is kept."),
])
def test_server_faults_become_clear_messages_and_the_next_turn_works(omni, fault, expected):
    backend = backend_for(omni)
    omni.fault = fault
    events = collect(backend, ask("Hi"))
    (error,) = errors_of(events)
    assert expected in error.message and finish_of(events) == "error"
    if fault in ("error-event", "cut", "no-finish"):
        kept = text_of(events)
        assert kept and HELLO.startswith(kept) and kept != HELLO, "the text before the fault is kept"
    omni.fault = None
    assert text_of(collect(backend, ask("Hi again"))) == HELLO


def test_a_silent_server_times_out_with_a_message(omni):
    omni.fault = "stall"
    events = collect(backend_for(omni, timeout_s=0.5), ask("Hi"))
    assert "sent nothing for 0 s" in errors_of(events)[0].message or "sent nothing for 1 s" in errors_of(events)[0].message
    assert finish_of(events) == "error"


def test_an_unreachable_server_is_named_at_start_and_per_turn():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens here once the socket closes
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(ServerError, match=f"Can't reach the model server at {url}"):
        OpenAIBackend(OpenAIOptions(api_base=url))
    backend = OpenAIBackend(OpenAIOptions(api_base=url, model="qwen"))  # a named model needs no server at start
    events = collect(backend, ask("Hi"))
    assert errors_of(events)[0].message.startswith(f"Can't reach the model server at {url}")
    assert finish_of(events) == "error"


def test_a_bad_file_is_refused_before_anything_is_sent(omni, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    events = collect(backend_for(omni), ask(MediaPart("image", str(broken)), "What?"))
    assert errors_of(events)[0].message.startswith("broken.png: not a readable image")
    assert errors_of(events)[0].stage == "input" and not omni.requests


def test_stop_closes_the_http_stream(omni):
    omni.words = [f" w{i}" for i in range(200)]
    omni.chunk_delay_s = 0.02
    backend = backend_for(omni)

    seconds = seconds_to_stop(backend, ask("Talk", return_audio=False), after_deltas=2, settled=omni.disconnected.is_set)
    assert seconds < 0.5, "the server should notice the closed stream at once"
    omni.words = ["Still", " here"]
    assert text_of(collect(backend, ask("Hi"))) == "Still here"


def test_the_installed_openai_client_takes_our_settings_and_reaches_the_server(omni):
    """The client is built from the installed openai and its own http library: a release of that library
    must not be able to refuse what we hand it (httpx2 2.17.0 refused an httpx.Timeout)."""
    import asyncio

    backend = backend_for(omni, timeout_s=7.0, connect_timeout_s=2.0)

    async def ask_models():
        client = backend._clients.current()
        assert (client.timeout.read, client.timeout.connect) == (7.0, 2.0) and client.max_retries == 0
        return [m.id async for m in client.models.list()]

    assert asyncio.run(ask_models()) == [MODEL]


def test_the_app_with_backend_openai_answers_through_gradio_client(omni, tmp_path):
    """`python app.py --backend openai` as a user starts it, in its own process, against the fixture server."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from gradio_client import Client

    from tests.conftest import ROOT
    from tests.test_app import last_reply

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = subprocess.Popen([sys.executable, "app.py", "--backend", "openai", "--api-base", omni.url,
                            "--server-port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert app.poll() is None, f"the app exited: {app.stderr.read()[-2000:]}"
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the app did not start in 120 s"
                time.sleep(0.5)
        client = Client(url, verbose=False, download_files=str(tmp_path))
        conversation, *_ = client.predict({"text": "Hi", "files": []}, api_name="/chat")
        assert last_reply(conversation) == HELLO
        assert omni.requests and omni.requests[-1]["messages"][-1]["content"][0]["text"] == "Hi"
    finally:
        app.terminate()
        app.wait(timeout=30)
