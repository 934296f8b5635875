"""An evaluation run's rows, ratings and settings, and their exports (CSV, JSONL, a zip with the speech).

An export holds everything needed to judge and reproduce a row: the prompt, its media (names and SHA-256),
both answers with their timings, the rating and comment, each set-up's settings, and the model, backend and
app version that answered. Importing an export (the zip, or its JSONL) gives the run back, to go on rating.
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

from backends.request import ChatRequest, MediaPart, Sampling, TextPart, Turn
from media import kind_of
from messages import Message
from ui.evaluate.sheet import Prompt
from ui.hashing import file_hash

RATINGS_AB = ("A better", "B better", "tie", "both wrong")
RATINGS_A = ("good", "wrong")
CSV_COLUMNS = ["id", "prompt", "media", "media_sha256", "system_prompt", "reference", "answer_a", "answer_b",
               "rating", "comment", "a_first_token_s", "a_first_audio_s", "a_tokens_per_s", "a_finish_reason",
               "a_error", "b_first_token_s", "b_first_audio_s", "b_tokens_per_s", "b_finish_reason", "b_error", "setup_a", "setup_b",
               "model_a", "backend_a", "model_b", "backend_b", "app_version"]


@dataclass(frozen=True)
class Setup:
    """How one side answers: which engine ("app" or "compare") and the request's settings."""

    engine: str = "app"
    speaker: str | None = None
    system_prompt: str = ""
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    max_new_tokens: int = 1024
    seed: int | None = None
    speech: bool = True

    def request(self, prompt: Prompt, can_speak: bool) -> ChatRequest:
        parts = tuple(MediaPart(kind_of(path), path) for path in prompt.paths)
        if prompt.text:
            parts += (TextPart(prompt.text),)
        return ChatRequest(
            turns=(Turn("user", parts),), system_prompt=prompt.system_prompt or self.system_prompt,
            speaker=self.speaker or None, return_audio=self.speech and can_speak,
            sampling=Sampling(self.temperature, self.top_p, self.top_k, self.max_new_tokens, self.seed))



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
        record = {"id": p.id, "prompt": p.text, "media": list(p.media),
                  "media_sha256": [file_hash(path) for path in p.paths] if p.paths else [],
                  "system_prompt": p.system_prompt, "reference": p.reference, "problem": p.problem,
                  "rating": row.rating, "comment": row.comment,
                  "setup_a": asdict(run.setup_a), "setup_b": asdict(run.setup_b) if run.setup_b else None,
                  "app_version": version}
        for side, answer in (("a", row.a), ("b", row.b)):
            engine = run.engines.get(side.upper(), {})
            record[f"model_{side}"], record[f"backend_{side}"] = engine.get("model"), engine.get("backend")
            record[f"answer_{side}"] = _exported(answer) if answer else None
            if answer and answer.audio:
                record[f"answer_{side}"]["audio"] = f"audio/{audio_name(p.id, side)}"
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
                    out.write(answer.audio, f"audio/{audio_name(row.prompt.id, side)}")
    return [str(table), str(jsonl), str(archive)]


def _csv_row(record: dict) -> dict:
    row = {k: record.get(k) for k in CSV_COLUMNS}
    row["media"] = ";".join(record["media"])
    row["media_sha256"] = ";".join(h or "" for h in record["media_sha256"])
    for side in "ab":
        answer = record[f"answer_{side}"] or {}
        row[f"answer_{side}"] = answer.get("text", "")
        for key in ("first_token_s", "first_audio_s", "tokens_per_s", "finish_reason", "error"):
            row[f"{side}_{key}"] = answer.get(key)
        row[f"setup_{side}"] = json.dumps(record[f"setup_{side}"], ensure_ascii=False) if record[f"setup_{side}"] else ""
    return row


def audio_name(row_id: str, side: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in row_id)
    return f"{safe}-{side.upper()}.wav"


def import_run(path: str, folder: Path) -> EvalRun:
    """The run an export holds (a results.zip, with its speech, or a results.jsonl)."""
    folder.mkdir(parents=True, exist_ok=True)
    if Path(path).suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "results.jsonl" not in names:
                raise ValueError(f"{Path(path).name}: no results.jsonl inside; is it an Evaluate export?")
            lines = archive.read("results.jsonl").decode("utf-8").splitlines()
            for name in names:
                if name.startswith("audio/") and name.endswith(".wav") and "/" not in name[6:] and ".." not in name:
                    (folder / name[6:]).write_bytes(archive.read(name))
    else:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    try:
        records = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as err:
        raise ValueError(f"{Path(path).name}: not an Evaluate export ({err.msg})") from err
    if not records or not all(isinstance(r, dict) and "id" in r and "setup_a" in r for r in records):
        raise ValueError(f"{Path(path).name}: not an Evaluate export (each line needs id and setup_a)")
    first = records[0]
    run = EvalRun(setup_a=_setup(first["setup_a"]), setup_b=_setup(first["setup_b"]) if first.get("setup_b") else None,
                  folder=str(folder))
    for side in "ab":
        if first.get(f"model_{side}"):
            run.engines[side.upper()] = {"model": first[f"model_{side}"], "backend": first.get(f"backend_{side}")}
    for number, r in enumerate(records, start=1):
        prompt = Prompt(number, str(r["id"]), r.get("prompt", ""), tuple(r.get("media") or ()),
                        r.get("system_prompt", ""), r.get("reference", ""), problem=r.get("problem", ""))
        run.rows.append(EvalRow(prompt, _answer(r.get("answer_a"), folder), _answer(r.get("answer_b"), folder),
                                r.get("rating", "") or "", r.get("comment", "") or ""))
    return run


def _setup(values: dict) -> Setup:
    known = {f.name for f in fields(Setup)}
    return Setup(**{k: v for k, v in values.items() if k in known})


def _exported(answer: Answer) -> dict:
    return {f.name: getattr(answer, f.name) for f in fields(Answer) if f.name != "error_message"}


def _answer(values: dict | None, folder: Path) -> Answer | None:
    if not values:
        return None
    answer = Answer(**{k: v for k, v in values.items() if k in {f.name for f in fields(Answer)} - {"error_message"}})
    if answer.audio:
        local = folder / Path(answer.audio).name
        answer.audio = str(local) if local.is_file() else None
    return answer
