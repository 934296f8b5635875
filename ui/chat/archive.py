"""A conversation as a zip (conversation.json + its media + the reply audio), and back.

For evaluators: save a chat, share it, open it later (or on another backend) and go on from
there. The JSON lists each turn's text and files by their name inside the zip.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import get_args

from media import MediaError
from messages import Message
from backends.request import MediaKind, MediaPart, Part, Role, TextPart, Turn

FORMAT = "qwen3-omni-app/conversation-v1"
MAX_UNZIPPED_BYTES = 2 * 10**9
ROLES = get_args(Role)
PART_TYPES = ("text", *get_args(MediaKind))


def export_conversation(turns: list[Turn], path: str, settings: dict | None = None) -> str:
    """Write ``turns`` to the zip ``path``; returns it."""
    entries, members = [], {}  # source file -> its name in the zip
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, turn in enumerate(turns):
            parts = []
            for part in turn.parts:
                if isinstance(part, TextPart):
                    parts.append({"type": "text", "text": part.text})
                elif os.path.isfile(part.path):
                    source = os.path.realpath(part.path)
                    if source not in members:
                        # Two uploads of one message often share a name ("image.png"): each gets its own member.
                        members[source] = _unique(f"media/{index:03d}-{Path(part.path).name}", members.values())
                        archive.write(source, members[source])
                    parts.append({"type": part.kind, "file": members[source]})
            entries.append({"role": turn.role, "parts": parts})
        archive.writestr("conversation.json", json.dumps({"format": FORMAT, "settings": settings or {},
                                                          "turns": entries}, ensure_ascii=False, indent=1))
    return path


def import_conversation(path: str, folder: str) -> list[Turn]:
    """The turns of an exported zip, their files unpacked into ``folder``. Raises ``MediaError``."""
    try:
        with zipfile.ZipFile(path) as archive:
            document = json.loads(archive.read("conversation.json"))
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise MediaError(path, Message("archive.not_exported"))
            if sum(member.file_size for member in archive.infolist()) > MAX_UNZIPPED_BYTES:
                raise MediaError(path, Message("archive.too_big", {"size": MAX_UNZIPPED_BYTES // 10**9}))
            unpacked: dict[str, str] = {}  # member -> its file in ``folder``
            turns = []
            for number, entry in enumerate(document["turns"], 1):
                if entry["role"] not in ROLES:
                    raise MediaError(path, Message("archive.bad_role", {
                        "number": number, "role": _shown(entry["role"]), "roles": " or ".join(ROLES[:-1]),
                        "last": ROLES[-1]}))
                parts = [_import_part(archive, part, number, folder, unpacked, path) for part in entry["parts"]]
                turns.append(Turn(entry["role"], tuple(parts)))
            return turns
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, OSError) as err:
        if isinstance(err, MediaError):
            raise
        # The error's own text may name files on this machine: only its kind is shown.
        raise MediaError(path, Message("archive.unreadable", {"reason": err.__class__.__name__})) from err


def _import_part(archive: zipfile.ZipFile, part: dict, number: int, folder: str, unpacked: dict[str, str],
                 path: str) -> Part:
    if part["type"] not in PART_TYPES:
        raise MediaError(path, Message("archive.bad_part", {
            "number": number, "type": _shown(part["type"]), "types": ", ".join(PART_TYPES[:-1]),
            "last": PART_TYPES[-1]}))
    if part["type"] == "text":
        if not isinstance(part["text"], str):
            raise MediaError(path, Message("archive.text_not_text", {"number": number}))
        return TextPart(part["text"])
    member = part["file"]
    if not _safe_member(member):
        raise MediaError(path, Message("archive.path_leaves", {"number": number, "file": _shown(member)}))
    if member not in archive.namelist():
        raise MediaError(path, Message("archive.missing_member", {"number": number, "file": _shown(member)}))
    if member not in unpacked:
        target = Path(folder) / _unique(PurePosixPath(member).name, {Path(p).name for p in unpacked.values()})
        with archive.open(member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        unpacked[member] = str(target)
    return MediaPart(part["type"], unpacked[member])


def _safe_member(name) -> bool:
    """A relative name that stays inside the archive's folder: no absolute path, drive, ``..`` or ``.``."""
    if not isinstance(name, str) or "\\" in name or "\0" in name:
        return False
    pieces = name.split("/")
    return ":" not in pieces[0] and all(piece not in ("", ".", "..") for piece in pieces)


def _unique(name: str, taken) -> str:
    """``name``, or ``stem-2.ext``, ``stem-3.ext`` … if it is taken."""
    taken = set(taken)
    stem, suffix = os.path.splitext(name)
    candidate, count = name, 1
    while candidate in taken:
        count += 1
        candidate = f"{stem}-{count}{suffix}"
    return candidate


def _shown(value) -> str:
    """A value from the archive, quoted and cut short for a message."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "…"
