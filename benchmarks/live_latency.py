"""Live tab: from the end of the user's speech to the first reply audio playing in the browser, and how it splits.

    .venv/bin/python benchmarks/live_latency.py [--runs 5] [--pause-ms 400]

Chromium (headless, fake devices) plays a spoken question into the Live tab's microphone once per run (a fresh page,
so a fresh realtime session). The page talks to the app's /v1/realtime socket, as it does for users; it stamps when
it got the microphone and when its player worklet first played reply audio (``window.qwenLive.stats``). The server
is wrapped to stamp when its VAD ended the turn, when the engine was asked and when it yielded its first audio.
All clocks are this machine's wall clock (browser and server run here).

- detect: end of speech → the server's VAD ends the turn: the pause, silero-vad's lag (32 ms windows) and the
  microphone's trip (32 ms worklet frames over the socket).
- ask: the turn ended → the engine is asked (the turn written to a file, the request built).
- model: the engine asked → its first audio chunk (prompt, thinker, talker, code2wav).
- play: the first audio chunk → the page's worklet plays it (base64 PCM over the socket, decoding, the worklet).
- app overhead: total minus the pause and the model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from backends.base import Backend  # noqa: E402
from backends.events import AudioChunk  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
LEAD_IN_S = 1.0
COLUMNS = ("detect", "ask", "model", "play", "total")


class Stamped(Backend):
    """The engine, stamped: when each request came and when its first audio chunk did (wall clock)."""

    def __init__(self, inner: Backend):
        self.inner, self.info = inner, inner.info
        self.asked: list[float] = []
        self.first_audio: list[float] = []

    async def stream(self, request):
        if not request.return_audio:  # the page's transcription of the turn, asked after the reply's first audio
            async for event in self.inner.stream(request):
                yield event
            return
        self.asked.append(time.time())
        first = True
        async for event in self.inner.stream(request):
            if first and isinstance(event, AudioChunk):
                first = False
                self.first_audio.append(time.time())
            yield event


def stamp_turn_ends() -> list[float]:
    """When the server's VAD ends each turn (wall clock): ``InputAudio.append`` returned a turn to commit."""
    from api.realtime.listening import InputAudio

    ends: list[float] = []
    append = InputAudio.append

    def stamped(self, samples):
        heard = append(self, samples)
        if any(h.turn is not None for h in heard):
            ends.append(time.time())
        return heard

    InputAudio.append = stamped
    return ends


def question_wav(folder: Path) -> tuple[Path, float]:
    """A spoken question after 1 s of silence, then silence; returns the file and when the speech ends."""
    from tests import media_factory

    speech, rate = soundfile.read(media_factory.speech_wav(folder / "q.wav", "What is the weather like today?"))
    loud = np.flatnonzero(np.abs(speech) > 0.02)
    speech = speech[: loud[-1] + 1]
    path = folder / "user.wav"
    soundfile.write(path, np.concatenate([np.zeros(int(LEAD_IN_S * rate)), speech, np.zeros(20 * rate)]), rate)
    return path, LEAD_IN_S + len(speech) / rate


def one_run(browser, url: str, pause_ms: int) -> dict:
    context = browser.new_context(permissions=["microphone"])
    try:
        page = context.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Live").click()
        page.locator("#live-state").get_by_text("Start talking").wait_for(timeout=30_000)
        page.evaluate("(ms) => window.qwenLive.configure({ silence_ms: ms })", pause_ms)
        page.locator("#live .live-start").click()
        page.wait_for_function("() => (window.qwenLive.stats.responses[0] || {}).startedAt", timeout=120_000)
        return page.evaluate("() => { const s = window.qwenLive.stats; return { mic: s.micStartedAt,"
                             " played: s.responses[0].startedAt, latency: window.qwenLive.player.context.baseLatency"
                             " + (window.qwenLive.player.context.outputLatency || 0) }; }")
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pause-ms", type=int, default=400, help="the pause that ends a turn (the tab's Settings)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    import api
    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint
    from ui import build_demo, queue_settings

    turn_ends = stamp_turn_ends()
    backend = Stamped(build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=3.0))
    demo = build_demo(backend)
    demo.queue(**queue_settings(backend.info)).launch(prevent_thread_lock=True, quiet=True,
                                                      app_kwargs=api.app_kwargs(backend))
    wav, speech_end = question_wav(Path(tempfile.mkdtemp()))
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=CHROMIUM_ARGS + [f"--use-file-for-fake-audio-capture={wav}%noloop"])
        for run in range(args.runs + 1):  # the first run warms up
            page = one_run(browser, demo.local_url, args.pause_ms)
            # The fake microphone starts its file when the page gets the microphone.
            end_of_speech = page["mic"] + speech_end
            row = {"detect": turn_ends[-1] - end_of_speech, "ask": backend.asked[-1] - turn_ends[-1],
                   "model": backend.first_audio[-1] - backend.asked[-1],
                   "play": page["played"] - backend.first_audio[-1], "total": page["played"] - end_of_speech}
            print("warm-up" if run == 0 else f"run {run}", {k: round(v, 3) for k, v in row.items()},
                  f"(audio output latency reported by the browser: {page['latency'] * 1000:.0f} ms)", flush=True)
            if run:
                rows.append(row)
        browser.close()
    demo.close()
    pause_s = args.pause_ms / 1000
    print("\n| " + " | ".join(COLUMNS) + " | app overhead |\n|" + "---|" * (len(COLUMNS) + 1))
    med = {k: statistics.median(r[k] for r in rows) for k in COLUMNS}
    overhead = [r["total"] - r["model"] - pause_s for r in rows]
    print("| " + " | ".join(f"{med[k] * 1000:.0f} ms" for k in COLUMNS) +
          f" | {statistics.median(overhead) * 1000:.0f} ms |")
    print(f"\nmedians of {args.runs} runs; the pause that ends a turn: {args.pause_ms} ms; overhead per run: "
          + ", ".join(f"{o * 1000:.0f}" for o in overhead) + " ms; totals: "
          + ", ".join(f"{r['total'] * 1000:.0f}" for r in rows) + " ms")


if __name__ == "__main__":
    main()
