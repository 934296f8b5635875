"""The Live tab in Chromium (Debian's, driven by Playwright): its page talks to the app's ``/v1/realtime`` socket.

A fake microphone plays a spoken WAV (espeak-ng) and a fake webcam its test pattern. The page keeps counts of what
it got and played (``window.qwenLive.stats``), which these tests read; the worklets' own logic is tested apart, in
the page's JavaScript engine without an audio device, where every sample can be compared.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

import api
from backends.base import Backend
from backends.events import OUTPUT_SAMPLE_RATE, AudioChunk, Done, TextDelta
from media import resample
from tests import media_factory
from tests.test_app import launch

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
WORKLETS = (Path(__file__).resolve().parents[1] / "ui" / "live" / "worklets.js").read_text(encoding="utf-8")
REALTIME = (Path(__file__).resolve().parents[1] / "ui" / "live" / "realtime.js").read_text(encoding="utf-8")
GAP_S = 3.0
"""Between the two questions: the first reply is playing when the second question starts."""


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def two_questions(tmp_path_factory) -> Path:
    """What the fake microphone hears: a question, a pause, a second question, then silence."""
    folder = tmp_path_factory.mktemp("live-mic")
    first, rate = soundfile.read(media_factory.speech_wav(folder / "q1.wav", "What is the weather like today?"))
    second, _ = soundfile.read(media_factory.speech_wav(folder / "q2.wav", "Tell me a joke instead."))
    path = folder / "user.wav"
    soundfile.write(path, np.concatenate([np.zeros(rate), first, np.zeros(int(GAP_S * rate)), second,
                                          np.zeros(20 * rate)]), rate)
    return path


@pytest.fixture(scope="module")
def media_browser(playwright, two_questions):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS + [
        f"--use-file-for-fake-audio-capture={two_questions}%noloop"])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


def js_page(browser):
    """A page on a secure origin with nothing in it, to run the page's scripts in."""
    page = browser.new_page()
    page.route("http://localhost/", lambda route: route.fulfill(body="<html></html>", content_type="text/html"))
    page.goto("http://localhost/")
    return page


# -- the worklets and the socket's address, in the page's JavaScript engine ----------------------------------------

RUN_WORKLET = """([source, rate, name]) => {
  // The worklet's class, with the audio thread's globals stood in for: its port records what it posts.
  class AudioWorkletProcessor { constructor() { this.port = { sent: [], postMessage(m) { this.sent.push(m); } }; } }
  const registered = {};
  new Function("AudioWorkletProcessor", "registerProcessor", "sampleRate", source)(
    AudioWorkletProcessor, (n, cls) => (registered[n] = cls), rate);
  window.Processor = registered[name];
}"""

PLAYER_SCENARIO = """() => {
  const p = new Processor();
  const tell = (data) => p.port.onmessage({ data });
  const render = (blocks) => { const out = []; for (let i = 0; i < blocks; i++) { const b = new Float32Array(128);
    p.process([], [[b]]); out.push(...b); } return out; };
  const ramp = (n, from) => Float32Array.from({ length: n }, (_, i) => ((from + i) % 1000) / 1000 + 0.001);
  const pushed = [ramp(333, 0), ramp(5000, 333), ramp(700, 5333)];
  for (const samples of pushed.slice(0, 2)) tell({ type: "push", id: "a", samples });
  const first = render(30);  // 3840 samples: the ring still holds some
  tell({ type: "push", id: "a", samples: pushed[2] });
  const second = render(40); // runs dry before the end is known: an underrun
  tell({ type: "end", id: "a" });
  const afterEnd = p.port.sent.slice();
  tell({ type: "push", id: "b", samples: ramp(2000, 0) });
  const third = render(5);   // 640 of b played
  tell({ type: "flush" });
  const fourth = render(3);
  return { played: [...first, ...second], expected: pushed.flatMap((s) => [...s]), afterEnd, third,
           fourth, reports: p.port.sent };
}"""


def test_the_player_worklet_plays_every_sample_in_order_and_a_flush_silences_it_at_once(browser):
    page = js_page(browser)
    try:
        page.evaluate(RUN_WORKLET, [WORKLETS, OUTPUT_SAMPLE_RATE, "live-player"])
        got = page.evaluate(PLAYER_SCENARIO)
    finally:
        page.close()
    expected = np.array(got["expected"], np.float32)
    played = np.array(got["played"], np.float32)
    assert np.array_equal(played[: len(expected)], expected), "every pushed sample, in order, none twice"
    assert not played[len(expected):].any()
    kinds = [(r["type"], r["id"]) for r in got["reports"]]
    assert kinds[:3] == [("started", "a"), ("underrun", "a"), ("drained", "a")]
    drained = got["reports"][2]
    assert drained["received"] == drained["played"] == len(expected) and drained["underruns"] == 1
    assert np.array_equal(np.array(got["third"], np.float32), expected[:640]), "the next item plays at once"
    flushed = got["reports"][-1]
    assert (flushed["type"], flushed["id"], flushed["played"], flushed["received"]) == ("flushed", "b", 640, 2000)
    assert not any(got["fourth"]), "after a flush the player is silent at once"


MIC_SCENARIO = """([rate, seconds]) => {
  const frameSamples = 512;
  const p = new Processor({ processorOptions: { targetRate: 16000, frameSamples } });
  const n = Math.round(rate * seconds);
  const tone = Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin(2 * Math.PI * 440 * i / rate));
  for (let i = 0; i < n; i += 128) p.process([[tone.subarray(i, i + 128)]], []);
  return p.port.sent.map((buffer) => Array.from(new Int16Array(buffer)));
}"""


@pytest.mark.parametrize("rate", [48_000, 44_100, 8_000])
def test_the_microphone_worklet_sends_32_ms_frames_at_16_khz_from_any_device_rate(browser, rate):
    page = js_page(browser)
    try:
        page.evaluate(RUN_WORKLET, [WORKLETS, rate, "live-mic"])
        frames = page.evaluate(MIC_SCENARIO, [rate, 1.0])
    finally:
        page.close()
    assert {len(f) for f in frames} == {512}
    got = np.concatenate(frames).astype(np.float32) / 32767
    assert abs(len(frames) - 16_000 // 512) <= 1  # a second in, a second out
    spectrum = np.abs(np.fft.rfft(got * np.hanning(len(got))))
    hz = np.fft.rfftfreq(len(got), 1 / 16_000)
    assert abs(hz[spectrum.argmax()] - 440) < 2, "the same tone, at the same pitch"
    near = np.abs(hz - 440) < 20
    assert (spectrum[~near] ** 2).sum() < 0.01 * (spectrum ** 2).sum(), "and nothing else (no aliases)"
    assert 0.45 < np.sqrt(2 * np.mean(got ** 2)) < 0.51, "at the same level"


def test_the_socket_is_found_beside_the_page_behind_any_root_path(browser):
    page = js_page(browser)
    try:
        page.evaluate(f"() => {{ {REALTIME}\n window.urlOf = liveRealtimeUrl; }}")
        cases = [("http://127.0.0.1:7860", "http://127.0.0.1:7860/?__theme=dark"),
                 ("http://127.0.0.1:7860/omni", "http://127.0.0.1:7860/omni/"),  # Gradio's root_path
                 ("https://proxy.example/apps/omni/", "https://proxy.example/apps/omni/"),
                 ("http://proxy.example/omni", "https://proxy.example/omni/"),  # a proxy that lost the https
                 (None, "https://user-omni.hf.space/apps/live/?x=1")]  # no Gradio config: the page's folder
        got = [page.evaluate("([root, page]) => urlOf(root, new URL(page))", list(case)) for case in cases]
    finally:
        page.close()
    assert got == ["ws://127.0.0.1:7860/v1/realtime", "ws://127.0.0.1:7860/omni/v1/realtime",
                   "wss://proxy.example/apps/omni/v1/realtime", "wss://proxy.example/omni/v1/realtime",
                   "wss://user-omni.hf.space/apps/live/v1/realtime"]


# -- a conversation through the socket ---------------------------------------------------------------------------


class TalksOn(Backend):
    """The app's engine, whose first reply goes on talking at real time (its speech so far, over and over) until it
    is cancelled, as a long answer from a GPU would: the second question surely lands in it, however slow this
    machine is, and the page gets a steady stream to play. Later replies are the engine's own."""

    def __init__(self, inner: Backend):
        self.inner, self.info, self.requests = inner, inner.info, []

    async def stream(self, request):
        self.requests.append(request)
        if len(self.requests) > 1:
            async for event in self.inner.stream(request):
                yield event
            return
        said, text = [], asyncio.Queue()

        async def engine():
            async for event in self.inner.stream(request):
                if isinstance(event, AudioChunk):
                    said.append(resample(event.samples, event.sample_rate, OUTPUT_SAMPLE_RATE))
                elif isinstance(event, TextDelta):
                    text.put_nowait(event)

        task = asyncio.create_task(engine())
        try:
            while not said:
                await asyncio.sleep(0.02)
            start, sent, step = time.monotonic(), 0, OUTPUT_SAMPLE_RATE // 10
            while sent < 30 * OUTPUT_SAMPLE_RATE:
                while not text.empty():
                    yield text.get_nowait()
                speech = np.concatenate(said)
                piece = np.resize(np.roll(speech, -(sent % len(speech))), step)
                await asyncio.sleep(max(0.0, sent / OUTPUT_SAMPLE_RATE - 0.3 - (time.monotonic() - start)))
                yield AudioChunk(piece, OUTPUT_SAMPLE_RATE)
                sent += step
            yield Done("stop")
        finally:
            task.cancel()  # cancelled (barge-in): the engine stops too


STATS = """() => {
  const s = window.qwenLive.stats;
  return { session: s.session, outputRate: s.outputRate, images: s.images, errors: s.errors, turns: s.turns,
           truncates: s.truncates, responses: s.responses.map((r) => ({ ...r })) };
}"""


def test_a_spoken_question_is_answered_aloud_and_a_question_spoken_over_the_reply_interrupts_it(
        media_browser, instruct_backend, output_dir):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    backend = TalksOn(instruct_backend)
    demo = launch(backend, app_kwargs=api.app_kwargs(backend))
    context = media_browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["microphone", "camera"])
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(demo.local_url)
        page.get_by_role("tab", name="Live").click()
        expect(page.locator("#live-state")).to_contain_text("Start talking", timeout=30_000)
        # The Settings reach the server as session.update: a shorter pause, and a prompt.
        page.locator("#live-settings").get_by_text("Settings").click()
        # Each Setting's change sends all three as they are then: the prompt's must not go with the pause's old value.
        # Typed right as the accordion opens, the number sometimes went back to 600 in the box itself (same client,
        # no change sent: the slider was still settling), so it is typed again then, as a person would.
        pause = page.locator("#live-pause input[type=number]")
        for attempt in range(3):
            pause.fill("500")
            pause.press("Enter")
            try:
                page.wait_for_function("() => window.qwenLive.settings.silence_ms === 500", timeout=3_000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
        page.locator("#live-prompt textarea").fill("Answer briefly.")
        page.locator("#live .live-camera input").check()
        page.locator("#live .live-start").click()
        expect(page.locator("#live-state")).to_contain_text("Listening", timeout=15_000)

        page.wait_for_function("() => window.qwenLive.stats.responses.length == 2 && window.qwenLive.stats"
                               ".responses[1].drained", timeout=90_000)
        # each spoken turn is transcribed once its reply has begun: its words replace the bubble's placeholder
        page.wait_for_function("() => window.qwenLive.stats.turns.length == 2 && window.qwenLive.stats.turns"
                               ".every((t) => t.transcription === 'completed')", timeout=30_000)
        time.sleep(0.3)  # the last reports of the worklets
        page.locator("#live-settings").get_by_text("Settings").click()  # closed again for the picture
        page.screenshot(path=str(output_dir / "live-turn.png"), full_page=True)
        stats = page.evaluate(STATS)
        transcript = page.locator("#live-transcript")
        user_said = transcript.locator(".live-user").all_inner_texts()
        replies = transcript.locator(".live-assistant").all_inner_texts()
        pictures = transcript.locator(".live-user img").count()
        page.evaluate("() => { document.documentElement.lang = 'zh'; }")  # the page's texts follow; their words not
        page.wait_for_function("() => document.querySelector('.live-note').textContent !== '✋ Interrupted.'")
        user_said_zh = transcript.locator(".live-user").all_inner_texts()
        # A failed transcription leaves the placeholder; words for a turn the page doesn't show make no bubble.
        page.evaluate("""() => { const turn = window.qwenLive.stats.turns[0], kind = "conversation.item"
          + ".input_audio_transcription.";
          window.qwenLive.handle({ type: kind + "failed", item_id: turn.item_id, content_index: 0, error: {} });
          window.qwenLive.handle({ type: kind + "delta", item_id: "item_elsewhere", content_index: 0, delta: "x" });
        }""")
        failed_said = transcript.locator(".live-user").all_inner_texts()
    finally:
        context.close()
        demo.close()

    session = stats["session"]
    assert session["instructions"] == "Answer briefly." and session["audio"]["output"]["voice"] == "ethan"
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert session["audio"]["input"]["format"]["rate"] == 16_000
    assert session["audio"]["input"]["transcription"]["model"] == "qwen3-omni"
    assert session["audio"]["output"]["format"]["rate"] == stats["outputRate"] == 24_000
    first, second = stats["responses"]
    # The first reply played without a gap until the user spoke over it; then it stopped at once.
    assert first["status"] == "cancelled" and first["reason"] == "turn_detected"
    assert first["received"] > 0 and first["received"] == first["workletReceived"], "no PCM lost on the way"
    assert first["underruns"] == 0, "fed steadily, the reply played without a gap"
    assert first["startedAt"] < stats["turns"][1]["startedAt"], "the reply was playing when the user spoke"
    assert 0 < first["played"] < first["received"] and first["flushedAt"] - first["interruptedAt"] < 0.3
    assert stats["truncates"] == [{"item_id": first["itemId"], "played": first["played"],
                                   "audio_end_ms": first["played"] * 1000 // 24_000}]
    assert not stats["errors"], "the server took the truncate"
    # The second question was answered, aloud, and all of its reply was played.
    assert second["status"] in ("completed", "incomplete") and second["received"] > 0
    assert second["played"] == second["received"] == second["workletReceived"]
    assert len(stats["turns"]) == 2 and stats["images"] == 2 and pictures == 2
    # The user's bubbles hold their words (the tiny model's are random), the webcam's picture above them.
    words = [turn["transcript"] for turn in stats["turns"]]
    assert all(w.strip() for w in words) and [said.strip() for said in user_said] == [w.strip() for w in words]
    assert user_said_zh == user_said and "🎤" not in "".join(user_said)
    assert [said.strip() for said in failed_said] == ["🎤（语音）", user_said[1].strip()]
    assert len(replies) == 2 and "✋ Interrupted." in replies[0]
    # What the model was asked: the webcam's picture and the spoken turn, the interrupted reply, the picture and turn.
    # (Each spoken turn's transcription is a request of its own, without speech, after its reply's.)
    replies_asked = [r for r in backend.requests if r.return_audio]
    transcribed = [r for r in backend.requests if not r.return_audio]
    assert len(replies_asked) == 2 and len(transcribed) == 2
    assert backend.requests.index(transcribed[0]) > 0 and backend.requests.index(transcribed[1]) > \
        backend.requests.index(replies_asked[1])
    asked = replies_asked[1].turns
    assert [t.role for t in asked] == ["user", "user", "assistant", "user", "user"]
    assert [p.kind for t in asked if t.role == "user" for p in t.media] == ["image", "audio", "image", "audio"]
    assert not errors


def test_a_refused_microphone_and_an_unreachable_socket_are_explained(media_browser, instruct_backend, output_dir):
    from playwright.sync_api import expect

    demo = launch(instruct_backend)  # without the API's routes: no /v1/realtime
    context = media_browser.new_context(viewport={"width": 1280, "height": 700}, permissions=["microphone"])
    page = context.new_page()
    try:
        page.goto(demo.local_url)
        page.get_by_role("tab", name="Live").click()
        expect(page.locator("#live-state")).to_contain_text("Start talking", timeout=30_000)
        page.evaluate("""() => { window.realGetUserMedia = navigator.mediaDevices.getUserMedia;
          navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("denied", "NotAllowedError")); }""")
        page.locator("#live .live-start").click()
        expect(page.locator("#live-error")).to_contain_text("The browser refused the microphone", timeout=15_000)
        expect(page.locator("#live-state")).to_contain_text("Start talking")  # back where it began
        page.evaluate("() => { navigator.mediaDevices.getUserMedia = window.realGetUserMedia; }")
        page.locator("#live .live-start").click()
        expect(page.locator("#live-error")).to_contain_text("Can't connect to the app's realtime socket",
                                                            timeout=15_000)
        expect(page.locator("#live-error")).to_contain_text("/v1/realtime")
        page.screenshot(path=str(output_dir / "live-no-socket.png"))
        assert page.evaluate("() => window.qwenLive.mic === null && window.qwenLive.ws === null"), "all let go"
    finally:
        context.close()
        demo.close()


def test_behind_a_login_the_logged_in_page_talks_starts_over_and_a_stranger_is_told(media_browser, instruct_backend):
    from playwright.sync_api import expect

    demo = launch(instruct_backend, auth=[("ada", "lovelace")],
                  app_kwargs=api.app_kwargs(instruct_backend, login_required=True))
    context = media_browser.new_context(permissions=["microphone"])
    page = context.new_page()
    try:
        page.goto(demo.local_url)
        page.get_by_label("username").fill("ada")
        page.get_by_label("password").fill("lovelace")
        page.get_by_role("button", name="Login").click()
        page.get_by_role("tab", name="Live").click()
        page.locator("#live .live-start").click()
        expect(page.locator("#live-state")).to_contain_text("Listening", timeout=15_000)  # the session is open
        assert page.evaluate("() => window.qwenLive.stats.session !== null")
        page.evaluate("() => { window.firstSocket = window.qwenLive.ws; }")
        page.locator("#live .live-new").click()  # a new conversation is a new session, on a new socket
        page.wait_for_function("() => window.qwenLive.ws !== window.firstSocket && !window.qwenLive.connecting"
                               " && window.firstSocket.readyState === WebSocket.CLOSED", timeout=15_000)
        expect(page.locator("#live-state")).to_contain_text("Listening")
        page.locator("#live .live-start").click()  # Stop
        page.context.clear_cookies()  # logged out: the socket refuses, and the page says so
        page.locator("#live .live-start").click()
        expect(page.locator("#live-error")).to_contain_text("Can't connect", timeout=15_000)
    finally:
        context.close()
        demo.close()
