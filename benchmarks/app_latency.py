"""Time to first token through the app (gradio_client) vs a direct backend call, side by side.

    .venv/bin/python benchmarks/app_latency.py [--checkpoint tiny] [--runs 10]

Alternates the two paths on the same warm backend so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def direct_ttft(backend, request) -> float:
    from backends.events import TextDelta

    async def run():
        started = time.perf_counter()
        first = None
        async for event in backend.stream(request):
            if first is None and isinstance(event, TextDelta):
                first = time.perf_counter() - started
        return first

    return asyncio.run(run())


def app_ttft(client, text: str, max_tokens: int) -> float:
    started = time.perf_counter()
    job = client.submit({"text": text, "files": []}, speak=False, temperature=0, max_tokens=max_tokens,
                        api_name="/chat")
    first = None
    for conversation, *_ in job:
        if first is None and any(m["role"] == "assistant" for m in conversation):
            first = time.perf_counter() - started
    client.predict(api_name="/clear")
    return first


def main() -> None:
    from gradio_client import Client

    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint
    from backends.request import ChatRequest, Sampling, Turn
    from ui import build_demo, queue_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="tiny")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()

    text = "Describe a sunny day at the beach."
    with build_backend("transformers", resolve_checkpoint(args.checkpoint)) as backend:
        demo = build_demo(backend)
        demo.queue(**queue_settings(backend.info)).launch(prevent_thread_lock=True, quiet=True)
        client = Client(demo.local_url, verbose=False)
        request = ChatRequest(turns=(Turn.user(text),), return_audio=False,
                              sampling=Sampling(temperature=0, max_new_tokens=args.max_tokens))
        direct_ttft(backend, request), app_ttft(client, text, args.max_tokens)  # warm-up
        direct, app = [], []
        for _ in range(args.runs):
            direct.append(direct_ttft(backend, request))
            app.append(app_ttft(client, text, args.max_tokens))
        demo.close()
    d, a = statistics.median(direct), statistics.median(app)
    print(f"checkpoint={args.checkpoint} runs={args.runs}")
    print(f"direct backend TTFT median {d * 1000:.1f} ms (min {min(direct) * 1000:.1f})")
    print(f"through the app TTFT median {a * 1000:.1f} ms (min {min(app) * 1000:.1f})")
    print(f"app adds {(a - d) * 1000:.1f} ms (ratio {a / d:.2f}x)")


if __name__ == "__main__":
    main()
