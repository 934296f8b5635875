"""200 turns through the app: does the server's memory or its reply files grow?

    .venv/bin/python benchmarks/soak.py [--turns 200] [--per-conversation 5] [--no-speech] [--trace]

The app (tiny checkpoint, speech on) runs in this process; a gradio_client in another process
chats (so this process's memory is the server's alone):
conversations of 5 turns, each ended with Clear (which deletes its reply audio). Every 20 turns
the process's resident memory (also after glibc's malloc_trim, which tells fragmentation from
live objects) and the number of reply files on disk are printed.
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def trimmed_rss_mb() -> float:
    """RSS after glibc hands its free pages back (malloc_trim): what live objects hold, not fragmentation."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reply_files() -> int:
    """Reply audio files in the folders this process's sessions made (see ui.scratch)."""
    from ui import scratch

    return len(glob.glob(os.path.join(scratch.process_folder(), "omni-replies-*", "*.wav")))


def chat(url: str, turns: int, per_conversation: int, progress, speak: bool = True) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=tempfile.mkdtemp())
    for turn in range(turns):
        client.predict({"text": f"Turn {turn}: say something.", "files": []}, temperature=0.7, max_tokens=12,
                       speak=speak, api_name="/chat")
        if (turn + 1) % per_conversation == 0:
            client.predict(api_name="/clear")
        progress.put(turn + 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--per-conversation", type=int, default=5)
    parser.add_argument("--no-speech", action="store_true", help="text only (tells speech's share of any growth)")
    parser.add_argument("--trace", action="store_true",
                        help="trace Python allocations (tracemalloc) and print what grew after the first 20 turns")
    args = parser.parse_args()

    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint
    from ui import build_demo, queue_settings

    backend = build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=1.0)
    demo = build_demo(backend)
    demo.queue(**queue_settings(backend.info)).launch(prevent_thread_lock=True, quiet=True)
    spawn = multiprocessing.get_context("spawn")
    progress = spawn.Queue()
    client = spawn.Process(target=chat, args=(demo.local_url, args.turns, args.per_conversation, progress,
                                              not args.no_speech))
    started = time.monotonic()
    client.start()
    rows, first_heap = [], None
    if args.trace:
        tracemalloc.start(8)
    while (done := progress.get(timeout=120)) < args.turns:
        if done % 20 == 0:
            rows.append((done, rss_mb(), trimmed_rss_mb(), reply_files(), time.monotonic() - started))
            print(f"turn {done}: RSS {rows[-1][1]:.0f} MB ({rows[-1][2]:.0f} MB trimmed), reply files on disk "
                  f"{rows[-1][3]}", flush=True)
            if args.trace and first_heap is None:
                first_heap = tracemalloc.take_snapshot()
    client.join()
    rows.append((done, rss_mb(), trimmed_rss_mb(), reply_files(), time.monotonic() - started))
    if first_heap is not None:
        grown = tracemalloc.take_snapshot().compare_to(first_heap, "traceback")
        print(f"\nPython heap: {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MB traced; what grew most since "
              f"turn {rows[0][0]}:")
        for stat in grown[:8]:
            print(f"{stat.size_diff / 1024:+.0f} KiB in {stat.count_diff:+d} blocks, allocated at:")
            for line in stat.traceback.format()[-12:]:
                print("   ", line)
    demo.close()
    base = rows[0]
    print("\n| turns | RSS | RSS after malloc_trim | reply files on disk | elapsed |\n|---|---|---|---|---|")
    for turns, rss, trimmed, files, elapsed in rows:
        print(f"| {turns} | {rss:.0f} MB | {trimmed:.0f} MB | {files} | {elapsed:.0f} s |")
    print(f"\nRSS after turn {base[0]} → {rows[-1][0]}: {base[1]:.0f} → {rows[-1][1]:.0f} MB "
          f"({rows[-1][1] - base[1]:+.0f} MB); after malloc_trim {base[2]:.0f} → {rows[-1][2]:.0f} MB "
          f"({rows[-1][2] - base[2]:+.0f} MB)")


if __name__ == "__main__":
    main()
