"""A prompt set: a CSV or JSONL sheet of prompts and the media files they use.

Columns (CSV header or JSONL keys): ``id``, ``prompt`` (or ``text``), ``media`` (file names separated by ``;``
in a CSV, a list in JSONL), and optionally ``system_prompt`` and ``reference``. Media come as uploaded files or
inside a zip; a sheet names them by file name (or by their path inside the zip). A row with a problem (no
prompt, a file that isn't there, a line that isn't JSON) is named by its row number and kept, marked, so the
other rows still run.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from media import DEFAULT_LIMITS, MediaError, kind_of
from media.archives import Archive, ArchiveLimits, base_name, remove_folder
from messages import Message

SHEET_SUFFIXES = (".csv", ".jsonl")
SHEET_ARCHIVES = ArchiveLimits(max_unzipped_bytes=4 * 10**9)
MAX_ROWS = 2000


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

    def with_issue(self, issue: Message, **changes) -> Prompt:
        return replace(self, **changes, problem=str(issue), issue=issue)


class SheetError(ValueError):
    """The sheet as a whole can't be read; ``msg`` says why to the user (``str(err)`` in English)."""

    def __init__(self, msg: Message):
        super().__init__(str(msg))
        self.msg = msg


def read_prompts(files: list[str], work: Path) -> list[Prompt]:
    """The prompts of the one sheet among ``files``, each with its media resolved against the other files (zips
    are unpacked into ``work``)."""
    sheets = [f for f in files if Path(f).suffix.lower() in SHEET_SUFFIXES]
    if len(sheets) != 1:
        raise SheetError(Message("sheet.one_sheet_got", {"count": len(sheets)}) if sheets
                         else Message("sheet.one_sheet"))
    media = media_index([f for f in files if f not in sheets], work)
    return [resolve(prompt, media) for prompt in parse_sheet(sheets[0])]


def parse_sheet(path: str) -> list[Prompt]:
    """The rows of a CSV or JSONL sheet, media not yet resolved."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise SheetError(Message("sheet.not_text", {"file": Path(path).name, "cause": str(err)})) from err
    if Path(path).suffix.lower() == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records.append((number, record if isinstance(record, dict) else None, None))
            except json.JSONDecodeError as err:
                records.append((number, None, Message("sheet.bad_json", {"reason": err.msg})))
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"prompt", "text"} & {name.strip().lower() for name in reader.fieldnames}:
            raise SheetError(Message("sheet.no_columns", {"file": Path(path).name}))
        records = [(number, {k.strip().lower(): v for k, v in record.items() if k}, None)
                   for number, record in enumerate(reader, start=2)]
    if len(records) > MAX_ROWS:
        raise SheetError(Message("sheet.too_many_rows", {"file": Path(path).name, "count": len(records),
                                                         "limit": MAX_ROWS}))
    prompts = [_prompt(number, record, problem) for number, record, problem in records]
    if not prompts:
        raise SheetError(Message("sheet.no_prompts", {"file": Path(path).name}))
    _mark_duplicate_ids(prompts)
    return prompts


def _prompt(row: int, record: dict | None, problem: Message | None) -> Prompt:
    if record is None:
        return Prompt(row, str(row), "").with_issue(problem or Message("sheet.not_json_object"))
    text = str(record.get("prompt") or record.get("text") or "").strip()
    media = record.get("media") or ()
    if isinstance(media, str):
        media = [name for name in media.replace("|", ";").split(";")]
    media = tuple(str(name).strip() for name in media if str(name).strip())
    prompt = Prompt(row, str(record.get("id") or row).strip(), text, media,
                    str(record.get("system_prompt") or ""), str(record.get("reference") or ""))
    if not text and not media:
        return prompt.with_issue(Message("sheet.empty_row"))
    return prompt


def _mark_duplicate_ids(prompts: list[Prompt]) -> None:
    seen: set[str] = set()
    for index, prompt in enumerate(prompts):
        if prompt.id in seen:
            prompts[index] = replace(prompt, id=f"{prompt.id}#{prompt.row}")
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
    if prompt.problem:
        return prompt
    missing = [name for name in prompt.media if name not in media and Path(name).name not in media]
    if missing:
        return prompt.with_issue(Message("sheet.missing_files", {"files": ", ".join(missing)}), paths=())
    paths = tuple(media.get(name) or media[Path(name).name] for name in prompt.media)
    for name, path in zip(prompt.media, paths):
        try:
            kind_of(path)
        except MediaError as err:
            return prompt.with_issue(Message("media.file_problem", {"file": name, "problem": err.reason}))
    return replace(prompt, paths=paths, problem="", issue=None)
