"""A prompt set: a CSV or JSONL sheet of prompts and the media files they use.

Columns (CSV header or JSONL keys): ``id``, ``prompt`` (or ``text``), ``media`` (file names separated by ``;``
in a CSV, a list in JSONL), and optionally ``system_prompt`` and ``reference``. Media come as uploaded files or
inside a zip; a sheet names them by file name (or by their path inside the zip). A row with a problem (no
prompt, a file that isn't there, a line that isn't JSON, a value of the wrong kind or too long) is named by its
row number and kept, marked, so the other rows still run.

A sheet is read as it streams, within bounds: at most ``MAX_ROWS`` rows (reading stops at the next one),
``MAX_ROW_BYTES`` a row, ``MAX_FIELD_CHARS`` a value and ``MAX_SHEET_BYTES`` in all, so what it holds in
memory is bounded whatever the file is.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Iterator

from media import DEFAULT_LIMITS, MediaError, kind_of
from media.archives import Archive, ArchiveLimits, base_name, remove_folder
from messages import Message, joined

SHEET_SUFFIXES = (".csv", ".jsonl")
SHEET_ARCHIVES = ArchiveLimits(max_unzipped_bytes=4 * 10**9)
MAX_ROWS = 2000
MAX_FIELD_CHARS = 100_000
"""A prompt, system prompt, reference or id: a long document to ask about fits (about 25k tokens of English)."""
MAX_ROW_BYTES = 1_000_000
"""One JSONL line, or one CSV row with every line it spans."""
MAX_SHEET_BYTES = 64 * 10**6
"""The whole sheet: ``MAX_ROWS`` rows of 32 kB on average (a prompt set is usually a few hundred kB)."""
_SKIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class Prompt:
    """One row of the sheet; ``media`` holds the names the sheet gives, ``paths`` the files found for them."""

    row: int
    id: str
    text: str
    media: tuple[str, ...] = ()
    system_prompt: str = ""
    reference: str = ""
    paths: tuple[str, ...] = ()
    problem: str = ""
    """Why the row can't run, in English (exported as it is)."""
    issue: Message | None = field(default=None, compare=False)
    """``problem`` as a message, to show in the user's language (an imported row has only ``problem``)."""
    waits_for_media: bool = False
    """The row's only problem is a file it names (missing or unreadable): files given later can still fix it."""
    repeats_id: bool = False
    """The sheet gave an earlier row's id; this row's ``id`` is that id + ``#`` + its row number."""

    def with_issue(self, issue: Message, **changes) -> Prompt:
        return replace(self, **changes, problem=str(issue), issue=issue)


class SheetError(ValueError):
    """The sheet as a whole can't be read; ``msg`` says why to the user (``str(err)`` in English)."""

    def __init__(self, msg: Message):
        super().__init__(str(msg))
        self.msg = msg


class BadRow(Exception):
    """A row that can't be read (``msg`` says why); reading goes on with the next one."""

    def __init__(self, msg: Message):
        super().__init__(str(msg))
        self.msg = msg


def is_sheet(path: str) -> bool:
    return Path(path).suffix.lower() in SHEET_SUFFIXES


def read_prompts(files: list[str], work: Path) -> list[Prompt]:
    """The prompts of the one sheet among ``files``, each with its media resolved against the other files (zips
    are unpacked into ``work``)."""
    sheets = [f for f in files if is_sheet(f)]
    if len(sheets) != 1:
        raise SheetError(Message("sheet.one_sheet_got", {"count": len(sheets)}) if sheets
                         else Message("sheet.one_sheet"))
    prompts = parse_sheet(sheets[0])  # before any zip is unpacked: a sheet that can't be read costs nothing
    media = media_index([f for f in files if f not in sheets], work)
    return [resolve(prompt, media) for prompt in prompts]


def parse_sheet(path: str) -> list[Prompt]:
    """The rows of a CSV or JSONL sheet, media not yet resolved."""
    name = Path(path).name
    try:
        with open(path, "rb") as source:
            lines = Lines(source, name, MAX_ROW_BYTES, MAX_SHEET_BYTES)
            records = _jsonl_records(lines) if Path(path).suffix.lower() == ".jsonl" else _csv_records(lines, name)
            prompts = []
            for number, record, problem in records:
                if len(prompts) == MAX_ROWS:
                    raise SheetError(Message("sheet.too_many_rows", {"file": name, "limit": MAX_ROWS}))
                prompts.append(_prompt(number, record, problem))
    except OSError as err:
        raise SheetError(Message("sheet.not_text", {"file": name, "cause": err.__class__.__name__})) from err
    if not prompts:
        raise SheetError(Message("sheet.no_prompts", {"file": name}))
    mark_repeated_ids(prompts)
    return prompts


class Lines:
    """A file's lines as text, read in bytes: a line (or a CSV row's lines together) over ``max_row`` bytes is
    skipped to its end and raises ``BadRow``, and reading stops past ``max_total`` bytes (``SheetError`` with
    ``too_big``). An iterator that goes on after it raised, so ``csv.reader`` can read past a bad row."""

    def __init__(self, source: BinaryIO, name: str, max_row: int, max_total: int,
                 too_big: str = "sheet.too_big"):
        self.source, self.name = source, name
        self.max_row, self.max_total, self.too_big = max_row, max_total, too_big
        self.read = 0
        self.row_bytes = 0
        self.first = True

    def __iter__(self) -> Lines:
        return self

    def next_row(self) -> None:
        self.row_bytes = 0

    def __next__(self) -> str:
        line = self.source.readline(self.max_row + 1)
        if not line:
            raise StopIteration
        self._count(line)
        self.row_bytes += len(line)
        first, self.first = self.first, False
        if self.row_bytes > self.max_row:
            while not line.endswith(b"\n") and (line := self.source.readline(_SKIP_CHUNK)):
                self._count(line)
            self.row_bytes = 0
            raise BadRow(Message("sheet.row_too_long", {"limit": f"{self.max_row / 10**6:g}"}))
        try:
            return line.decode("utf-8-sig" if first else "utf-8")
        except UnicodeDecodeError as err:
            if first:  # not a text file at all
                raise SheetError(Message("sheet.not_text", {"file": self.name, "cause": err.reason})) from err
            raise BadRow(Message("sheet.not_utf8")) from err

    def _count(self, line: bytes) -> None:
        self.read += len(line)
        if self.read > self.max_total:
            raise SheetError(Message(self.too_big, {"file": self.name, "limit": self.max_total // 10**6}))


Record = tuple[int, dict | None, Message | None]


def _jsonl_records(lines: Lines) -> Iterator[Record]:
    number = 0
    while True:
        number += 1
        lines.next_row()
        try:
            line = next(lines)
        except StopIteration:
            return
        except BadRow as bad:
            yield number, None, bad.msg
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield number, None, Message("sheet.bad_json", {"reason": err.msg})
        except RecursionError:
            yield number, None, Message("sheet.too_deep")
        except ValueError as err:  # e.g. an integer of more digits than Python converts
            yield number, None, Message("sheet.bad_json", {"reason": str(err)[:200]})
        else:
            yield number, record if isinstance(record, dict) else None, None


def _csv_records(lines: Lines, name: str) -> Iterator[Record]:
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except (BadRow, csv.Error):
        header = None
    columns = [column.strip().lower() for column in header or ()]
    if not {"prompt", "text"} & set(columns):
        raise SheetError(Message("sheet.no_columns", {"file": name}))
    number = 1
    while True:
        lines.next_row()
        try:
            values = next(reader)
        except StopIteration:
            return
        except BadRow as bad:
            number += 1
            yield number, None, bad.msg
            continue
        except csv.Error as err:
            number += 1
            too_long = "field limit" in str(err)
            yield number, None, Message("sheet.csv_field_too_long", {"limit": MAX_FIELD_CHARS}) if too_long \
                else Message("sheet.bad_csv", {"reason": str(err)[:200]})
            continue
        if not values:
            continue  # a blank line
        number += 1
        yield number, {column: value for column, value in zip(columns, values) if column}, None


_TEXT_FIELDS = ("id", "prompt", "text", "system_prompt", "reference")


def _prompt(row: int, record: dict | None, problem: Message | None) -> Prompt:
    if record is None:
        return Prompt(row, str(row), "").with_issue(problem or Message("sheet.not_json_object"))
    problems: list[Message] = []
    values = {}
    for key in _TEXT_FIELDS:
        value = record.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
            if value is not None:
                problems.append(Message("sheet.wrong_type", {"field": key, "expected": Message("sheet.type.text")}))
            value = ""
        value = str(value)
        if len(value) > MAX_FIELD_CHARS:
            problems.append(Message("sheet.field_too_long", {"field": key, "limit": MAX_FIELD_CHARS}))
            value = ""
        values[key] = value.strip() if key in ("id", "prompt", "text") else value
    media = record.get("media") or ()
    if isinstance(media, str):
        media = media.replace("|", ";").split(";")
    if not isinstance(media, (list, tuple)) or not all(isinstance(name, str) for name in media):
        problems.append(Message("sheet.wrong_type", {"field": "media", "expected": Message("sheet.type.files")}))
        media = ()
    media = tuple(name.strip() for name in media if name.strip())
    prompt = Prompt(row, values["id"] or str(row), values["prompt"] or values["text"], media,
                    values["system_prompt"], values["reference"])
    if problems:
        return prompt.with_issue(joined(problems))
    if not prompt.text and not media:
        return prompt.with_issue(Message("sheet.empty_row"))
    return prompt


def mark_repeated_ids(prompts: list[Prompt]) -> None:
    """A row whose id an earlier row has is named ``id#row`` (``#row#row`` … until no row has it): every row
    keeps its own id, which the table, rating and export go by."""
    originals = {prompt.id for prompt in prompts}
    if len(originals) == len(prompts):
        return
    seen: set[str] = set()
    for index, prompt in enumerate(prompts):
        if prompt.id in seen:
            renamed = f"{prompt.id}#{prompt.row}"
            while renamed in seen or renamed in originals:
                renamed += f"#{prompt.row}"
            prompts[index] = replace(prompt, id=renamed, repeats_id=True)
        seen.add(prompts[index].id)


def media_index(files: list[str], work: Path) -> dict[str, str]:
    """Name → local path for every media file given, zips unpacked (by path inside the zip and by base name)."""
    index: dict[str, str] = {}
    for file in files:
        if Path(file).suffix.lower() != ".zip":
            index.setdefault(Path(file).name, file)
            continue
        _unzip(file, work, index)
    return index


def _unzip(file: str, work: Path, index: dict[str, str]) -> None:
    folder = work / f"unzipped-{len(list(work.glob('unzipped-*')))}"
    folder.mkdir(parents=True)
    try:
        with Archive(file, SHEET_ARCHIVES) as archive:
            for number, member in enumerate(archive.members()):
                name = base_name(member.filename)
                if name.startswith("."):
                    continue
                # Only the base name goes on disk, so no entry can leave the folder.
                target = archive.extract(member, folder / f"{number:05d}-{name}", int(DEFAULT_LIMITS.max_file_mb * 1e6))
                index.setdefault(member.filename, str(target))
                index.setdefault(name, str(target))
    except MediaError as err:
        remove_folder(folder)
        raise SheetError(err.msg) from err
    except BaseException:
        remove_folder(folder)
        raise


def resolve(prompt: Prompt, media: dict[str, str]) -> Prompt:
    """``prompt`` with the paths of its media, or the problem that stops it from running."""
    if prompt.problem and not prompt.waits_for_media:
        return prompt
    missing = [name for name in prompt.media if name not in media and Path(name).name not in media]
    if missing:
        return prompt.with_issue(Message("sheet.missing_files", {"files": ", ".join(missing)}), paths=(),
                                 waits_for_media=True)
    paths = tuple(media.get(name) or media[Path(name).name] for name in prompt.media)
    for name, path in zip(prompt.media, paths):
        try:
            kind_of(path)
        except MediaError as err:
            return prompt.with_issue(Message("media.file_problem", {"file": name, "problem": err.reason}),
                                     waits_for_media=True)
    return replace(prompt, paths=paths, problem="", issue=None, waits_for_media=False)
