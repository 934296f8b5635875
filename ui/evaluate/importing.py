"""Importing an export (results.zip or results.jsonl): the run it holds, to rate on or to finish."""

from __future__ import annotations

import json
import zipfile
from dataclasses import fields
from pathlib import Path

from ui.evaluate.results import Answer, EvalRow, EvalRun
from ui.evaluate.setup import Setup
from ui.evaluate.sheet import Prompt


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


def _answer(values: dict | None, folder: Path) -> Answer | None:
    if not values:
        return None
    answer = Answer(**{k: v for k, v in values.items() if k in {f.name for f in fields(Answer)} - {"error_message"}})
    if answer.audio:
        local = folder / Path(answer.audio).name
        answer.audio = str(local) if local.is_file() else None
    return answer
