"""What the app adds on top of the backend: first text and first audio, backend vs gradio_client.

    .venv/bin/python benchmarks/app_latency.py [--checkpoint tiny] [--runs 10] [--compare-player]

One warm backend is wrapped so every request records when the backend yielded its first
TextDelta and first AudioChunk; a gradio_client on the same machine records when the same
request's first assistant text and first streamed audio reached it (its playlist read over a
kept-alive connection, as a browser's player does). The difference is the app's share (queue,
our handler, Gradio's audio encoding, server-sent events, the client). ``--compare-player``
alternates with Gradio's stock streaming player.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from backends.base import Backend  # noqa: E402
from backends.events import AudioChunk, TextDelta  # noqa: E402


class Timed(Backend):
    """Pass-through backend that timestamps each stream's first text and first audio."""

    def __init__(self, inner: Backend):
        self.inner, self.info = inner, inner.info
        self.first_text: float | None = None
        self.first_audio: float | None = None

    async def stream(self, request):
        self.first_text = self.first_audio = None
        async for event in self.inner.stream(request):
            now = time.monotonic()
            if isinstance(event, TextDelta) and self.first_text is None:
                self.first_text = now
            if isinstance(event, AudioChunk) and self.first_audio is None:
                self.first_audio = now
            yield event


def client_process(url: str, runs: int, max_tokens: int, speak: bool, results) -> None:
    """A separate process, as a browser would be: times each turn's first text and first audio."""
    import httpx
    from gradio_client import Client

    # Like a browser's player: the update names the playlist, fetched over one kept-alive connection
    # (gradio_client's own download opens a new connection and a temp folder per update: ~65 ms here).
    client = Client(url, verbose=False, download_files=False)
    http = httpx.Client(base_url=url)
    for _ in range(runs + 1):  # the first turn warms up
        started = time.monotonic()
        job = client.submit({"text": "Describe a sunny day at the beach.", "files": []}, temperature=0,
                            max_tokens=max_tokens, speak=speak, api_name="/chat")
        first_text = first_audio = None
        for conversation, _message, _status, _lock, audio in job:
            now = time.monotonic()
            if first_text is None and any(m["role"] == "assistant" for m in conversation):
                first_text = now
            # The streamed audio is an HLS playlist; the first update whose playlist lists a segment
            # is when a browser's player can start.
            if first_audio is None and isinstance(audio, dict) and audio.get("url"):
                if "#EXTINF" in http.get(audio["url"]).text:
                    first_audio = time.monotonic()
        client.predict(api_name="/clear")
        results.put((started, first_text, first_audio))


def main() -> None:
    import gradio as gr

    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint
    from ui import build_demo, queue_settings
    from ui.reply_player import ReplyAudio

    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="tiny")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--no-speech", action="store_true", help="text only: the talker's CPU share out of the way")
    parser.add_argument("--compile", action="store_true", help="compiled decode steps (as on a GPU), warmed up first")
    parser.add_argument("--compare-player", action="store_true",
                        help="also Gradio's stock streaming player (encoder started per reply), in alternating "
                             "rounds of runs/2 turns")
    args = parser.parse_args()

    inner = build_backend("transformers", resolve_checkpoint(args.checkpoint), max_speech_seconds=3.0,
                          compile="on" if args.compile else "auto")
    inner.warm_up()
    backend = Timed(inner)
    demo = build_demo(backend)
    demo.queue(**queue_settings(backend.info)).launch(prevent_thread_lock=True, quiet=True)
    ours = ReplyAudio._encode_chunk
    players = {"started encoders": ours}
    if args.compare_player:
        players["stock gr.Audio"] = gr.Audio._encode_chunk
    rounds = [(name, args.runs // 2) for name in players] * 2 if args.compare_player else [(*players, args.runs)]
    rows: dict[str, list] = {name: [] for name, _ in rounds}
    context = multiprocessing.get_context("spawn")
    for name, runs in rounds:
        ReplyAudio._encode_chunk = players[name]
        results = context.Queue()
        client = context.Process(target=client_process, args=(demo.local_url, runs, args.max_tokens,
                                                                not args.no_speech, results))
        client.start()
        for turn in range(runs + 1):
            started, client_text, client_audio = results.get(timeout=120)
            spoke = client_audio is not None and backend.first_audio is not None
            if turn and (spoke or args.no_speech):  # the backend's stamps of this turn are still in place
                rows[name].append((backend.first_text - started, client_text - started,
                                   backend.first_audio - started if spoke else None,
                                   client_audio - started if spoke else None))
        client.join()
    demo.close()
    inner.close()

    def ms(values) -> str:
        return f"{statistics.median(values) * 1000:.0f} ms"

    print(f"checkpoint={args.checkpoint} (medians, from submit; turns whose random talker stopped before "
          "speaking are left out)")
    print("| player | turns | | backend | gradio_client | the app adds |")
    print("|---|---|---|---|---|---|")
    for name, player_rows in rows.items():
        backend_text, client_text, backend_audio, client_audio = zip(*player_rows)
        print(f"| {name} | {len(player_rows)} | first text | {ms(backend_text)} | {ms(client_text)} | "
              f"{ms([c - b for b, c in zip(backend_text, client_text)])} |")
        if not args.no_speech:
            print(f"| {name} | {len(player_rows)} | first audio | {ms(backend_audio)} | {ms(client_audio)} | "
                  f"{ms([c - b for b, c in zip(backend_audio, client_audio)])} |")


if __name__ == "__main__":
    main()
