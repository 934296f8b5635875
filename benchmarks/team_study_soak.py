"""Team studies under load: many raters voting through the API for a while, people chatting meanwhile.

    python benchmarks/team_study_soak.py                        # tiny model, 20 raters, 60 s
    python benchmarks/team_study_soak.py --raters 40 --seconds 300

The app runs in this process (the tiny model unless -c names another checkpoint) with a fresh data folder; a
study of ``--prompts`` prompts and three set-ups is made first. The raters run in a process of their own (as
their browsers would be on their own machines), each asking for a pair and voting on it as fast as the app
answers; a chatter sends a short chat turn every ``--chat-every`` seconds. At the end: votes per second, each
rater's pair-and-vote round trip (p50, p90, max), chat turns' time to the whole reply (p50, p90, max), and the
checks the test makes in a few seconds (every vote stored once, no rater given a pair twice). Prints a Markdown
table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATERS = """
import json, random, sys, threading, time
from gradio_client import Client

url, study, seconds, count = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
clients = {f"rater {k:03d}": Client(url, verbose=False) for k in range(count)}
rounds = {name: [] for name in clients}
print("ready", flush=True)
sys.stdin.readline()
stop = time.time() + seconds


def rate(name):
    client = clients[name]
    while time.time() < stop:
        started = time.time()
        pair = json.loads(client.predict(study, name, api_name="/mcp_study_next_pair")[0])
        if pair["pair_id"] is None:
            return
        client.predict(pair["pair_id"], random.choice(["A", "B", "tie", "both_bad"]), name, "",
                       api_name="/mcp_study_vote")
        rounds[name].append((pair["pair_id"], time.time() - started))


threads = [threading.Thread(target=rate, args=(name,)) for name in clients]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(rounds), flush=True)
"""


def percentiles(values: list[float]) -> str:
    if not values:
        return "—"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(ordered):.2f} / {p90:.2f} / {ordered[-1]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--checkpoint", default="tiny")
    parser.add_argument("--raters", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--chat-every", type=float, default=5.0)
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint
    from ui import build_demo, queue_settings
    from ui.evaluate.team import Creators

    work = Path(tempfile.mkdtemp(prefix="team-soak-"))
    sheet = work / "prompts.csv"
    sheet.write_text("id,prompt\n" + "".join(f"q{k},Question number {k}?\n" for k in range(args.prompts)))
    setups = [{"label": f"setup {k}", "temperature": 0.7, "seed": k, "max_new_tokens": 8, "speech": k == 0}
              for k in range(3)]
    with build_backend("transformers", resolve_checkpoint(args.checkpoint), max_speech_seconds=2.0) as backend:
        demo = build_demo(backend, data_dir=str(work / "data"), creators=Creators(anyone=True))  # on 127.0.0.1
        demo.queue(**queue_settings(backend.info)).launch(prevent_thread_lock=True, server_name="127.0.0.1",
                                                          quiet=True)
        client = Client(demo.local_url, verbose=False)
        started = time.monotonic()
        study, _ = client.predict([handle_file(str(sheet))], json.dumps(setups), "soak", api_name="/mcp_study_create")
        while json.loads(client.predict(api_name="/mcp_study_list"))[0]["answers"] < 3 * args.prompts:
            time.sleep(1)
        answering_s = time.monotonic() - started
        raters = subprocess.Popen([sys.executable, "-c", RATERS, demo.local_url, study, str(args.seconds),
                                   str(args.raters)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert raters.stdout.readline().strip() == "ready"
        raters.stdin.write("go\n")
        raters.stdin.flush()
        chats, chatter = [], Client(demo.local_url, verbose=False)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            asked = time.monotonic()
            chatter.predict({"text": "Hello", "files": []}, temperature=0, max_tokens=8, api_name="/chat")
            chats.append(time.monotonic() - asked)
            time.sleep(max(0.0, args.chat_every - chats[-1]))
        rounds = json.loads(raters.stdout.readline())
        raters.wait()
        (export,) = [p for p in client.predict(study, api_name="/mcp_study_export") if p.endswith("votes.jsonl")]
        log = [json.loads(line) for line in Path(export).read_text().splitlines()]
        demo.close()

    sent = sorted(pair for times in rounds.values() for pair, _ in times)
    cells = [(v["rater"], v["prompt_id"], *sorted((v["setup_a"], v["setup_b"]))) for v in log]
    checks = "yes" if sorted(v["pair_id"] for v in log) == sent and len(set(cells)) == len(cells) else "NO"
    print(f"| raters | seconds | votes | votes/s | pair + vote, s (p50 / p90 / max) | chat turns | chat reply, s "
          f"(p50 / p90 / max) | each vote once, no pair twice | answering {3 * args.prompts} answers first |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.raters} | {args.seconds:.0f} | {len(sent)} | {len(sent) / args.seconds:.1f} | "
          f"{percentiles([s for times in rounds.values() for _, s in times])} | {len(chats)} | "
          f"{percentiles(chats)} | {checks} | {answering_s:.0f} s |")


if __name__ == "__main__":
    main()
