"""Inputs that fight back, many users at once, long conversations, logins: the app keeps serving."""

from __future__ import annotations

import concurrent.futures
import re
import time
from dataclasses import replace

import pytest
from gradio_client import Client, handle_file

import cli
import media
from backends.events import Error, Notice
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from tests import bad_inputs
from tests.streams import collect, errors_of, finish_of, text_of
from tests.test_app import GREEDY, assistant_texts, last_reply, launch

QUICK = Sampling(temperature=0, max_new_tokens=6)


@pytest.fixture(scope="module")
def refused(tmp_path_factory, speech_path, image_path, video_path):
    return bad_inputs.refused(tmp_path_factory.mktemp("refused"), speech_path, image_path, video_path)


@pytest.fixture(scope="module")
def accepted(tmp_path_factory):
    return bad_inputs.accepted(tmp_path_factory.mktemp("accepted"))


@pytest.fixture(scope="module")
def server(instruct_backend):
    demo = launch(instruct_backend)
    yield demo.local_url
    demo.close()


def test_every_bad_file_is_refused_by_the_backend_with_its_name_and_problem(instruct_backend, refused):
    for name, (path, expected) in refused.items():
        try:
            kind = media.kind_of(path)
        except media.MediaError as err:  # the UI refuses these before any backend sees them
            assert str(err) == f"{name}: {expected}"
            continue
        events = collect(instruct_backend, ChatRequest(turns=(Turn.user(MediaPart(kind, str(path)), "What?"),),
                                                       sampling=QUICK, return_audio=False))
        (error,) = errors_of(events)
        assert error.stage == "input" and error.message.startswith(f"{name}: ") and expected in error.message, name
        assert finish_of(events) == "error"


def test_every_bad_file_message_reads_in_chinese_for_a_chinese_browser(instruct_backend, refused, accepted):
    """Each file check's message has its Chinese in messages.table (the file's name and an exception's
    class name stay as they are)."""
    messages = []
    for name, (path, _) in refused.items():
        try:
            kind = media.kind_of(path)
        except media.MediaError as err:
            messages.append((name, err.msg))
            continue
        events = collect(instruct_backend, ChatRequest(turns=(Turn.user(MediaPart(kind, str(path)), "What?"),),
                                                       sampling=QUICK, return_audio=False))
        messages += [(name, error.msg) for error in errors_of(events)]
    silent = accepted["no-sound.mp4"]
    events = collect(instruct_backend, ChatRequest(turns=(Turn.user(MediaPart("video", str(silent)), "What?"),),
                                                   sampling=QUICK, return_audio=False, use_audio_in_video=True))
    messages += [("no-sound.mp4", e.msg) for e in events if isinstance(e, Notice)]
    assert len(messages) == len(refused) + 1
    for name, message in messages:
        chinese = message.text("zh")
        assert chinese.startswith(name) and re.search("[\u4e00-\u9fff]", chinese), message
        words_left = re.findall("[A-Za-z]{4,}", re.sub("（.*?）", "", chinese[len(name):]))
        assert not words_left, (message, chinese)


def test_odd_but_usable_files_get_a_reply(instruct_backend, accepted):
    for name, path in accepted.items():
        request = ChatRequest(turns=(Turn.user(MediaPart(media.kind_of(path), str(path)), "What?"),), sampling=QUICK,
                              return_audio=False, use_audio_in_video=True)
        events = collect(instruct_backend, request)
        assert text_of(events) and not errors_of(events), name
        if name == "no-sound.mp4":  # told, not silently patched
            assert [e.message for e in events if isinstance(e, Notice)] == [
                "no-sound.mp4 has no sound track; the model heard silence for it."]


def test_through_the_api_a_bad_file_leaves_the_conversation_and_the_message_intact(server, refused, tmp_path):
    client = Client(server, verbose=False, download_files=str(tmp_path))
    before, *_ = client.predict({"text": "Hello", "files": []}, **GREEDY, api_name="/chat")
    for name, (path, expected) in refused.items():
        try:
            conversation, returned, *_ = client.predict({"text": f"About {name}", "files": [handle_file(str(path))]},
                                                        **GREEDY, api_name="/chat")
        except Exception as err:  # refused before the turn started: the client gets the message
            # Gradio itself turns away types outside the textbox's file_types (the browser's picker hides them).
            assert f"{name}: {expected}" in str(err) or (name == "notes.txt" and "Invalid file type" in str(err))
            continue
        assert any(name in text and expected in text for text in assistant_texts(conversation)), name
        assert [m["role"] for m in conversation].count("user") == 1, "the failed turn is not kept"
        returned = returned.get("value", returned)
        assert returned["text"] == f"About {name}" and len(returned["files"]) == 1, "nothing typed is lost"
    after, *_ = client.predict({"text": "Still there?", "files": []}, **GREEDY, api_name="/chat")
    assert [m["role"] for m in after].count("user") == 2 and last_reply(after)


def test_malformed_api_calls_get_an_error_and_the_app_keeps_serving(server, tmp_path):
    client = Client(server, verbose=False, download_files=str(tmp_path))
    for bad in ({"text": "", "files": []}, {"files": ["/etc/passwd"]}, 42):
        with pytest.raises(Exception):
            client.predict(bad, **GREEDY, api_name="/chat")
    with pytest.raises(Exception):
        client.predict({"text": "Hi", "files": []}, temperature="hot", api_name="/chat")
    conversation, *_ = client.predict({"text": "Hi", "files": []}, **GREEDY, api_name="/chat")
    assert last_reply(conversation)


def test_eight_users_at_once_each_see_only_their_own_conversation(server, tmp_path):
    def user(number: int) -> list[str]:
        client = Client(server, verbose=False, download_files=str(tmp_path / str(number)))
        for turn in range(2):
            conversation, *_ = client.predict({"text": f"user-{number} turn-{turn}", "files": []}, speak=False,
                                              **GREEDY, api_name="/chat")
        return [m["content"][0]["text"] for m in conversation if m["role"] == "user"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        histories = list(pool.map(user, range(8)))
    for number, history in enumerate(histories):
        assert history == [f"user-{number} turn-0", f"user-{number} turn-1"]


def test_a_conversation_too_long_for_the_context_drops_its_oldest_turns_and_says_so(instruct_backend, image_path,
                                                                                   monkeypatch):
    monkeypatch.setattr(instruct_backend, "options", replace(instruct_backend.options, max_context_tokens=70))
    turns = []
    for i in range(3):
        turns += [Turn.user(MediaPart("image", str(image_path)), f"Picture {i}?"), Turn.assistant(f"Answer {i}.")]
    events = collect(instruct_backend, ChatRequest(turns=tuple(turns[:-1]), sampling=QUICK, return_audio=False))
    (notice,) = [e for e in events if isinstance(e, Notice)]
    assert notice.message.endswith("outgrew the model's context (70 tokens with 6 kept for the reply), so the "
                                   "first 2 messages and their 1 file were left out.")
    assert text_of(events) and finish_of(events) == "length"

    alone = collect(instruct_backend, ChatRequest(turns=(Turn.user(MediaPart("image", str(image_path)), "Hm?"),),
                                                  sampling=replace(QUICK, max_new_tokens=50), return_audio=False))
    (error,) = [e for e in alone if isinstance(e, Error)]
    assert error.message.startswith(f"{image_path.name}: this message needs 25 tokens with its files, and the "
                                    "model takes 20 (70 minus 50 kept for the reply)")


def test_too_many_files_in_one_message_are_refused_with_the_limit(instruct_backend, image_path):
    turn = Turn.user(*[MediaPart("image", str(image_path))] * 11, "So many")
    (error,) = errors_of(collect(instruct_backend, ChatRequest(turns=(turn,), sampling=QUICK)))
    assert "one message takes at most 10 files; this one has 11" in error.message


def test_a_login_keeps_strangers_out(instruct_backend, monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN_OMNI_AUTH", "alice:wonderland")
    args = cli.parse_args(["--auth", "bob:builder"])
    auth = cli.launch_settings(args)["auth"]
    assert auth == [("bob", "builder"), ("alice", "wonderland")]
    demo = launch(instruct_backend, auth=auth)
    try:
        with pytest.raises(Exception):
            Client(demo.local_url, verbose=False)
        with pytest.raises(Exception):
            Client(demo.local_url, auth=("alice", "guess"), verbose=False)
        client = Client(demo.local_url, auth=("alice", "wonderland"), verbose=False, download_files=str(tmp_path))
        conversation, *_ = client.predict({"text": "Hi", "files": []}, **GREEDY, api_name="/chat")
        assert last_reply(conversation)
    finally:
        demo.close()


def test_urls_sent_as_files_are_never_fetched_from_loopback_or_metadata_addresses(server, tmp_path):
    import http.server
    import threading

    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    internal = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=internal.serve_forever, daemon=True).start()
    client = Client(server, verbose=False, download_files=str(tmp_path))
    try:
        for url in (f"http://127.0.0.1:{internal.server_port}/admin.png", "http://169.254.169.254/latest/meta-data.png",
                    "http://[::1]:80/x.png"):
            file = {"path": url, "url": url, "orig_name": "x.png", "meta": {"_type": "gradio.FileData"}}
            with pytest.raises(Exception):
                client.predict({"text": "look", "files": [file]}, **GREEDY, api_name="/chat")
    finally:
        internal.shutdown()
    assert hits == [], "the server fetched an internal address"
    conversation, *_ = client.predict({"text": "Hi", "files": []}, **GREEDY, api_name="/chat")
    assert last_reply(conversation)


def test_no_user_text_reaches_the_logs(server, tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    client = Client(server, verbose=False, download_files=str(tmp_path))
    client.predict({"text": "my-private-marker-7731", "files": []}, **GREEDY, api_name="/chat")
    assert "my-private-marker-7731" not in caplog.text


def test_a_full_queue_says_busy_instead_of_hanging(instruct_backend, tmp_path):
    from ui import build_demo

    demo = build_demo(instruct_backend)
    demo.queue(default_concurrency_limit=1, max_size=1).launch(prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        clients = [Client(demo.local_url, verbose=False, download_files=str(tmp_path / str(i))) for i in range(3)]
        running = clients[0].submit({"text": "Long", "files": []}, max_tokens=4000, api_name="/chat")
        for outputs in running:
            if assistant_texts(outputs[0]):
                break  # the engine is busy with this one
        waiting = clients[1].submit({"text": "Next", "files": []}, **GREEDY, api_name="/chat")
        deadline = time.monotonic() + 10
        while waiting.status().code.name != "IN_QUEUE" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting.status().code.name == "IN_QUEUE"
        with pytest.raises(Exception, match="(?i)queue is full"):
            clients[2].predict({"text": "One too many", "files": []}, **GREEDY, api_name="/chat")
        running.cancel()
        assert last_reply(waiting.result()[0])  # the waiting one still gets its answer
    finally:
        demo.close()


def test_a_crafted_or_broken_conversation_archive_is_refused_or_contained(tmp_path):
    import json
    import zipfile

    from ui.chat import archive

    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(media.MediaError, match="broken.zip: not a readable zip archive"):
        archive.import_conversation(str(broken), str(tmp_path))
    crafted = tmp_path / "crafted.zip"
    with zipfile.ZipFile(crafted, "w") as zf:
        zf.writestr("../../escape.wav", b"RIFF")
        zf.writestr("conversation.json", json.dumps({"format": archive.FORMAT, "turns": [
            {"role": "user", "parts": [{"type": "audio", "file": "../../escape.wav"}]}]}))
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    with pytest.raises(media.MediaError, match="a path that leads out of the folder"):
        archive.import_conversation(str(crafted), str(unpacked))
    assert not list(unpacked.iterdir()) and not (tmp_path.parent / "escape.wav").exists()
