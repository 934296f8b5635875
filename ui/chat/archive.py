"""A conversation as a zip (conversation.json + its media + the reply audio), and back.

For evaluators: save a chat, share it, open it later (or on another backend) and go on from
there. The JSON lists each turn's text and files by their name inside the zip.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import get_args

from media import DEFAULT_LIMITS, MediaError, MediaLimits
from media.archives import Archive, base_name, safe_member
from messages import Message
from backends.request import MediaKind, MediaPart, Part, Role, TextPart, Turn

FORMAT = "qwen3-omni-app/conversation-v1"
MAX_DOCUMENT_BYTES = 20 * 10**6
"""conversation.json: text and file names (a long conversation is a few hundred kB)."""
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


def import_conversation(path: str, folder: str, limits: MediaLimits = DEFAULT_LIMITS) -> list[Turn]:
    """The turns of an exported zip, their files unpacked into ``folder``. Raises ``MediaError``: the zip is
    judged by its headers before anything is read, and every read is capped (media/archives.py)."""
    try:
        with Archive(path) as archive:
            document = json.loads(archive.read("conversation.json", MAX_DOCUMENT_BYTES))
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise MediaError(path, Message("archive.not_exported"))
            unpacked: dict[str, str] = {}  # member -> its file in ``folder``
            turns = []
            for number, entry in enumerate(document["turns"], 1):
                if entry["role"] not in ROLES:
                    raise MediaError(path, Message("archive.bad_role", {
                        "number": number, "role": _shown(entry["role"]), "roles": " or ".join(ROLES[:-1]),
                        "last": ROLES[-1]}))
                parts = [_import_part(archive, part, number, folder, unpacked, limits) for part in entry["parts"]]
                turns.append(Turn(entry["role"], tuple(parts)))
            return turns
    except (KeyError, ValueError, TypeError, AttributeError, OSError, RecursionError) as err:
        if isinstance(err, MediaError):
            raise
        # The error's own text may name files on this machine: only its kind is shown.
        raise MediaError(path, Message("archive.unreadable", {"reason": err.__class__.__name__})) from err


def _import_part(archive: Archive, part: dict, number: int, folder: str, unpacked: dict[str, str],
                 limits: MediaLimits) -> Part:
    path = archive.path
    if part["type"] not in PART_TYPES:
        raise MediaError(path, Message("archive.bad_part", {
            "number": number, "type": _shown(part["type"]), "types": ", ".join(PART_TYPES[:-1]),
            "last": PART_TYPES[-1]}))
    if part["type"] == "text":
        if not isinstance(part["text"], str):
            raise MediaError(path, Message("archive.text_not_text", {"number": number}))
        return TextPart(part["text"])
    member = part["file"]
    if not safe_member(member):
        raise MediaError(path, Message("archive.path_leaves", {"number": number, "file": _shown(member)}))
    if member not in archive.names():
        raise MediaError(path, Message("archive.missing_member", {"number": number, "file": _shown(member)}))
    if member not in unpacked:
        target = Path(folder) / _unique(base_name(member), {Path(p).name for p in unpacked.values()})
        archive.extract(member, target, max_bytes=int(limits.max_file_mb * 1e6))
        unpacked[member] = str(target)
    return MediaPart(part["type"], unpacked[member])


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
