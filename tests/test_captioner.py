"""The Caption tab and app_captioner.py on the tiny captioner-shaped checkpoint."""

from __future__ import annotations

import csv
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from gradio_client import Client, handle_file

import cli
import app_captioner
from tests import media_factory
from ui import build_captioner_demo, queue_settings


@pytest.fixture(scope="module")
def captioner(captioner_backend):
    demo = build_captioner_demo(captioner_backend)
    demo.queue(**queue_settings(captioner_backend.info)).launch(prevent_thread_lock=True, quiet=True,
                                                                show_error=True)
    yield demo.local_url
    demo.close()


@pytest.fixture
def client(captioner, tmp_path):
    return Client(captioner, verbose=False, download_files=str(tmp_path))


def test_a_speech_recording_and_a_video_sound_track_are_captioned(client, speech_path, video_path):
    for path in (speech_path, video_path):
        caption = client.predict(handle_file(str(path)), temperature=0, api_name="/caption")
        assert isinstance(caption, str) and caption.strip()


def test_long_audio_is_captioned_in_30_second_segments(client, speech_path, tmp_path):
    speech, rate = soundfile.read(speech_path)
    long = tmp_path / "long.wav"
    soundfile.write(long, np.tile(speech, int(np.ceil(65 * rate / len(speech))))[: 65 * rate], rate)
    caption = client.predict(handle_file(str(long)), temperature=0, max_tokens=16, api_name="/caption")
    assert [line for line in caption.splitlines() if line.startswith("[")] == [
        "[00:00–00:30]", "[00:30–01:00]", "[01:00–01:05]"]


def test_cut_segments_and_unpacked_archives_are_deleted_when_done(client, speech_path, tmp_path):
    def caption_folders():
        return set(Path(tempfile.gettempdir()).glob("caption-*"))

    before = caption_folders()
    speech, rate = soundfile.read(speech_path)
    long = tmp_path / "long.wav"
    soundfile.write(long, np.tile(speech, int(np.ceil(40 * rate / len(speech))))[: 40 * rate], rate)
    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(long, "long.wav")
    assert "[00:30–00:40]" in client.predict(handle_file(str(long)), max_tokens=16, api_name="/caption")
    table, downloads, _ = client.predict([handle_file(str(archive))], max_tokens=16, api_name="/caption_batch")
    assert table["data"][0][2] and not table["data"][0][4]
    assert all(Path(path).stat().st_size for path in downloads)  # the results were handed over first
    assert not caption_folders() - before


def test_a_video_without_sound_is_refused_by_name(client, tmp_path):
    silent = media_factory.test_video(tmp_path / "silent.mp4", with_audio=False)
    with pytest.raises(Exception, match="silent.mp4: the video has no sound track"):
        client.predict(handle_file(str(silent)), api_name="/caption")


def test_a_batch_reports_the_bad_file_and_goes_on(client, speech_path, video_path, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio at all")
    table, downloads, status = client.predict(
        [handle_file(str(speech_path)), handle_file(str(corrupt)), handle_file(str(video_path))],
        temperature=0, api_name="/caption_batch")
    rows = [dict(zip(table["headers"], row)) for row in table["data"]]
    assert [row["file"] for row in rows] == ["speech.wav", "corrupt.wav", "pattern.mp4"]
    assert rows[0]["caption"] and rows[2]["caption"] and not rows[0]["error"] and not rows[2]["error"]
    assert not rows[1]["caption"] and "not a readable audio file" in rows[1]["error"]
    assert status == "3 of 3 files done."
    csv_file = next(path for path in downloads if path.endswith(".csv"))
    jsonl_file = next(path for path in downloads if path.endswith(".jsonl"))
    with open(csv_file, newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    with open(jsonl_file, encoding="utf-8") as f:
        jsonl_rows = [json.loads(line) for line in f]
    assert [r["caption"] for r in csv_rows] == [r["caption"] for r in jsonl_rows] == [r["caption"] for r in rows]
    assert [r["error"] for r in csv_rows] == [r["error"] for r in jsonl_rows] == [r["error"] for r in rows]


def test_a_zip_is_unpacked_safely(client, speech_path, video_path, tmp_path):
    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(speech_path, "clips/a_speech.wav")
        z.write(video_path, "clips/b_video.mp4")
        z.write(speech_path, "other/b_video.mp4.wav")
        z.write(speech_path, "more/a_speech.wav")  # same base name as the first: both are captioned
        z.writestr("../../escape.wav", (tmp_path / "x").name)  # unpacked by base name only, inside the folder
        z.writestr("__MACOSX/._a_speech.wav", b"junk")  # hidden files and
        z.writestr("notes.txt", b"not media")          # what isn't media are skipped
    table, *_ = client.predict([handle_file(str(archive))], temperature=0, api_name="/caption_batch")
    rows = {row[0]: row for row in table["data"]}
    assert sorted(rows) == ["../../escape.wav", "clips/a_speech.wav", "clips/b_video.mp4", "more/a_speech.wav",
                            "other/b_video.mp4.wav"]
    assert rows["clips/a_speech.wav"][2] and rows["more/a_speech.wav"][2] and rows["clips/b_video.mp4"][2]
    assert "not a readable audio file" in rows["../../escape.wav"][4]


def test_official_captioner_command_lines_map_onto_ours():
    args = cli.parse_args(["-c", "Qwen/Qwen3-Omni-30B-A3B-Captioner", "--use-transformers", "--flash-attn2"],
                          default_port=app_captioner.DEFAULT_PORT)
    assert args.checkpoint == "Qwen/Qwen3-Omni-30B-A3B-Captioner" and args.backend == "transformers"
    assert args.attn_implementation == "flash_attention_2" and args.server_port == 7861
