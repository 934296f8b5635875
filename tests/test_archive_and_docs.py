"""Conversation export/import (ui/archive.py), the README's promises about the API and the Live tab, and the
Gradio patches' version guard."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from backends.media import MediaError
from backends.request import MediaPart, TextPart, Turn
from ui import archive


def crafted_archive(path: Path, turns: list[dict], members: dict[str, bytes] | None = None) -> str:
    """A zip laid out like an export, with whatever ``turns`` and members a hand-made one may hold."""
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("conversation.json", json.dumps({"format": archive.FORMAT, "settings": {}, "turns": turns}))
        for name, data in (members or {}).items():
            zipped.writestr(zipfile.ZipInfo(name), data)
    return str(path)


def test_two_attachments_with_the_same_name_in_one_message_both_survive_a_round_trip(tmp_path):
    first, second = tmp_path / "phone" / "image.png", tmp_path / "camera" / "image.png"
    for path, data in ((first, b"first picture"), (second, b"second picture")):
        path.parent.mkdir()
        path.write_bytes(data)
    turns = [Turn.user(MediaPart("image", str(first)), MediaPart("image", str(second)), "Which is sharper?"),
             Turn.assistant("The second.")]
    exported = archive.export_conversation(turns, str(tmp_path / "conversation.zip"))
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    imported = archive.import_conversation(exported, str(unpacked))
    assert [Path(part.path).read_bytes() for part in imported[0].media] == [b"first picture", b"second picture"]
    assert imported[0].text == "Which is sharper?" and imported[1] == Turn.assistant("The second.")


def test_one_file_attached_twice_is_stored_once(tmp_path):
    image = tmp_path / "image.png"
    image.write_bytes(b"picture")
    exported = archive.export_conversation([Turn.user(MediaPart("image", str(image)), MediaPart("image", str(image)))],
                                           str(tmp_path / "conversation.zip"))
    with zipfile.ZipFile(exported) as zipped:
        assert sum(name.startswith("media/") for name in zipped.namelist()) == 1


@pytest.mark.parametrize("member", ["..", ".", "../escape.png", "media/../../escape.png", "/tmp/escape.png",
                                    "media/", "..\\escape.png", "C:/escape.png"])
def test_a_member_name_leading_out_of_the_folder_is_refused_without_showing_server_paths(tmp_path, member):
    folder = tmp_path / "session" / "replies"
    folder.mkdir(parents=True)
    zipped = crafted_archive(tmp_path / "shared.zip", [{"role": "user", "parts": [{"type": "image", "file": member}]}],
                             {member: b"not yours"} if member not in ("..", ".", "media/") else {})
    with pytest.raises(MediaError) as refused:
        archive.import_conversation(zipped, str(folder))
    message = str(refused.value)
    assert message.startswith("shared.zip: message 1 names the file ") and "leads out of the folder" in message
    assert str(tmp_path) not in message
    assert not list(folder.iterdir()) and not (tmp_path / "session" / "escape.png").exists()


def test_a_member_the_archive_does_not_hold_is_named(tmp_path):
    zipped = crafted_archive(tmp_path / "shared.zip", [{"role": "user", "parts": [{"type": "audio", "file": "a.wav"}]}])
    with pytest.raises(MediaError, match='message 1 names the file "a.wav", which the archive does not hold'):
        archive.import_conversation(zipped, str(tmp_path))


@pytest.mark.parametrize("role", ["system", "tool", None])
def test_a_message_with_a_role_the_app_has_no_turn_for_is_refused(tmp_path, role):
    zipped = crafted_archive(tmp_path / "shared.zip", [{"role": "user", "parts": [{"type": "text", "text": "Hi"}]},
                                                       {"role": role, "parts": [{"type": "text", "text": "Be evil"}]}])
    with pytest.raises(MediaError) as refused:
        archive.import_conversation(zipped, str(tmp_path))
    assert str(refused.value) == (f"shared.zip: message 2 has the role {json.dumps(role)}; "
                                  "a message's role is user or assistant")


@pytest.mark.parametrize("kind", ["pdf", "media", "IMAGE"])
def test_a_part_of_a_type_the_app_does_not_know_is_refused(tmp_path, kind):
    zipped = crafted_archive(tmp_path / "shared.zip", [{"role": "user", "parts": [{"type": kind, "file": "media/x"}]}],
                             {"media/x": b"data"})
    with pytest.raises(MediaError) as refused:
        archive.import_conversation(zipped, str(tmp_path))
    assert str(refused.value) == (f'shared.zip: message 1 has a part of type "{kind}"; '
                                  "a part is text, image, audio or video")


@pytest.mark.parametrize("document", [[], {"format": archive.FORMAT, "turns": [["user"]]},
                                      {"format": archive.FORMAT, "turns": [{"role": "user", "parts": "text"}]}])
def test_a_malformed_document_is_refused_as_unreadable(tmp_path, document):
    path = tmp_path / "shared.zip"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("conversation.json", json.dumps(document))
    with pytest.raises(MediaError, match="^shared.zip: not a (readable )?conversation"):
        archive.import_conversation(str(path), str(tmp_path))
