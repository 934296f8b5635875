"""Media sent inline to the API: base64 ``data:`` URLs (chat's ``image_url``, ``audio_url`` and ``video_url`` parts,
realtime's ``input_image``) and plain base64 (chat's ``input_audio``). One parser and one list of media types per
kind, so both APIs take the same files; each caller words a refusal its own protocol's way (chat: a 400 naming the
field; realtime: an ``error`` event)::

    suffix, raw = read_data_url("data:image/gif;base64,R0lGOD...", "image")   # ".gif", the file's bytes

The server fetches no URL: a fetch on a caller's behalf reaches whatever this machine can reach (its own network,
cloud metadata), and the app has no fetcher guarded against that (Gradio's SSRF guard covers only its own inputs).
"""

from __future__ import annotations

import base64
import binascii

from media import MediaKind

MIME_TYPES: dict[MediaKind, dict[str, str]] = {
    "image": {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp",
              "image/gif": ".gif", "image/bmp": ".bmp", "image/tiff": ".tiff"},
    "audio": {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/vnd.wave": ".wav",
              "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/flac": ".flac", "audio/x-flac": ".flac",
              "audio/ogg": ".ogg", "audio/opus": ".opus", "audio/webm": ".webm", "audio/mp4": ".m4a",
              "audio/x-m4a": ".m4a", "audio/aac": ".aac"},
    "video": {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-matroska": ".mkv",
              "video/x-msvideo": ".avi", "video/x-m4v": ".m4v"},
}
"""The media types a data: URL may declare, and the file name extension ``media`` reads each kind by."""


class MediaURLError(ValueError):
    """A data: URL or base64 that can't be read; its text says why, in words for the caller."""


def read_data_url(url: str, kind: MediaKind) -> tuple[str, bytes]:
    """A base64 data: URL's bytes and the extension its media type names (``.png``); ``MediaURLError`` if it is no
    such URL, names no ``kind`` type served, or its base64 is broken or empty."""
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url[:12] else "this"
        raise MediaURLError(f"This server fetches no {scheme} URLs: send the {kind} inline, as a base64 data: URL "
                            f"(data:{next(iter(MIME_TYPES[kind]))};base64,...).")
    head, comma, data = url.partition(",")
    mime, *options = head[5:].split(";")
    if not comma or "base64" not in options:
        raise MediaURLError("A data: URL here is base64 (data:<type>;base64,<data>).")
    suffix = MIME_TYPES[kind].get(mime.strip().lower())
    if suffix is None:
        raise MediaURLError(f"{mime or 'no media type'} is not a {kind} type this server reads; it takes "
                            f"{', '.join(MIME_TYPES[kind])}.")
    return suffix, decode_base64(data)


def decode_base64(data: str) -> bytes:
    """A file's bytes from its base64 (line breaks and spaces allowed); ``MediaURLError`` if broken or empty."""
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise MediaURLError("The file's base64 is broken.") from None
    if not raw:
        raise MediaURLError("The file is empty.")
    return raw
