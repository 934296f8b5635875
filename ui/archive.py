"""A conversation as a zip (conversation.json + its media + the reply audio), and back.

For evaluators: save a chat, share it, open it later (or on another backend) and go on from
there. The JSON lists each turn's text and files by their name inside the zip.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

from backends.media import MediaError
from backends.request import MediaPart, TextPart, Turn

FORMAT = "qwen3-omni-app/conversation-v1"
MAX_UNZIPPED_BYTES = 2 * 10**9


def export_conversation(turns: list[Turn], path: str, settings: dict | None = None) -> str:
    """Write ``turns`` to the zip ``path``; returns it."""
    entries, written = [], set()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, turn in enumerate(turns):
            parts = []
            for part in turn.parts:
                if isinstance(part, TextPart):
                    parts.append({"type": "text", "text": part.text})
                elif os.path.isfile(part.path):
                    name = f"media/{index:03d}-{Path(part.path).name}"
                    if name not in written:
                        archive.write(part.path, name)
                        written.add(name)
                    parts.append({"type": part.kind, "file": name})
            entries.append({"role": turn.role, "parts": parts})
        archive.writestr("conversation.json", json.dumps({"format": FORMAT, "settings": settings or {},
                                                          "turns": entries}, ensure_ascii=False, indent=1))
    return path


def import_conversation(path: str, folder: str) -> list[Turn]:
    """The turns of an exported zip, their files unpacked into ``folder``. Raises ``MediaError``."""
    try:
        with zipfile.ZipFile(path) as archive:
            document = json.loads(archive.read("conversation.json"))
            if document.get("format") != FORMAT:
                raise MediaError(path, "not a conversation exported by this app")
            if sum(member.file_size for member in archive.infolist()) > MAX_UNZIPPED_BYTES:
                raise MediaError(path, f"unpacks to more than {MAX_UNZIPPED_BYTES // 10**9} GB")
            turns = []
            for entry in document["turns"]:
                parts = []
                for part in entry["parts"]:
                    if part["type"] == "text":
                        parts.append(TextPart(part["text"]))
                        continue
                    # Only the base name is used, so an entry can't write outside the folder.
                    target = Path(folder) / Path(part["file"]).name
                    with archive.open(part["file"]) as source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
                    parts.append(MediaPart(part["type"], str(target)))
                turns.append(Turn(entry["role"], tuple(parts)))
            return turns
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as err:
        if isinstance(err, MediaError):
            raise
        raise MediaError(path, f"not a readable conversation archive ({err.__class__.__name__})") from err
