"""Talking to /v1/realtime: from the end of the user's speech to the first audio of the reply, at 1 and N sessions.

    .venv/bin/python benchmarks/realtime_latency.py --sessions 1,2 --rounds 1        # tiny model, this CPU
    python3 benchmarks/realtime_latency.py --full-size --static-cache-tokens 4096 --batch-slots 8 --sessions 1,8

The app's realtime route (``api.app_kwargs``) is served by uvicorn on a free localhost port around one
TransformersBackend (``--batch-slots`` > 1: its batched engine), the full-size random-weight model with
``--full-size`` as in concurrent_speech.py. Each session is the ``openai`` SDK's realtime client: server VAD with a
``--silence-ms`` pause, a spoken question (espeak-ng, or ``--speech WAV``) sent in 20 ms appends at the pace of a
microphone, then silence at the same pace until the reply's first ``response.output_audio.delta``. All sessions of a
round start together. Per session, from the moment its last voiced sample was sent:

- pause: → ``input_audio_buffer.speech_stopped`` (the silence setting and the VAD's own lag);
- engine: the engine got the request → its first AudioChunk (the backend is wrapped to stamp both);
- total: → the first audio delta reached the client; transport and the app = total − pause − engine.

Prints a Markdown table (p50 and p90 over every session of every round) for BENCHMARKS.md. Greedy, 64 text tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import aclosing
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.base import Backend  # noqa: E402
from backends.events import AudioChunk  # noqa: E402

RATE = 24_000
CHUNK_S = 0.02
QUESTION = "What is the tallest mountain in the world, and how high is it?"


class Stamped(Backend):
    """Pass-through backend stamping, per request, when the engine got it and when it yielded its first audio."""

    def __init__(self, inner: Backend):
        self.inner, self.info, self.stamps = inner, inner.info, []

    @property
    def warming_up(self):
        return self.inner.warming_up

    async def stream(self, request):
        stamp = {"started": time.perf_counter(), "first_audio": None}
        self.stamps.append(stamp)
        async with aclosing(self.inner.stream(request)) as events:
            async for event in events:
                if isinstance(event, AudioChunk) and stamp["first_audio"] is None:
                    stamp["first_audio"] = time.perf_counter()
                yield event


def question(path: str | None) -> np.ndarray:
    """The spoken question at 24 kHz, mono float32, its leading and trailing silence cut."""
    import soundfile

    from media import resample

    if path is None:
        if shutil.which("espeak-ng") is None:
            raise SystemExit("no espeak-ng here: give a spoken question with --speech WAV")
        path = os.path.join(tempfile.mkdtemp(), "question.wav")
        subprocess.run(["espeak-ng", "-w", path, QUESTION], check=True)
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    samples = resample(samples.mean(axis=1), rate, RATE)
    voiced = np.flatnonzero(np.abs(samples) > 0.02)
    return samples[voiced[0]: voiced[-1] + 1]


def serve(backend: Backend) -> str:
    """The realtime route on a free port, in a thread; its ws:// base URL for the SDK (``.../v1``)."""
    import uvicorn
    from starlette.applications import Starlette

    import api

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=api.app_kwargs(backend)["routes"]), host="127.0.0.1",
                                           port=port, log_level="warning", ws_max_size=16 * 2**20))
    threading.Thread(target=server.run, daemon=True, name="uvicorn").start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1"


async def one_session(base_url: str, speech: np.ndarray, silence_ms: int, start: asyncio.Event) -> dict:
    import openai

    pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2")
    step = int(RATE * CHUNK_S)
    silence = base64.b64encode(np.zeros(step, "<i2").tobytes()).decode()
    marks: dict = {}
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    async with client.realtime.connect(model="qwen3-omni") as connection:
        await connection.session.update(session={"type": "realtime", "output_modalities": ["audio"],
                                                  "max_output_tokens": 64, "audio": {"input": {"turn_detection": {
                                                      "type": "server_vad", "silence_duration_ms": silence_ms}}}})

        async def listen() -> None:
            async for event in connection:
                now = time.perf_counter()
                if event.type == "input_audio_buffer.speech_stopped":
                    marks.setdefault("stopped", now)
                elif event.type == "response.output_audio.delta":
                    marks.setdefault("first_audio", now)
                elif event.type == "response.done":
                    marks["status"] = event.response.status
                    return
                elif event.type == "error":
                    marks.setdefault("errors", []).append(event.error.message)

        listening = asyncio.create_task(listen())
        await start.wait()
        began = time.perf_counter()
        pieces = range(0, len(pcm), step)
        for n, at in enumerate(pieces):  # paced like a microphone
            await connection.input_audio_buffer.append(audio=base64.b64encode(pcm[at:at + step].tobytes()).decode())
            await asyncio.sleep(max(0.0, began + (n + 1) * CHUNK_S - time.perf_counter()))
        marks["speech_end"] = time.perf_counter()
        n = len(pieces)
        while "first_audio" not in marks and not listening.done() and time.perf_counter() - marks["speech_end"] < 60:
            await connection.input_audio_buffer.append(audio=silence)
            n += 1
            await asyncio.sleep(max(0.0, began + n * CHUNK_S - time.perf_counter()))
        await asyncio.wait_for(listening, 120)
    return marks


async def round_of(base_url: str, speech: np.ndarray, silence_ms: int, sessions: int) -> list[dict]:
    start = asyncio.Event()
    tasks = [asyncio.create_task(one_session(base_url, speech, silence_ms, start)) for _ in range(sessions)]
    await asyncio.sleep(1.0)  # every session connected and set up
    start.set()
    return await asyncio.gather(*tasks)


def quantiles(values: list[float]) -> str:
    if not values:
        return "–"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return f"{statistics.median(ordered) * 1000:.0f} / {p90 * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--batch-slots", type=int, default=8)
    parser.add_argument("--static-cache-tokens", type=int, default=4096)
    parser.add_argument("--sessions", default="1,8", help="sessions talking at the same moment, per row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--silence-ms", type=int, default=400)
    parser.add_argument("--speech", default=None, help="a WAV of a spoken question (default: espeak-ng's)")
    args = parser.parse_args()
    from benchmarks.concurrent_speech import benchmark_backend

    speech = question(args.speech)
    inner = benchmark_backend(args.full_size, args.batch_slots, args.static_cache_tokens)
    started = time.perf_counter()
    inner.warm_up()
    print(f"warm-up {time.perf_counter() - started:.0f} s; {inner.info.device}; question {len(speech) / RATE:.1f} s; "
          f"silence {args.silence_ms} ms", flush=True)
    backend = Stamped(inner)
    base_url = serve(backend)
    asyncio.run(round_of(base_url, speech, args.silence_ms, 1))  # a first turn through every path
    print("| sessions | end of speech → first audio p50 / p90 (ms) | pause | engine | transport and app | "
          "no audio |\n|---|---|---|---|---|---|")
    for sessions in [int(n) for n in args.sessions.split(",")]:
        rows = []
        for _ in range(args.rounds):
            backend.stamps.clear()
            marks = asyncio.run(round_of(base_url, speech, args.silence_ms, sessions))
            engine = sorted(backend.stamps, key=lambda s: s["started"])
            for mark, stamp in zip(sorted(marks, key=lambda m: m.get("stopped", float("inf"))), engine):
                mark["engine"] = stamp
            rows += marks
        heard = [m for m in rows if "first_audio" in m and "stopped" in m and m.get("engine", {}).get("first_audio")]
        total = [m["first_audio"] - m["speech_end"] for m in heard]
        pause = [m["stopped"] - m["speech_end"] for m in heard]
        engine = [m["engine"]["first_audio"] - m["engine"]["started"] for m in heard]
        rest = [t - p - e for t, p, e in zip(total, pause, engine)]
        print(f"| {sessions} | {quantiles(total)} | {quantiles(pause)} | {quantiles(engine)} | {quantiles(rest)} | "
              f"{len(rows) - len(heard)} of {len(rows)} |", flush=True)


if __name__ == "__main__":
    main()
