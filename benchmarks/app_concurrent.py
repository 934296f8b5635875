"""Many people using the app at once: what the app adds over the batched engine, per person, to first audio.

    .venv/bin/python benchmarks/app_concurrent.py --users 4 --rounds 1      # tiny checkpoint on this CPU: a dry run
    python3 benchmarks/app_concurrent.py --full-size --static-cache-tokens 4096 --batch-slots 8 --users 8   # GPU

The real app (``ui.build_demo``, ``ui.queue_settings`` and app.py's launch settings) is served on a free localhost
port around one TransformersBackend with its batched engine on (``--batch-slots``); with ``--full-size`` the
full-size random-weight model, as in concurrent_speech.py. The backend is wrapped so each request stamps when the
engine got it and when it yielded its first AudioChunk (requests told apart by their seed: one per session; greedy,
so the seed changes nothing). In another process (as browsers would be), new gradio_client sessions send
concurrent_speech.py's prompt (10 s of audio, a 448×448 image and a question; speaker ethan, greedy, 64 text tokens,
speech on) at the same moment, and each stamps when its first streamed audio reached it: the first update whose HLS
playlist lists a segment, read over a kept-alive connection as in app_latency.py. Per session, from its own submit:
engine first audio, client first audio and the difference, the app's share (Gradio's AAC encoding, our handler,
server-sent events, the client; the upload and queue come before the engine's stamp and are in both). Then p50/p90
of each, with when the request reached the engine (upload, queue, handler), sessions without audio (a random
talker may stop before speaking) and errors: 1 user alone, then ``--users`` at once, ``--rounds`` times, after one
warm-up of 2. The engine's column, set beside concurrent_speech.py's first audio, shows what serving the app costs
the engine itself (one process: the app's threads and event loop share the engine's interpreter). Prints a Markdown
table for BENCHMARKS.md. Needs gradio, gradio_client (requirements.txt) and the ffmpeg program.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from contextlib import aclosing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from backends.base import Backend  # noqa: E402
from backends.events import AudioChunk, Error  # noqa: E402

PROMPT = "What do you hear, and what is in the picture?"


def require_app() -> None:
    """Stop before the model loads if the app can't be served here, or can't stream speech."""
    try:
        import gradio  # noqa: F401
        import gradio_client  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"app_concurrent.py serves the app and drives it through gradio_client, so it needs gradio "
                         f"and gradio_client and their dependencies (pip install -r requirements.txt; on a machine "
                         f"without an index, carry their wheels): {err}") from None
    if shutil.which("ffmpeg") is None:
        raise SystemExit("app_concurrent.py needs the ffmpeg program: Gradio's streamed audio (AAC) runs one per reply")


class Stamped(Backend):
    """Pass-through backend; per request (keyed by its seed): when the engine got it, its first audio, errors."""

    def __init__(self, inner: Backend):
        self.inner, self.info = inner, inner.info
        self.stamps: dict[int | None, dict] = {}

    @property
    def warming_up(self):
        return self.inner.warming_up

    async def stream(self, request):
        stamp = {"started": time.monotonic(), "first_audio": None, "errors": []}
        self.stamps[request.sampling.seed] = stamp
        async with aclosing(self.inner.stream(request)) as events:  # a closed reply stops the engine's too
            async for event in events:
                if isinstance(event, AudioChunk) and stamp["first_audio"] is None:
                    stamp["first_audio"] = time.monotonic()
                elif isinstance(event, Error):
                    stamp["errors"].append(f"{event.stage}: {event.message}")
                yield event


def client_process(url: str, audio: str, image: str, max_tokens: int, jobs, results) -> None:
    """For each job (a list of seeds): one new session per seed, all sending at once; puts what each saw."""
    import httpx
    from gradio_client import Client, handle_file

    while (seeds := jobs.get()) is not None:
        clients = [Client(url, verbose=False, download_files=False) for _ in seeds]
        barrier = threading.Barrier(len(seeds))
        reports: list[dict] = [{} for _ in seeds]

        def session(i: int) -> None:
            http = httpx.Client(base_url=url)  # the player's own connection, kept alive
            message = {"text": PROMPT, "files": [handle_file(audio), handle_file(image)]}
            barrier.wait()
            started, first_audio, error = time.monotonic(), None, None
            try:
                job = clients[i].submit(message, speaker="ethan", speak=True, temperature=0, max_tokens=max_tokens,
                                        seed=seeds[i], api_name="/chat")
                for outputs in job:
                    player = outputs[-1]
                    if first_audio is None and isinstance(player, dict) and player.get("url"):
                        if "#EXTINF" in http.get(player["url"]).text:
                            first_audio = time.monotonic()
                job.result()  # raises what the app raised
            except Exception as err:  # noqa: BLE001 (reported, not hidden)
                error = f"{type(err).__name__}: {err}"
            reports[i] = {"seed": seeds[i], "started": started, "first_audio": first_audio, "error": error}
            http.close()

        threads = [threading.Thread(target=session, args=(i,)) for i in range(len(seeds))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for client in clients:
            client.close()
        results.put(reports)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--batch-slots", type=int, default=8)
    parser.add_argument("--static-cache-tokens", type=int, default=8192, help="each slot's (and the one-row caches')")
    parser.add_argument("--users", type=int, default=8, help="sessions sending at the same moment")
    parser.add_argument("--rounds", type=int, default=3, help="times 1 user alone, then --users at once")
    args = parser.parse_args()
    require_app()
    import logging

    import app
    from benchmarks.concurrent_speech import benchmark_backend, percentile
    from benchmarks.speech_latency import TEXT_TOKENS, make_prompt_files
    from ui import build_demo, queue_settings

    logging.basicConfig(format="  %(message)s")

    started = time.perf_counter()
    inner = benchmark_backend(args.full_size, args.batch_slots, args.static_cache_tokens)
    print(f"model ready in {time.perf_counter() - started:.1f} s on {inner.info.device}", flush=True)
    warm = inner.warm_up()
    print("warm-up:", {k: round(v, 1) for k, v in (warm or {}).items()}, flush=True)
    backend = Stamped(inner)
    demo = build_demo(backend)
    settings = app.launch_settings(app.parse_args(["--server-name", "127.0.0.1"]))
    demo.queue(**queue_settings(backend.info)).launch(**{**settings, "server_port": None, "quiet": True,
                                                          "prevent_thread_lock": True})
    print(f"app at {demo.local_url}; queue {queue_settings(backend.info)}", flush=True)
    audio, image = make_prompt_files(Path(tempfile.mkdtemp()))
    context = multiprocessing.get_context("spawn")
    jobs, results = context.Queue(), context.Queue()
    clients = context.Process(target=client_process, args=(demo.local_url, str(audio), str(image), TEXT_TOKENS,
                                                           jobs, results), daemon=True)
    clients.start()
    seeds = itertools.count(1)

    def scenario(users: int) -> list[dict]:
        """Each session's seconds from its submit: reached the engine, engine / client first audio; its errors."""
        jobs.put([next(seeds) for _ in range(users)])
        while True:
            try:
                reports = results.get(timeout=5)
                break
            except queue.Empty:
                if not clients.is_alive():
                    raise SystemExit(f"the gradio_client process ended (exit code {clients.exitcode})") from None
        sessions = []
        for seen in reports:
            stamp = backend.stamps.get(seen["seed"], {"started": None, "first_audio": None, "errors": []})

            def since(moment, submit=seen["started"]):
                return None if moment is None else moment - submit

            errors = stamp["errors"] + ([seen["error"]] if seen["error"] else [])
            sessions.append({"to_engine": since(stamp["started"]), "engine": since(stamp["first_audio"]),
                             "client": since(seen["first_audio"]), "errors": errors})
        for session in sessions:
            both = session["engine"] is not None and session["client"] is not None
            session["adds"] = session["client"] - session["engine"] if both else None
        return sessions

    def seconds(value) -> str:
        return "—" if value is None else f"{value:.3f} s"

    def p50_p90(values, unit: float = 1.0, fmt: str = "{:.3f}") -> str:
        values = [v * unit for v in values if v is not None]
        if not values:
            return "n/a"
        return f"{fmt.format(percentile(values, 0.5))} / {fmt.format(percentile(values, 0.9))}"

    def row(label: str, sessions: list[dict]) -> str:
        silent = sum(s["engine"] is None or s["client"] is None for s in sessions)
        return (f"| {label} | {len(sessions)} | {p50_p90([s['to_engine'] for s in sessions])} s | "
                f"{p50_p90([s['engine'] for s in sessions])} s | "
                f"{p50_p90([s['client'] for s in sessions])} s | "
                f"{p50_p90([s['adds'] for s in sessions], 1000, '{:.0f}')} ms | {silent} | "
                f"{sum(len(s['errors']) for s in sessions)} |")

    scenario(2)  # warm-up through the app: the handler, the encoders, the batched path's first replays
    lines, everyone = [], {1: [], args.users: []}
    for round_ in range(1, args.rounds + 1):
        for users in everyone:
            sessions = scenario(users)
            print(f"round {round_}, {users} at once:", flush=True)
            for number, s in enumerate(sessions, 1):
                adds = "—" if s["adds"] is None else f"{s['adds'] * 1000:.0f} ms"
                print(f"  session {number}: reached the engine {seconds(s['to_engine'])}, engine first audio "
                      f"{seconds(s['engine'])}, client first audio {seconds(s['client'])}, the app adds {adds}"
                      + "".join(f"\n    error: {e}" for e in s["errors"]), flush=True)
            lines.append(row(f"{users} at once, round {round_}", sessions))
            print(lines[-1], flush=True)
            everyone[users] += sessions
    lines += [row(f"{users} at once, all rounds", sessions) for users, sessions in everyone.items()]
    jobs.put(None)
    clients.join(timeout=60)
    demo.close()
    inner.close()

    model = "full-size random Qwen3-Omni-30B-A3B" if args.full_size else "tiny checkpoint"
    print(f"\n{model} on {inner.info.device}, batch_slots={args.batch_slots}, static_cache_tokens="
          f"{args.static_cache_tokens}; from each session's submit; \"the app adds\" = client - engine first audio")
    print("| users | sessions | reached the engine p50 / p90 | engine first audio p50 / p90 | client first audio p50 / "
          "p90 | the app adds p50 / p90 | sessions without audio | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
