"""Uploads a visitor can't take the server down with (issue 32): zip bombs in the conversation import, videos
whose headers hide their length or claim huge frames, and a sound track that breaks part-way."""

from __future__ import annotations

import json
import subprocess
import zipfile

import numpy as np
import pytest
from gradio_client import Client, handle_file

import media
from media.archives import Archive
from tests import media_factory
from tests.test_app import server  # noqa: F401 (a fixture)
from tests.test_upload_limits import MB, peak_growth
from ui.chat import archive


def conversation_zip(path, text_bytes: int):
    """An exported conversation whose conversation.json is valid and ``text_bytes`` long (one long message)."""
    document = {"format": archive.FORMAT, "settings": {},
                "turns": [{"role": "user", "parts": [{"type": "text", "text": " " * text_bytes}]}]}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("conversation.json", json.dumps(document))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """0.3 MB that unpacks to 300 MB of valid conversation."""
    return conversation_zip(tmp_path_factory.mktemp("bomb") / "conversation.zip", 300 * 10**6)


def test_a_conversation_zip_bomb_is_refused_from_its_headers_without_unpacking_it(bomb, tmp_path):
    assert bomb.stat().st_size < MB
    with peak_growth() as peak, pytest.raises(media.MediaError) as refused:
        archive.import_conversation(str(bomb), str(tmp_path))
    assert "conversation.json unpacks to" in str(refused.value) and "zip bomb" in str(refused.value)
    assert peak[0] < 4 * MB, f"{peak[0] / MB:.0f} MB allocated to refuse it"
    assert not list(tmp_path.iterdir())


def test_the_import_endpoint_refuses_the_bomb_by_name_and_still_answers(server, bomb, tmp_path):
    client = Client(server, verbose=False, download_files=str(tmp_path))
    with pytest.raises(Exception) as refused:
        client.predict(handle_file(str(bomb)), api_name="/import")
    assert "zip bomb" in str(refused.value)
    assert client.predict({"text": "Hi", "files": []}, speak=False, temperature=0, max_tokens=4, api_name="/chat")


def test_a_conversation_json_larger_than_a_conversation_is_refused_at_its_cap(tmp_path):
    """Not a bomb by its ratio (random text barely packs), but more than conversation.json ever holds."""
    words = np.random.default_rng(0).integers(97, 123, 30 * 10**6, dtype=np.uint8).tobytes().decode()
    document = {"format": archive.FORMAT, "turns": [{"role": "user", "parts": [{"type": "text", "text": words}]}]}
    path = tmp_path / "huge.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("conversation.json", json.dumps(document))
    with pytest.raises(media.MediaError, match="the limit for it is 20.0 MB"):
        archive.import_conversation(str(path), str(tmp_path))


def test_a_member_whose_header_lies_about_its_size_is_refused_by_name(tmp_path):
    """The central directory says 100 bytes; the data unpacks to 5 MB."""
    path = conversation_zip(tmp_path / "lying.zip", 5 * 10**6)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as original:
        info = original.getinfo("conversation.json")
    real = info.file_size.to_bytes(4, "little")
    for offset in [i for i in range(len(data) - 3) if data[i:i + 4] == real]:
        data[offset:offset + 4] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(media.MediaError, match="conversation.json"):
        archive.import_conversation(str(path), str(tmp_path))
    with Archive(path) as opened:
        with pytest.raises(media.MediaError):
            opened.extract("conversation.json", tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists(), "a member that overran is removed"


def test_a_video_that_never_says_its_length_is_held_to_the_limit(tmp_path):
    """WebM written as a live stream writes it: no duration in its header. Before the fix the length limit
    was skipped and every frame read."""
    path = tmp_path / "live.webm"
    with open(path, "wb") as out:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=12",
                        "-c:v", "libvpx", "-f", "webm", "pipe:1"], stdout=out, check=True)
    import av

    with av.open(str(path)) as container:
        assert container.duration is None and container.streams.video[0].duration is None
    limits = media.MediaLimits(max_video_s=10)
    for check in (media.load_video, media.check_video):
        with pytest.raises(media.MediaError, match="video is 12 s long, the limit is 10 s"):
            check(path, limits)
    assert media.load_video(path, media.MediaLimits(max_video_s=15)).frames.shape[0] >= 4


def test_a_video_claiming_frames_beyond_8k_is_refused_before_a_frame_is_decoded(tmp_path):
    path = tmp_path / "huge-frames.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:size=8192x4352:rate=1:d=1",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    for check in (media.load_video, media.check_video):
        with pytest.raises(media.MediaError, match="video frames are 8192×4352; the limit is 33 megapixels"):
            check(path)


def test_a_sound_track_that_breaks_part_way_is_named_not_taken_as_silence(tmp_path, monkeypatch):
    """The decoder fails after the first second of a video's sound: the user hears why, rather than getting an
    answer about a video with no sound."""
    import av

    path = media_factory.test_video(tmp_path / "clip.mp4", seconds=3.0)
    assert media.load_video(path).audio is not None
    real = av.AudioResampler

    class Breaking:
        def __init__(self, **kwargs):
            self.inner, self.calls = real(**kwargs), 0

        def resample(self, frame):
            self.calls += 1
            if self.calls > 30:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
            return self.inner.resample(frame)

    monkeypatch.setattr(av, "AudioResampler", Breaking)
    with pytest.raises(media.MediaError, match=r"the sound can't be decoded past \d\.\d s \(InvalidDataError\)"):
        media.load_video(path)
