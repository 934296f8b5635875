"""Importing an export (results.zip or results.jsonl): the run it holds, to rate on or to finish.

An export comes from anyone, so it is read as the sheet is: within bounds, as it streams (``RESULTS_MAX_BYTES``
of rows, ``RECORD_MAX_BYTES`` a row, ``MAX_ROWS`` rows; the zip through ``media.archives``, each answer's
speech capped at ``SPEECH_MAX_BYTES``), and every value it gives is checked: a set-up against the tab's own
bounds (``ui.evaluate.setup``), the rest for its kind. What isn't right is refused with the file, the row and
the field named; a refused import leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import soundfile

from backends.events import OUTPUT_SAMPLE_RATE
from media import DEFAULT_LIMITS, MediaError
from media.archives import Archive, ArchiveLimits, remove_folder, safe_member
from messages import Message
from ui.evaluate.results import RATINGS_A, RATINGS_AB, Answer, EvalRow, EvalRun, audio_name
from ui.evaluate.setup import SetupError, check_setup, shown
from ui.evaluate.sheet import MAX_FIELD_CHARS, MAX_ROWS, BadRow, Lines, Prompt, SheetError, mark_repeated_ids

RESULTS_MAX_BYTES = 128 * 10**6
"""results.jsonl: ``MAX_ROWS`` rows of 64 kB on average (a sheet's row at the sheet's own average bound, 32 kB,
and two answers of 16 kB); a run's export is usually a few MB."""
RECORD_MAX_BYTES = 4 * 10**6
"""One row: its sheet values (``MAX_FIELD_CHARS`` each) and two answers of up to 8,192 tokens."""
SPEECH_MAX_BYTES = 44 + 2 * int(DEFAULT_LIMITS.max_audio_s * OUTPUT_SAMPLE_RATE)
"""One answer's speech, a 16-bit WAV as the runner writes it, as long as the longest audio the app takes in
(600 s: an answer's speech stops at 300 s unless ``--max-speech-seconds`` says otherwise)."""
IMPORT_ARCHIVES = ArchiveLimits(max_members=2 * MAX_ROWS + 2)
"""results.csv, results.jsonl and two answers' speech a row."""
_NUMBERS = ("first_token_s", "first_audio_s", "tokens_per_s")
_TEXTS = ("text", "error", "finish_reason")


class ResultsError(ValueError):
    """An export that can't be imported; ``msg`` says why, naming the file (and the row and field)."""

    def __init__(self, msg: Message):
        super().__init__(str(msg))
        self.msg = msg


def import_run(path: str, folder: Path) -> EvalRun:
    """The run an export holds (a results.zip, with its speech, or a results.jsonl), its files in ``folder``;
    ``ResultsError`` if it can't be imported, and then ``folder`` is gone."""
    name = Path(path).name
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if Path(path).suffix.lower() != ".zip":
            if os.path.getsize(path) > RESULTS_MAX_BYTES:
                raise ResultsError(Message("import.too_big", {"file": name, "limit": RESULTS_MAX_BYTES // 10**6}))
            run, _speech = _read(Path(path), name, folder)
            return run
        with Archive(path, IMPORT_ARCHIVES) as archive:
            if "results.jsonl" not in archive.names():
                raise ResultsError(Message("import.not_export", {"file": name, "reason": Message("import.no_jsonl")}))
            jsonl = archive.extract("results.jsonl", folder / "results.jsonl", RESULTS_MAX_BYTES)
            try:
                run, speech = _read(jsonl, name, folder)
            finally:
                jsonl.unlink(missing_ok=True)
            _unpack_speech(archive, speech, run)
            return run
    except MediaError as err:
        remove_folder(folder)
        raise ResultsError(err.msg) from err
    except OSError as err:
        remove_folder(folder)
        raise ResultsError(Message("import.not_export", {"file": name, "reason": err.__class__.__name__})) from err
    except BaseException:
        remove_folder(folder)
        raise


class _Record:
    """One line of results.jsonl, read field by field: a value of the wrong kind is refused by name."""

    def __init__(self, values: dict, file: str, row: int):
        self.values, self.file, self.row = values, file, row

    def refuse(self, problem: Message) -> ResultsError:
        return ResultsError(Message("import.bad_value", {"file": self.file, "row": self.row, "problem": problem}))

    def wrong(self, field: str, value: Any, expected: str) -> ResultsError:
        return self.refuse(Message("setup.wrong_type", {"field": field, "value": shown(value),
                                                        "expected": Message(expected)}))

    def text(self, key: str, values: dict | None = None, field: str | None = None, limit: int | None = None) -> str:
        value = (self.values if values is None else values).get(key)
        if value is not None and not isinstance(value, str):
            raise self.wrong(field or key, value, "setup.type.text")
        if limit is not None and value is not None and len(value) > limit:
            raise self.refuse(Message("setup.too_long", {"field": field or key, "value": "", "limit": limit}))
        return value or ""

    def setup(self, key: str):
        try:
            return check_setup(self.values[key], key)
        except SetupError as err:
            raise self.refuse(err.msg) from err

    def answer(self, side: str) -> tuple[Answer | None, str | None]:
        """The side's answer, and the member its speech is in (None: no speech)."""
        key = f"answer_{side}"
        values = self.values.get(key)
        if values is None:
            return None, None
        if not isinstance(values, dict):
            raise self.wrong(key, values, "setup.type.object")
        answer = Answer(**{k: self.text(k, values, f"{key}.{k}") for k in _TEXTS})
        for k in _NUMBERS:
            number = values.get(k)
            if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
                raise self.wrong(f"{key}.{k}", number, "setup.type.number")
            setattr(answer, k, number)
        member = values.get("audio")
        if member is not None and not (isinstance(member, str) and safe_member(member)
                                       and member.startswith("audio/") and member.endswith(".wav")):
            raise self.refuse(Message("import.bad_audio", {"field": f"{key}.audio", "value": shown(member)}))
        return answer, member

    def prompt(self) -> Prompt:
        row_id = self.values.get("id")
        if isinstance(row_id, bool) or not isinstance(row_id, (str, int, float)):
            raise self.wrong("id", row_id, "sheet.type.text")
        media = self.values.get("media") or []
        if not isinstance(media, list) or not all(isinstance(name, str) for name in media):
            raise self.wrong("media", media, "sheet.type.files")
        number = self.values.get("row")  # the sheet's (older exports don't say: the line's)
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= 10**9:
            number = self.row
        return Prompt(number, str(row_id).strip()[:MAX_FIELD_CHARS] or str(number),
                      self.text("prompt", limit=MAX_FIELD_CHARS), tuple(media),
                      self.text("system_prompt", limit=MAX_FIELD_CHARS),
                      self.text("reference", limit=MAX_FIELD_CHARS), problem=self.text("problem"))


def _records(path: Path, file: str):
    """Each line of results.jsonl as a ``_Record``, within the bounds."""
    with open(path, "rb") as source:
        lines = Lines(source, file, RECORD_MAX_BYTES, RESULTS_MAX_BYTES, "import.too_big")
        row = 0
        while True:
            lines.next_row()
            try:
                line = next(lines)
            except StopIteration:
                return
            except BadRow as bad:
                raise ResultsError(Message("import.bad_value", {"file": file, "row": row + 1, "problem": bad.msg}))
            if not line.strip():
                continue
            row += 1
            if row > MAX_ROWS:
                raise ResultsError(Message("import.too_many_rows", {"file": file, "limit": MAX_ROWS}))
            try:
                values = json.loads(line)
            except (ValueError, RecursionError):
                values = None
            if not isinstance(values, dict) or "id" not in values or "setup_a" not in values:
                raise ResultsError(Message("import.not_export", {"file": file, "reason": Message(
                    "import.not_a_row", {"row": row})}))
            yield _Record(values, file, row)


def _read(path: Path, file: str, folder: Path) -> tuple[EvalRun, list[tuple[Answer, str, EvalRow, str]]]:
    """The run, and each answer that has speech: (answer, the member its speech is in, its row, side)."""
    run, speech = EvalRun(folder=str(folder)), []
    try:
        for record in _records(path, file):
            if record.row == 1:
                run.setup_a = record.setup("setup_a")
                run.setup_b = record.setup("setup_b") if record.values.get("setup_b") is not None else None
                for side in "ab":
                    model, backend = record.text(f"model_{side}"), record.text(f"backend_{side}")
                    if model:
                        run.engines[side.upper()] = {"model": model, "backend": backend or None}
            ratings = RATINGS_AB if run.two_sides else RATINGS_A
            rating = record.text("rating")
            if rating and rating not in ratings:
                raise record.refuse(Message("setup.not_a_choice", {"field": "rating", "value": shown(rating),
                                                                   "choices": ", ".join(ratings)}))
            row = EvalRow(record.prompt(), rating=rating, comment=record.text("comment"))
            for side in "ab":
                answer, member = record.answer(side)
                setattr(row, side, answer)
                if member is not None:
                    speech.append((answer, member, row, side))
            run.rows.append(row)
    except SheetError as err:  # past RESULTS_MAX_BYTES
        raise ResultsError(err.msg) from err
    if not run.rows:
        raise ResultsError(Message("import.not_export", {"file": file, "reason": Message("import.no_rows")}))
    prompts = [row.prompt for row in run.rows]
    if len({p.row for p in prompts}) < len(prompts):  # the sheet's row numbers name the speech files: unique
        prompts = [replace(p, row=line) for line, p in enumerate(prompts, start=1)]
    mark_repeated_ids(prompts)
    for row, prompt in zip(run.rows, prompts):
        row.prompt = prompt
    return run, speech


def _unpack_speech(archive: Archive, speech: list, run: EvalRun) -> None:
    """Each answer's speech into the run's folder, under the name the runner would give it. A member that two
    answers name (or that the zip holds twice) goes to neither: which one it belongs to can't be told."""
    in_zip = Counter(info.filename for info in archive.members())
    named = Counter(member for _answer, member, _row, _side in speech)
    shared, unreadable = set(), []
    for answer, member, row, side in speech:
        if in_zip[member] != 1 or named[member] != 1:
            if in_zip[member]:
                shared.add(member)
            continue
        target = archive.extract(member, Path(run.folder) / audio_name(row.prompt, side), SPEECH_MAX_BYTES)
        try:
            soundfile.info(str(target))
        except (RuntimeError, soundfile.LibsndfileError):
            target.unlink()
            unreadable.append(member)
            continue
        answer.audio = str(target)
    if shared:
        run.notes.append(Message("import.shared_speech", {"files": _listed(sorted(shared))}))
    if unreadable:
        run.notes.append(Message("import.bad_speech", {"files": _listed(unreadable)}))


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
