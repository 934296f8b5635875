"""An evaluation run's rows, ratings and settings, and their exports (CSV, JSONL, a zip with the speech).

An export holds everything needed to judge and reproduce a row: the prompt, its media (names and SHA-256),
both answers with their timings, the rating and comment, each set-up's settings, and the model, backend and
app version that answered. Importing an export (the zip, or its JSONL) gives the run back, to go on rating
(``ui.evaluate.importing``).
"""

from __future__ import annotations

import csv
import functools
import json
import shutil
import subprocess
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from messages import Message
from ui.evaluate.setup import Setup
from ui.evaluate.sheet import Prompt
from ui.hashing import file_hash

RATINGS_AB = ("A better", "B better", "tie", "both wrong")
RATINGS_A = ("good", "wrong")
CSV_COLUMNS = ["id", "prompt", "media", "media_sha256", "system_prompt", "reference", "answer_a", "answer_b",
               "rating", "comment", "a_first_token_s", "a_first_audio_s", "a_tokens_per_s", "a_finish_reason",
               "a_error", "b_first_token_s", "b_first_audio_s", "b_tokens_per_s", "b_finish_reason", "b_error", "setup_a", "setup_b",
               "model_a", "backend_a", "model_b", "backend_b", "app_version", "media_unreadable", "row"]


@dataclass
class Answer:
    text: str = ""
    audio: str | None = None
    """A WAV of the spoken answer, in the run's folder (or None: text only)."""
    first_token_s: float | None = None
    first_audio_s: float | None = None
    tokens_per_s: float | None = None
    error: str = ""
    finish_reason: str = ""
    """"stop", "length" (the max-tokens limit cut it), "error"…"""
    error_message: Message | None = field(default=None, compare=False)
    """``error`` as a message, to show in the user's language (not exported: an import shows ``error``)."""


@dataclass
class EvalRow:
    prompt: Prompt
    a: Answer | None = None
    b: Answer | None = None
    rating: str = ""
    comment: str = ""

    def done(self, two_sides: bool) -> bool:
        return bool(self.prompt.problem) or (self.a is not None and (self.b is not None or not two_sides))


@dataclass
class EvalRun:
    """One session's run (kept in ``gr.State``: plain data, deep-copyable)."""

    rows: list[EvalRow] = field(default_factory=list)
    setup_a: Setup = field(default_factory=Setup)
    setup_b: Setup | None = None
    engines: dict[str, dict] = field(default_factory=dict)
    """"A"/"B" → {"model":…, "backend":…} of the engine that answered that side."""
    folder: str | None = None
    """The answers' speech files; removed with the session."""
    notes: list[Message] = field(default_factory=list)
    """What the user should know about the run as a whole (an import's speech left out…), shown with its status."""

    @property
    def two_sides(self) -> bool:
        return self.setup_b is not None

    def pending(self) -> list[EvalRow]:
        return [row for row in self.rows if not row.done(self.two_sides)]

    def close(self) -> None:
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


@functools.cache  # the commit doesn't change while the app runs; every export asks
def app_version() -> str:
    """The app's git commit (a Space and a clone have one), else "unknown"."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parents[2],
                              capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export_records(run: EvalRun) -> list[dict]:
    """One JSON-able record per row: what CSV and JSONL both hold (the CSV flattens the nested values)."""
    version = app_version()
    records = []
    for row in run.rows:
        p = row.prompt
        hashes = [file_hash(path) for path in p.paths]
        record = {"id": p.id, "row": p.row, "prompt": p.text, "media": list(p.media), "media_sha256": hashes,
                  "media_unreadable": [f"{name} ({_unreadable(path)})" for name, path, sha in
                                       zip(p.media, p.paths, hashes) if sha is None],
                  "system_prompt": p.system_prompt, "reference": p.reference, "problem": p.problem,
                  "rating": row.rating, "comment": row.comment,
                  "setup_a": asdict(run.setup_a), "setup_b": asdict(run.setup_b) if run.setup_b else None,
                  "app_version": version}
        for side, answer in (("a", row.a), ("b", row.b)):
            engine = run.engines.get(side.upper(), {})
            record[f"model_{side}"], record[f"backend_{side}"] = engine.get("model"), engine.get("backend")
            record[f"answer_{side}"] = _exported(answer) if answer else None
            if answer and answer.audio:
                record[f"answer_{side}"]["audio"] = f"audio/{audio_name(p, side)}"
        records.append(record)
    return records


def write_exports(run: EvalRun, folder: Path) -> list[str]:
    """results.csv, results.jsonl and results.zip (both, plus every answer's speech) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    records = export_records(run)
    jsonl = folder / "results.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    table = folder / "results.csv"
    with table.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in records)
    archive = folder / "results.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.write(table, "results.csv")
        out.write(jsonl, "results.jsonl")
        for row in run.rows:
            for side, answer in (("a", row.a), ("b", row.b)):
                if answer and answer.audio and Path(answer.audio).is_file():
                    out.write(answer.audio, f"audio/{audio_name(row.prompt, side)}")
    return [str(table), str(jsonl), str(archive)]


def _csv_row(record: dict) -> dict:
    row = {k: record.get(k) for k in CSV_COLUMNS}
    row["media"] = ";".join(record["media"])
    row["media_sha256"] = ";".join(h or "" for h in record["media_sha256"])
    row["media_unreadable"] = ";".join(record["media_unreadable"])
    for side in "ab":
        answer = record[f"answer_{side}"] or {}
        row[f"answer_{side}"] = answer.get("text", "")
        for key in ("first_token_s", "first_audio_s", "tokens_per_s", "finish_reason", "error"):
            row[f"{side}_{key}"] = answer.get(key)
        row[f"setup_{side}"] = json.dumps(record[f"setup_{side}"], ensure_ascii=False) if record[f"setup_{side}"] else ""
    return row


def audio_name(prompt: Prompt, side: str) -> str:
    """The file of a row's spoken answer: its row number (unique in a run; ids such as ``q 1`` and ``q?1`` would
    share a name) and its id, readable and short enough for any file system."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in prompt.id[:40])
    return f"{prompt.row:04d}-{safe}-{side.upper()}.wav"


def _unreadable(path: str) -> str:
    """Why a medium of the run can't be hashed now (it was removed, or can't be opened)."""
    try:
        with open(path, "rb"):
            return "unreadable"
    except OSError as err:
        return f"can't be read: {err.__class__.__name__}"


def _exported(answer: Answer) -> dict:
    return {f.name: getattr(answer, f.name) for f in fields(Answer) if f.name != "error_message"}
