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
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from media import MediaError, kind_of

SHEET_SUFFIXES = (".csv", ".jsonl")
MAX_UNZIPPED_BYTES = 4 * 10**9
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


class SheetError(ValueError):
    """The sheet as a whole can't be read; ``str(err)`` is a message fit for the user."""


def read_prompts(files: list[str], work: Path) -> list[Prompt]:
    """The prompts of the one sheet among ``files``, each with its media resolved against the other files (zips
    are unpacked into ``work``)."""
    sheets = [f for f in files if Path(f).suffix.lower() in SHEET_SUFFIXES]
    if len(sheets) != 1:
        raise SheetError("Add exactly one prompt sheet (.csv or .jsonl)" + (f"; got {len(sheets)}." if sheets else "."))
    media = media_index([f for f in files if f not in sheets], work)
    return [resolve(prompt, media) for prompt in parse_sheet(sheets[0])]


def parse_sheet(path: str) -> list[Prompt]:
    """The rows of a CSV or JSONL sheet, media not yet resolved."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise SheetError(f"{Path(path).name}: not a readable UTF-8 text file ({err})") from err
    if Path(path).suffix.lower() == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records.append((number, record if isinstance(record, dict) else None, ""))
            except json.JSONDecodeError as err:
                records.append((number, None, f"not a JSON object ({err.msg})"))
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"prompt", "text"} & {name.strip().lower() for name in reader.fieldnames}:
            raise SheetError(f"{Path(path).name}: the first line must name the columns, with a 'prompt' column "
                             "(and optionally id, media, system_prompt, reference).")
        records = [(number, {k.strip().lower(): v for k, v in record.items() if k}, "")
                   for number, record in enumerate(reader, start=2)]
    if len(records) > MAX_ROWS:
        raise SheetError(f"{Path(path).name}: {len(records)} rows; at most {MAX_ROWS} per run.")
    prompts = [_prompt(number, record, problem) for number, record, problem in records]
    if not prompts:
        raise SheetError(f"{Path(path).name}: no prompts in it.")
    _mark_duplicate_ids(prompts)
    return prompts


def _prompt(row: int, record: dict | None, problem: str) -> Prompt:
    if record is None:
        return Prompt(row, str(row), "", problem=problem or "not a JSON object")
    text = str(record.get("prompt") or record.get("text") or "").strip()
    media = record.get("media") or ()
    if isinstance(media, str):
        media = [name for name in media.replace("|", ";").split(";")]
    media = tuple(str(name).strip() for name in media if str(name).strip())
    prompt = Prompt(row, str(record.get("id") or row).strip(), text, media,
                    str(record.get("system_prompt") or ""), str(record.get("reference") or ""))
    if not text and not media:
        return Prompt(**{**prompt.__dict__, "problem": "no prompt and no media"})
    return prompt


def _mark_duplicate_ids(prompts: list[Prompt]) -> None:
    seen: set[str] = set()
    for index, prompt in enumerate(prompts):
        if prompt.id in seen:
            prompts[index] = Prompt(**{**prompt.__dict__, "id": f"{prompt.id}#{prompt.row}"})
        seen.add(prompts[index].id)


def media_index(files: list[str], work: Path) -> dict[str, str]:
    """Name → local path for every media file given, zips unpacked (by path inside the zip and by base name)."""
    index: dict[str, str] = {}
    for file in files:
        if Path(file).suffix.lower() != ".zip":
            index.setdefault(Path(file).name, file)
            continue
        try:
            _unzip(file, work, index)
        except zipfile.BadZipFile as err:
            raise SheetError(f"{Path(file).name}: not a readable zip ({err})") from err
    return index


def _unzip(file: str, work: Path, index: dict[str, str]) -> None:
    folder = work / f"unzipped-{len(list(work.glob('unzipped-*')))}"
    folder.mkdir(parents=True)
    unpacked = 0
    with zipfile.ZipFile(file) as archive:
        for number, member in enumerate(archive.infolist()):
            name = Path(member.filename).name
            if member.is_dir() or name.startswith("."):
                continue
            unpacked += member.file_size
            if unpacked > MAX_UNZIPPED_BYTES:
                raise SheetError(f"{Path(file).name}: unpacks to more than {MAX_UNZIPPED_BYTES // 10**9} GB")
            # Only the base name goes on disk, so no entry can leave the folder.
            target = folder / f"{number:05d}-{name}"
            with archive.open(member) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
            index.setdefault(member.filename, str(target))
            index.setdefault(name, str(target))


def resolve(prompt: Prompt, media: dict[str, str]) -> Prompt:
    """``prompt`` with the paths of its media, or the problem that stops it from running."""
    if prompt.problem:
        return prompt
    missing = [name for name in prompt.media if name not in media and Path(name).name not in media]
    if missing:
        return Prompt(**{**prompt.__dict__, "paths": (), "problem": f"missing file: {', '.join(missing)}"})
    paths = tuple(media.get(name) or media[Path(name).name] for name in prompt.media)
    for name, path in zip(prompt.media, paths):
        try:
            kind_of(path)
        except MediaError as err:
            return Prompt(**{**prompt.__dict__, "problem": f"{name}: {err.problem}"})
    return Prompt(**{**prompt.__dict__, "paths": paths, "problem": ""})
