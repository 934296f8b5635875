"""``/v1/chat/completions`` and ``/v1/models`` through the real ``openai`` SDK, our own ``--backend openai`` against the
app, and who may use the API (``/v1/realtime`` too): one app per module, the tiny model on the CPU, launched with a
login and an API key. The backend is wrapped by ``RecordingBackend`` (tests/streams.py), which sees every engine
stream the API opens: what it was asked, what it answered, and whether the API closed it before its end."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import time

import httpx
import numpy as np
import openai
import pytest
import soundfile
import websockets

import api
from api.access import Access
from api.chat import ChatLimits, OpenAIServingChat, chat_routes
from api.chat.protocol import ChatCompletionRequest
from api.errors import ErrorResponse
from backends import build_backend
from backends.base import Backend, BackendInfo
from backends.events import AudioChunk, Done, Error, TextDelta
from backends.request import ChatRequest, Sampling, Turn
from api.realtime import realtime_route
from messages import Message
from tests.streams import RecordingBackend
from tests.test_app import launch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
RATE = 24_000
KEY = "test-key-7f3a"
USER, PASSWORD = "ada", "lovelace"
BODY_LIMIT = 4 * 2**20


@pytest.fixture(scope="module")
def recorder(instruct_backend):
    return RecordingBackend(instruct_backend)


@pytest.fixture(scope="module")
def serving(recorder):
    return OpenAIServingChat(recorder, ChatLimits(max_body_bytes=BODY_LIMIT))


@pytest.fixture(scope="module")
def url(recorder, serving):
    """The app with a login and a key; its routes as ``api.app_kwargs`` makes them, with ``serving`` at hand."""
    access = Access(api_keys=(KEY,), login_required=True)
    routes = {"routes": [realtime_route(recorder, access=access), *chat_routes(serving, access)]}
    demo = launch(recorder, app_kwargs=routes, auth=[(USER, PASSWORD)])
    yield demo.local_url.rstrip("/")
    demo.close()


def settled(serving: OpenAIServingChat, timeout: float = 2.0) -> bool:
    """No reply holds a slot (or its files) any more: the last one's response has ended on the server too."""
    end = time.perf_counter() + timeout
    while serving.in_flight and time.perf_counter() < end:
        time.sleep(0.01)
    return serving.in_flight == 0


@pytest.fixture(scope="module")
def client(url):
    with openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0) as client:
        yield client


def data_url(path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(open(path, 'rb').read()).decode()}"


def ask(text: str, **kwargs) -> dict:
    return {"model": "qwen3-omni", "messages": [{"role": "user", "content": text}], "max_tokens": 24, **kwargs}


def streamed_pcm(chunks) -> np.ndarray:
    pieces = [np.frombuffer(base64.b64decode(c.choices[0].delta.audio.data), "<i2") for c in chunks
              if c.choices and c.choices[0].delta.audio and c.choices[0].delta.audio.data]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int16)


def test_models_lists_the_one_served_model(client, recorder):
    models = client.models.list().data
    assert [m.id for m in models] == [recorder.info.model] and models[0].object == "model"


def test_app_kwargs_serves_the_http_routes_beside_the_socket(recorder):
    paths = [route.path for route in api.app_kwargs(recorder, api_keys=(KEY,))["routes"]]
    assert paths == ["/v1/realtime", "/v1/models", "/v1/chat/completions"]


def test_a_streamed_text_reply_with_usage_in_the_last_chunk(client, recorder, serving):
    chunks = list(client.chat.completions.create(**ask("Name a colour.", temperature=0, seed=3), stream=True,
                                                 stream_options={"include_usage": True}))
    engine = recorder.stream_for("Name a colour.")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and text == engine.text and engine.done in ("stop", "length")
    assert engine.request.sampling == Sampling(temperature=0, top_p=0.8, top_k=20, max_new_tokens=24, seed=3)
    assert not engine.request.return_audio and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == engine.done
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0 and chunks[-1].usage.prompt_tokens > 0
    assert settled(serving)


def test_a_streamed_spoken_reply_is_openai_audio_output(client, recorder):
    chunks = list(client.chat.completions.create(
        **ask("Say something.", max_tokens=40), stream=True, modalities=["text", "audio"],
        audio={"voice": "Chelsie", "format": "pcm16"}))
    engine = recorder.stream_for("Say something.")
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    transcript = "".join(d.audio.transcript or "" for d in deltas if d.audio)
    assert engine.request.speaker == "chelsie" and engine.request.return_audio
    assert transcript and transcript == engine.text and not any(d.content for d in deltas)
    audio = streamed_pcm(chunks)
    assert audio.size and not np.isnan(audio.astype(np.float32)).any()
    # every sample the engine spoke, in order, at 24 kHz: no chunk lost or repeated
    np.testing.assert_array_equal(audio, engine.pcm)
    assert 0.08 <= audio.size / RATE <= 2.5  # the tiny model speaks at most 2 s here
    assert {d.audio.id for d in deltas if d.audio} == {deltas[-1].audio.id} and deltas[-1].audio.expires_at


def test_a_whole_reply_in_text_and_in_speech(client, recorder):
    written = client.chat.completions.create(**ask("Count to three.", temperature=0))
    engine = recorder.stream_for("Count to three.")
    assert written.object == "chat.completion" and written.choices[0].message.content == engine.text
    assert written.choices[0].message.audio is None and written.usage.total_tokens > 0

    spoken = client.chat.completions.create(**ask("Hum a tune."), modalities=["text", "audio"],
                                            audio={"voice": "aiden", "format": "wav"})
    engine = recorder.stream_for("Hum a tune.")
    message = spoken.choices[0].message
    assert message.content is None and message.audio.transcript == engine.text
    samples, rate = soundfile.read(io.BytesIO(base64.b64decode(message.audio.data)), dtype="int16")
    assert rate == RATE and samples.ndim == 1 and samples.size
    np.testing.assert_array_equal(samples, engine.pcm)


def test_image_audio_and_video_inputs_reach_the_engine_as_files(client, recorder, serving, image_path, speech_path,
                                                               video_path):
    reply = client.chat.completions.create(**{**ask(""), "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(image_path, "image/png")}},
            {"type": "input_audio", "input_audio": {"data": base64.b64encode(speech_path.read_bytes()).decode(),
                                                    "format": "wav"}},
            {"type": "video_url", "video_url": {"url": data_url(video_path, "video/mp4")}},
            {"type": "text", "text": "What do you see and hear?"}]}]},
        extra_body={"mm_processor_kwargs": {"use_audio_in_video": True}})
    engine = recorder.stream_for("What do you see and hear?")
    assert reply.choices[0].message.content == engine.text and engine.done in ("stop", "length")
    assert [p.kind for p in engine.request.turns[-1].media] == ["image", "audio", "video"]
    assert engine.request.system_prompt == "Be brief." and engine.request.use_audio_in_video
    assert settled(serving) and not any(os.path.exists(p.path) for p in engine.request.turns[-1].media)


def test_bad_inputs_are_refused_with_a_clear_400(client, url, image_path):
    image = [{"type": "text", "text": "Look."}, {"type": "image_url", "image_url": {"url": ""}}]

    def refusal(**body) -> str:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(**{**ask("Hi"), **body})
        return caught.value.body["message"]

    def with_image(url_: str) -> list:
        return [{"role": "user", "content": [image[0], {**image[1], "image_url": {"url": url_}}]}]

    assert "fetches no https URLs" in refusal(messages=with_image("https://example.com/cat.png"))
    assert "base64 is broken" in refusal(messages=with_image("data:image/png;base64,@@@"))
    broken = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
    assert "messages[0].content[1].image_url.url" in refusal(messages=with_image(broken))
    assert "Unknown voice 'alloy'" in refusal(modalities=["text", "audio"], audio={"voice": "alloy",
                                                                                    "format": "wav"})
    assert "n: not served" in refusal(n=2)
    assert "The last message must be the user's" in refusal(messages=[{"role": "user", "content": "Hi"},
                                                                      {"role": "assistant", "content": "Hello"}])
    assert "tag 'file'" in refusal(messages=[{"role": "user", "content": [{"type": "file", "file": {}}]}])
    headers = {"Authorization": f"Bearer {KEY}"}
    not_json = httpx.post(url + "/v1/chat/completions", content=b"{", headers=headers)
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    too_big = httpx.post(url + "/v1/chat/completions", headers=headers, json=ask("x" * (BODY_LIMIT + 1)))
    assert too_big.status_code == 413 and "4 MiB at most" in too_big.json()["error"]["message"]


def test_an_engine_warming_up_is_a_503(client, recorder, monkeypatch):
    monkeypatch.setattr(recorder, "warming_up", Message("warm_up.compiling_talker"), raising=False)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(**ask("Hi"))
    assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"]


def test_a_full_server_or_one_warming_up_refuses_before_reading_the_body(url, recorder, serving, monkeypatch):
    """A flood of big bodies while every slot is taken costs no memory: the 429 (or 503) comes unread."""
    from api.chat import router

    read = []

    async def reader(request, limit):
        read.append(limit)
        return await original(request, limit)

    original = router._read_json
    monkeypatch.setattr(router, "_read_json", reader)
    headers, body = {"Authorization": f"Bearer {KEY}"}, ask("x" * (BODY_LIMIT // 2))
    with monkeypatch.context() as patch:
        patch.setattr(serving, "in_flight", serving.limits.max_requests)
        full = httpx.post(url + "/v1/chat/completions", headers=headers, json=body)
    assert full.status_code == 429 and full.headers["retry-after"] and not read
    with monkeypatch.context() as patch:
        patch.setattr(recorder, "warming_up", Message("warm_up.compiling_talker"), raising=False)
        warming = httpx.post(url + "/v1/chat/completions", headers=headers, json=body)
    assert warming.status_code == 503 and not read
    for broken in (b"{", json.dumps(body | {"n": 2}).encode(), b"x" * (BODY_LIMIT + 1)):  # 400, 400, 413
        assert httpx.post(url + "/v1/chat/completions", headers=headers, content=broken).status_code in (400, 413)
    assert len(read) == 3 and serving.in_flight == 0, "a refused request kept its slot"


def test_a_client_that_leaves_mid_stream_frees_its_engine_stream(url, recorder, serving):
    async def run():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0) as client:
            stream = await client.chat.completions.create(**ask("Tell a long story.", max_tokens=1000),
                                                          stream=True, modalities=["text", "audio"])
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.audio:
                    break
            await stream.close()
        engine = recorder.stream_for("Tell a long story.")
        return engine, await engine.closed_within(5)

    engine, seconds = asyncio.run(run())
    assert engine.closed and engine.done is None, "the engine's stream ran on after the client left"
    assert seconds < 1.0
    assert settled(serving), "the reply's slot and files were kept after the client left"


def test_a_client_that_leaves_a_whole_reply_frees_its_engine_stream(url, recorder, serving, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("uvicorn"), "propagate", True)  # the server's own errors, to caplog
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=0.5,
                   json=ask("Another long story.", max_tokens=1000, modalities=["text", "audio"]))
    left = time.perf_counter()
    engine = recorder.stream_for("Another long story.")
    while not engine.closed and time.perf_counter() - left < 5:
        time.sleep(0.01)
    seconds = time.perf_counter() - left
    assert engine.closed and engine.done is None and settled(serving)
    assert seconds < 1.0, "the engine's stream ran on after the client left"
    time.sleep(0.1)  # the route's answer to nobody (499) comes after the engine's stream is closed
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, f"a client leaving was logged as a failure: {errors[0].getMessage()}"


def test_a_slot_and_the_files_are_freed_even_for_a_stream_never_read(recorder):
    async def run():
        serving = OpenAIServingChat(recorder, ChatLimits(max_requests=1))
        request = ChatCompletionRequest.model_validate(ask("Unread.", stream=True))
        first = await serving.create_chat_completion(request)
        second = await serving.create_chat_completion(request)
        await first.aclose()
        return serving.in_flight, second

    in_flight, second = asyncio.run(run())
    assert isinstance(second, ErrorResponse) and second.status == 429 and in_flight == 0


class Failing(Backend):
    """Writes a word, then fails: by an ``Error`` event of ``stage``, or by raising (breaking the contract)."""

    info = BackendInfo(backend="fake", model="fake", kind="instruct", device="cpu")

    def __init__(self, stage: str | None):
        self.stage = stage

    async def stream(self, request):
        yield TextDelta("Hal")
        if self.stage is None:
            raise RuntimeError("boom")
        yield Error(Message("server.refused", {"status": 400, "cause": "no"}), self.stage)
        yield Done("error")


@pytest.mark.parametrize("stage, status", [(None, 500), ("input", 400), ("backend", 503), ("generation", 500)])
def test_an_engine_failure_is_an_error_status_or_an_error_event_once_streaming(stage, status):
    async def run(stream: bool):
        serving = OpenAIServingChat(Failing(stage))
        result = await serving.create_chat_completion(ChatCompletionRequest.model_validate(ask("Hi", stream=stream)))
        lines = [line async for line in result] if stream else None
        return result, lines, serving.in_flight

    whole, _, in_flight = asyncio.run(run(False))
    assert isinstance(whole, ErrorResponse) and whole.status == status and in_flight == 0
    _, lines, in_flight = asyncio.run(run(True))
    assert lines[-1] == "data: [DONE]\n\n" and in_flight == 0
    error = json.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["message"] == whole.message and ("boom" if stage is None else "no") in error["message"]


def test_our_openai_backend_speaks_with_another_instance_of_the_app(url, recorder):
    backend = build_backend("openai", None, api_base=url + "/v1", api_key=KEY, speech="auto")
    assert backend.model == recorder.info.model and backend.info.can_speak

    async def run(request):
        return [event async for event in backend.stream(request)]

    text = asyncio.run(run(ChatRequest((Turn.user("Plain text please."),), return_audio=False,
                                       sampling=Sampling(max_new_tokens=24))))
    engine = recorder.stream_for("Plain text please.")
    assert "".join(e.text for e in text if isinstance(e, TextDelta)) == engine.text and engine.text
    spoken = asyncio.run(run(ChatRequest((Turn.user("Speak please."),), speaker="Aiden",
                                         sampling=Sampling(max_new_tokens=30))))
    engine = recorder.stream_for("Speak please.")
    assert engine.request.speaker == "aiden" and engine.request.sampling.max_new_tokens == 30
    assert "".join(e.text for e in spoken if isinstance(e, TextDelta)) == engine.text
    audio = np.concatenate([e.samples for e in spoken if isinstance(e, AudioChunk)])
    np.testing.assert_allclose(audio, np.concatenate(engine.audio), atol=1e-4)  # through PCM16 and back
    assert isinstance(spoken[-1], Done) and spoken[-1].finish_reason in ("stop", "length")


def test_without_a_key_or_a_login_the_api_refuses(url):
    with openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()
        with pytest.raises(openai.AuthenticationError):
            stranger.chat.completions.create(**ask("Hi"))
    assert httpx.get(url + "/v1/models").status_code == 401

    async def connect(**kwargs):
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="wrong").realtime.connect(
                model="qwen3-omni", **kwargs) as connection:
            return (await connection.recv()).type

    with pytest.raises(websockets.InvalidStatus) as caught:
        asyncio.run(connect())
    assert caught.value.response.status_code == 401


def test_a_key_or_a_logged_in_cookie_is_taken(url, client):
    async def realtime(api_key: str, **kwargs) -> str:
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=api_key).realtime.connect(
                model="qwen3-omni", **kwargs) as connection:
            return (await connection.recv()).type

    assert asyncio.run(realtime(KEY)) == "session.created"
    ws_url = url.replace("http", "ws", 1) + "/v1/realtime"

    async def browser_socket() -> tuple[str, str]:  # a browser's socket: the key as a subprotocol, no header
        async with websockets.connect(ws_url, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as ws:
            return ws.subprotocol, json.loads(await ws.recv())["type"]

    assert asyncio.run(browser_socket()) == ("realtime", "session.created")

    with httpx.Client(base_url=url) as browser:
        assert browser.post("/login", data={"username": USER, "password": "nope"}).status_code == 400
        assert browser.post("/login", data={"username": USER, "password": PASSWORD}).status_code == 200
        assert browser.get("/v1/models").status_code == 200
        reply = browser.post("/v1/chat/completions", json=ask("Logged in.", max_tokens=8))
        assert reply.status_code == 200 and reply.json()["object"] == "chat.completion"
        # another site's page, in the logged-in user's browser: the cookie goes along, and is not taken
        assert browser.get("/v1/models", headers={"Origin": "https://evil.example"}).status_code == 401
        assert browser.get("/v1/models", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 401
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    assert asyncio.run(realtime("not-the-key", extra_headers={"Cookie": cookie})) == "session.created"


def test_our_openai_backend_reads_openai_s_transcript_as_the_text():
    """OpenAI streams a spoken reply's text only in ``delta.audio.transcript``; a server sending ``content`` too is
    not read twice."""
    from openai.types.chat import ChatCompletionChunk

    from backends.openai.wire import StreamedReply
    from backends.reasoning import ReasoningSplitter

    def chunk(delta: dict) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate({"id": "c", "object": "chat.completion.chunk", "created": 0,
                                                   "model": "m", "choices": [{"index": 0, "delta": delta}]})

    openai_shape = StreamedReply(ReasoningSplitter())
    for delta in ({"audio": {"id": "a", "transcript": "Hel"}}, {"audio": {"id": "a", "transcript": "lo"}}):
        openai_shape.read(chunk(delta))
    both = StreamedReply(ReasoningSplitter())
    for delta in ({"content": "Hel"}, {"content": "lo", "audio": {"id": "a", "transcript": "Hello"}}):
        both.read(chunk(delta))
    assert openai_shape.text == both.text == "Hello"


def test_the_keys_come_from_the_flag_and_the_environment(monkeypatch):
    import cli

    monkeypatch.setenv("QWEN_OMNI_API_KEY", "k2, k3,")
    assert cli.read_api_keys(cli.parse_args(["--serve-api-key", "k1", "--serve-api-key", "k2"]).serve_api_key) \
        == ("k1", "k2", "k3")
    monkeypatch.delenv("QWEN_OMNI_API_KEY")
    assert cli.read_api_keys(cli.parse_args([]).serve_api_key) == ()


@pytest.mark.parametrize(("kind", "headers", "taken"), [
    ("websocket", {"origin": "http://127.0.0.1:7860", "sec-fetch-site": "same-origin"}, True),  # the Live tab
    ("websocket", {"origin": "http://127.0.0.1:7860"}, True),  # a browser without Sec-Fetch-Site
    ("websocket", {"origin": "https://elsewhere.example", "sec-fetch-site": "cross-site"}, False),
    ("websocket", {}, False),  # a program: it needs the key
    ("http", {"origin": "http://127.0.0.1:7860", "sec-fetch-site": "same-origin"}, False),  # HTTP: the key only
])
def test_with_a_key_and_no_login_the_open_page_s_own_socket_is_taken(kind, headers, taken):
    """A key without a login: the page is open, so its Live tab's socket must work; other callers need the key."""
    from starlette.requests import Request
    from starlette.websockets import WebSocket

    from api.access import Access

    scope = {"type": kind, "path": "/v1/realtime", "query_string": b"", "app": None,
             "headers": [(b"host", b"127.0.0.1:7860"), *((k.encode(), v.encode()) for k, v in headers.items())]}
    connection = WebSocket(scope, None, None) if kind == "websocket" else Request(scope)
    refusal = asyncio.run(Access(api_keys=(KEY,)).refusal(connection))
    assert (refusal is None) == taken
    if not taken:
        assert refusal.status == 401
