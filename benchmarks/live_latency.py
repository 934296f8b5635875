"""Live tab: from the end of the user's speech to the first reply audio in the browser, and how it splits.

    .venv/bin/python benchmarks/live_latency.py [--runs 5]

Chromium (headless, fake devices) plays a spoken question into the Live tab's microphone once
per run; the page stamps when it got the microphone and when the reply player first has audio.
The app is wrapped to stamp when the turn was detected and when the backend yielded its
first audio chunk. All clocks are this machine's wall clock.

- vad (audio): how far past the end of speech the microphone audio had run when the detector ended
  the turn: the configured pause, silero-vad's own lag and the chunking (``live.MIC_CHUNK_S``).
- vad (delivery): the rest of end of speech (microphone opened + the speech's end in the WAV) →
  turn detected: the browser's recorder, and each chunk's trip to the server.
- round trip: turn detected → the backend is asked (the turn counter goes through the page and
  comes back as the reply event; the queue).
- model: the backend's request → its first audio chunk (prompt, thinker, talker, code2wav).
- transport: first audio chunk → the browser's player has audio (Gradio's encoder, HLS, the page).
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

from benchmarks.app_latency import Timed  # noqa: E402
from ui.live import tab as live  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
LEAD_IN_S = 1.0
MIC_START_STAMP = """
const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const stream = await getUserMedia(constraints);
  if (constraints && constraints.audio) window.micStarted = Date.now() / 1000;
  return stream;
};
"""
"""Stamps when the page gets the microphone: Chromium's fake device starts its file then."""


def question_wav(folder: Path) -> tuple[Path, float]:
    """A spoken question after 1 s of silence, then silence; returns the file and when the speech ends."""
    from tests import media_factory

    speech, rate = soundfile.read(media_factory.speech_wav(folder / "q.wav", "What is the weather like today?"))
    loud = np.flatnonzero(np.abs(speech) > 0.02)
    speech = speech[: loud[-1] + 1]
    path = folder / "user.wav"
    soundfile.write(path, np.concatenate([np.zeros(int(LEAD_IN_S * rate)), speech, np.zeros(20 * rate)]), rate)
    return path, LEAD_IN_S + len(speech) / rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compare", action="store_true",
                        help="also the app as it was (0.5 s microphone chunks, Gradio's stock streaming player), "
                             "alternating run by run")
    args = parser.parse_args()

    import gradio as gr
    from playwright.sync_api import sync_playwright

    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint
    from ui import build_demo, queue_settings
    from ui.reply_player import ReplyAudio

    detected: list[float] = []
    heard_until: list[float] = []  # how much microphone audio the detector had when it ended the turn
    original_hear = live.LiveSession.hear

    def stamped_hear(self, rate, data, silence_ms):
        before = self.turn_id
        original_hear(self, rate, data, silence_ms)
        if self.turn_id > before:
            detected.append(time.time())
            heard_until.append(self.detector.now_s)

    live.LiveSession.hear = stamped_hear
    backend = Timed(build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=3.0))
    first_audio: list[float] = []
    requested: list[float] = []
    inner_stream = backend.stream

    async def stamped_stream(request):
        requested.append(time.time())
        async for event in inner_stream(request):
            if backend.first_audio is not None and len(first_audio) < len(detected):
                first_audio.append(time.time() - (time.monotonic() - backend.first_audio))
            yield event

    backend.stream = stamped_stream
    # Each variant: (microphone chunk, the player's chunk encoder). The demo reads the chunk as it is built.
    variants = {"now": (live.MIC_CHUNK_S, ReplyAudio._encode_chunk)}
    if args.compare:
        variants["before"] = (0.5, gr.Audio._encode_chunk)
    wav, speech_end = question_wav(Path(tempfile.mkdtemp()))
    rows: dict[str, list] = {name: [] for name in variants}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=CHROMIUM_ARGS + [f"--use-file-for-fake-audio-capture={wav}%noloop"])
        for run in range(args.runs + 1):  # the first run of each variant warms up
            for name, (chunk_s, encode_chunk) in variants.items():
                # One app at a time (two Blocks served from one process get in each other's way).
                live.MIC_CHUNK_S, ReplyAudio._encode_chunk = chunk_s, encode_chunk
                demo = build_demo(backend)
                demo.queue(**queue_settings(backend.info)).launch(prevent_thread_lock=True, quiet=True)
                context = browser.new_context(permissions=["microphone"])
                page = context.new_page()
                page.add_init_script(MIC_START_STAMP)
                page.goto(demo.local_url)
                page.get_by_role("tab", name="Live").click()
                page.locator("#live-state").get_by_text("Press").wait_for(timeout=30_000)
                page.locator("#live-mic").get_by_role("button", name="Record").click()
                heard = page.wait_for_function(
                    "() => { const a = document.querySelector('#live-reply audio');"
                    " return a && a.duration > 0 ? Date.now() / 1000 : null; }", timeout=120_000).json_value()
                end_of_speech = page.evaluate("() => window.micStarted") + speech_end
                # The fake microphone starts its file when capture starts, so stream time = file time.
                vad_audio = heard_until[-1] - speech_end
                row = {"vad (audio)": vad_audio, "vad (delivery)": detected[-1] - end_of_speech - vad_audio,
                       "round trip": requested[-1] - detected[-1], "model": first_audio[-1] - requested[-1],
                       "transport": heard - first_audio[-1], "total": heard - end_of_speech}
                print(name, "warm-up" if run == 0 else f"run {run}", {k: round(v, 3) for k, v in row.items()},
                      flush=True)
                if run:
                    rows[name].append(row)
                context.close()
                demo.close()
        browser.close()
    pause_s = live.TurnSettings().silence_ms / 1000
    columns = list(next(iter(rows.values()))[0])
    print("\n| variant | " + " | ".join(columns) + " | app overhead |\n|" + "---|" * (len(columns) + 2))
    for name, variant_rows in rows.items():
        med = {k: statistics.median(r[k] for r in variant_rows) for k in columns}
        overhead = statistics.median(r["total"] - r["model"] - pause_s for r in variant_rows)
        print(f"| {name} | " + " | ".join(f"{med[k] * 1000:.0f} ms" for k in columns) + f" | {overhead * 1000:.0f} ms |")
    print(f"\nmedians of {args.runs} runs per variant; the pause that ends a turn: {pause_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
