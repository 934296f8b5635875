"""Zips a visitor uploads (a conversation, an Evaluate export, media for captions or a prompt sheet), read within
limits: one place for every import.

A zip says what it holds before anything is read (member count, each member's size and compressed size), so
most bombs are refused from that alone; and since those headers can lie, every read and every extraction is
also capped in bytes as it streams. A partly extracted file is removed when a cap stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from media.limits import MediaError
from messages import Message

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 10_000
    max_unzipped_bytes: int = 2 * 10**9
    """Every member together, as declared and as really read."""
    max_ratio: float = 100.0
    """Unpacked over packed size, for members larger than ``ratio_from_bytes``: media barely compresses, text
    and JSON about 3-15×; a bomb is hundreds or thousands."""
    ratio_from_bytes: int = 10**6


ARCHIVE_LIMITS = ArchiveLimits()


class Archive:
    """Example::

        with Archive(path) as archive:                    # MediaError: not a zip, or a bomb by its own headers
            document = archive.read("conversation.json", max_bytes=20 * 10**6)
            archive.extract("media/000-photo.png", folder / "photo.png")
    """

    def __init__(self, path: str | os.PathLike, limits: ArchiveLimits = ARCHIVE_LIMITS):
        self.path, self.limits = str(path), limits
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise MediaError(path, Message("archive.not_a_zip", {"reason": err.__class__.__name__})) from err
        self.read_bytes = 0
        """Bytes unpacked so far, by every read and extraction."""
        try:
            self._check_headers()
        except BaseException:
            self.zip.close()
            raise

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.zip.close()

    def _check_headers(self) -> None:
        infos, limits = self.zip.infolist(), self.limits
        if len(infos) > limits.max_members:
            raise self.error("archive.too_many_members", count=len(infos), limit=limits.max_members)
        if sum(info.file_size for info in infos) > limits.max_unzipped_bytes:
            raise self.error("archive.too_big", size=limits.max_unzipped_bytes // 10**9)
        for info in infos:
            if info.file_size > limits.ratio_from_bytes and \
                    info.file_size > limits.max_ratio * max(info.compress_size, 1):
                raise self.error("archive.bomb", file=info.filename[:80],
                                 ratio=f"{info.file_size / max(info.compress_size, 1):.0f}", limit=f"{limits.max_ratio:.0f}")

    def error(self, code: str, **values) -> MediaError:
        return MediaError(self.path, Message(code, values))

    def members(self) -> list[zipfile.ZipInfo]:
        """The files it holds (not folders), in their order."""
        return [info for info in self.zip.infolist() if not info.is_dir()]

    def names(self) -> set[str]:
        return {info.filename for info in self.members()}

    def read(self, name: str, max_bytes: int) -> bytes:
        """A member's bytes, at most ``max_bytes`` of them (else MediaError naming it), however large its
        header says it is. KeyError if there is no such member."""
        info = self.zip.getinfo(name)
        self._fits(info, max_bytes)
        with self._unpacking(info), self.zip.open(info) as source:
            data = source.read(max_bytes + 1)
        self._count(info, len(data), max_bytes)
        return data

    @contextlib.contextmanager
    def _unpacking(self, info: zipfile.ZipInfo):
        """A member that can't be unpacked (a bad CRC, broken deflate data, encryption, an unknown method) is
        refused by name, whatever the library called it."""
        try:
            yield
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
            raise self.error("archive.bad_member", file=info.filename[:80], reason=err.__class__.__name__) from err

    def extract(self, name: str | zipfile.ZipInfo, target: str | os.PathLike, max_bytes: int | None = None) -> Path:
        """A member streamed into the file ``target`` (which the caller names: no member path reaches the disk),
        capped at ``max_bytes`` and at what is left of the archive's total; a member that overruns is removed."""
        info = name if isinstance(name, zipfile.ZipInfo) else self.zip.getinfo(name)
        cap = self.limits.max_unzipped_bytes - self.read_bytes if max_bytes is None else max_bytes
        self._fits(info, cap)
        target = Path(target)
        written = 0
        try:
            with self._unpacking(info), self.zip.open(info) as source, open(target, "wb") as out:
                while chunk := source.read(min(CHUNK, cap + 1 - written)):
                    written += len(chunk)
                    self._count(info, written, cap, counted=written - len(chunk))
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target

    def _fits(self, info: zipfile.ZipInfo, max_bytes: int) -> None:
        if info.file_size > max_bytes:
            raise self.error("archive.member_too_big", file=info.filename[:80], size=_mb(info.file_size),
                             limit=_mb(max_bytes))

    def _count(self, info: zipfile.ZipInfo, length: int, max_bytes: int, counted: int = 0) -> None:
        """``length`` bytes of ``info`` read so far (``counted`` of them counted before)."""
        self.read_bytes += length - counted
        if length > max_bytes:  # the header lied
            raise self.error("archive.member_too_big", file=info.filename[:80], size=f"> {_mb(max_bytes)}",
                             limit=_mb(max_bytes))
        if self.read_bytes > self.limits.max_unzipped_bytes:
            raise self.error("archive.too_big", size=self.limits.max_unzipped_bytes // 10**9)


def safe_member(name) -> bool:
    """A relative name that stays inside the archive's folder: no absolute path, drive, ``..`` or ``.``."""
    if not isinstance(name, str) or "\\" in name or "\0" in name:
        return False
    pieces = name.split("/")
    return ":" not in pieces[0] and all(piece not in ("", ".", "..") for piece in pieces)


def base_name(member: str) -> str:
    return PurePosixPath(member).name


def remove_folder(folder: str | os.PathLike) -> None:
    """A failed import's folder, with whatever it had unpacked."""
    shutil.rmtree(folder, ignore_errors=True)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size < 10**8 else f"{size / 1e6:.0f} MB"
