"""The app through its public API: a launched server driven by gradio_client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
from gradio_client import Client, handle_file

from backends.events import TextDelta
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from ui import build_demo, queue_settings
from ui.i18n import I18N

GREEDY = {"temperature": 0, "max_tokens": 12}


def launch(backend, feedback_file=None, **settings):
    demo = build_demo(backend, feedback_file)
    demo.queue(**queue_settings(backend.info)).launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True, show_error=True, i18n=I18N,
        **settings
    )
    return demo


@pytest.fixture(scope="module")
def server(instruct_backend):
    demo = launch(instruct_backend)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def captioner_server(captioner_backend):
    demo = launch(captioner_backend)
    yield demo.local_url
    demo.close()


def assistant_texts(conversation) -> list[str]:
    return [part["text"] for m in conversation if m["role"] == "assistant"
            for part in m["content"] if part.get("type") == "text"]


def audio_files(conversation) -> list[str]:
    return [part["file"] for m in conversation if m["role"] == "assistant"
            for part in m["content"] if part.get("type") == "file"]


def last_reply(conversation) -> str:
    """The text of the assistant's answer to the last user message (notes after it excluded)."""
    last_user = max(i for i, m in enumerate(conversation) if m["role"] == "user")
    return assistant_texts(conversation[last_user + 1 :])[0]


def direct_reply(backend, turns, **kwargs) -> str:
    async def run():
        request = ChatRequest(turns=tuple(turns), sampling=Sampling(temperature=0, max_new_tokens=12), **kwargs)
        return "".join([e.text async for e in backend.stream(request) if isinstance(e, TextDelta)])

    return asyncio.run(run())


def test_a_multimodal_turn_streams_text_and_returns_playable_speech(server, speech_path, image_path, tmp_path):
    client = Client(server, verbose=False, download_files=str(tmp_path))
    job = client.submit({"text": "What is in the picture and the recording?",
                         "files": [handle_file(str(image_path)), handle_file(str(speech_path))]},
                        speaker="aiden", **GREEDY, api_name="/chat")
    updates = [outputs[0] for outputs in job]
    reply_lengths = [len("".join(assistant_texts(c))) for c in updates]
    assert len(set(reply_lengths)) > 2, "the reply text should grow over several updates"
    conversation, _message, status, *_ = job.outputs()[-1]
    files = audio_files(conversation)
    assert len(files) == 1
    samples, rate = soundfile.read(files[0])
    assert rate == 24_000 and 0 < len(samples) <= 25 * 1920  # capped at 2 s in the fixture
    assert "reply tokens" in status and "speech" in status


def test_the_second_turn_sees_the_first_even_with_reply_audio_in_history(server, instruct_backend, image_path,
                                                                        tmp_path):
    client = Client(server, verbose=False, download_files=str(tmp_path))
    first, *_ = client.predict({"text": "Remember this image.", "files": [handle_file(str(image_path))]},
                               **GREEDY, api_name="/chat")
    assert audio_files(first), "the first reply's audio sits in the history"
    second, *_ = client.predict({"text": "What did I show you?", "files": []}, **GREEDY, api_name="/chat")
    first_reply = last_reply(first)
    # What the model says to the whole conversation, asked directly: equal only if the history reached it.
    turns = [Turn.user(MediaPart("image", str(image_path)), "Remember this image."), Turn.assistant(first_reply),
             Turn.user("What did I show you?")]
    with_history = direct_reply(instruct_backend, turns)
    without_history = direct_reply(instruct_backend, turns[-1:])
    assert with_history != without_history
    assert last_reply(second) == with_history.strip()


def test_text_only_mode_and_clear(server, tmp_path):
    client = Client(server, verbose=False, download_files=str(tmp_path))
    conversation, *_ = client.predict({"text": "Hi", "files": []}, speak=False, **GREEDY, api_name="/chat")
    assert assistant_texts(conversation) and not audio_files(conversation)
    cleared, *_ = client.predict(api_name="/clear")
    assert cleared == []


def test_thinker_only_checkpoint_answers_through_the_app(captioner_server, speech_path, tmp_path):
    client = Client(captioner_server, verbose=False, download_files=str(tmp_path))
    conversation, *_ = client.predict({"text": "", "files": [handle_file(str(speech_path))]}, **GREEDY,
                                      api_name="/chat")
    assert assistant_texts(conversation) and not audio_files(conversation)


def test_an_unreadable_file_is_named_and_the_message_comes_back(server, image_path, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    client = Client(server, verbose=False, download_files=str(tmp_path))
    message = {"text": "Look at both", "files": [handle_file(str(image_path)), handle_file(str(broken))]}
    conversation, returned, *_ = client.predict(message, **GREEDY, api_name="/chat")
    assert any("broken.mp4" in text for text in assistant_texts(conversation))
    returned = returned.get("value", returned)  # an update dict: the textbox is enabled again too
    assert returned["text"] == "Look at both" and len(returned["files"]) == 2  # nothing typed or attached is lost
    after, *_ = client.predict({"text": "Hello", "files": []}, **GREEDY, api_name="/chat")
    assert last_reply(after)  # the next turn answers


def test_stop_ends_the_reply_and_the_next_turn_works(server, instruct_backend, tmp_path):
    client = Client(server, verbose=False, download_files=str(tmp_path))
    job = client.submit({"text": "Tell me a long story", "files": []}, max_tokens=4000, api_name="/chat")
    for outputs in job:
        if assistant_texts(outputs[0]):
            break
    job.cancel()
    assert instruct_backend._lock.acquire(timeout=5), "the engine kept generating after Stop"
    instruct_backend._lock.release()
    conversation, *_ = client.predict({"text": "Short answer please", "files": []}, **GREEDY, api_name="/chat")
    assert last_reply(conversation)


def test_retry_regenerates_the_last_reply_with_another_speaker(server, tmp_path):
    client = Client(server, verbose=False, download_files=str(tmp_path))
    first, *_ = client.predict({"text": "Say something", "files": []}, speaker="chelsie", temperature=0.9, seed=3,
                               max_tokens=8, api_name="/chat")
    again, *_ = client.predict(speaker="aiden", temperature=0.9, seed=3, max_tokens=8, api_name="/retry")
    assert [m["role"] for m in again].count("user") == [m["role"] for m in first].count("user") == 1
    assert last_reply(again) == last_reply(first)  # same seed, same text …
    first_audio, retry_audio = (soundfile.read(audio_files(c)[0])[0] for c in (first, again))
    assert first_audio.shape != retry_audio.shape or (first_audio != retry_audio).any()  # … another voice


def test_a_turn_that_fails_before_any_text_is_dropped_and_the_message_comes_back(server, instruct_backend,
                                                                                 monkeypatch, tmp_path):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    client = Client(server, verbose=False, download_files=str(tmp_path))
    first, *_ = client.predict({"text": "Hello", "files": []}, **GREEDY, api_name="/chat")
    monkeypatch.setattr(instruct_backend.model.thinker, "generate", out_of_memory)
    failed, returned, *_ = client.predict({"text": "Describe this long video", "files": []}, **GREEDY,
                                          api_name="/chat")
    assert any("out of memory" in text for text in assistant_texts(failed))
    assert [m["role"] for m in failed].count("user") == 1  # the failed turn left the conversation …
    assert returned.get("value", returned)["text"] == "Describe this long video"  # … and went back to the box
    monkeypatch.undo()
    after, *_ = client.predict({"text": "Hi again", "files": []}, **GREEDY, api_name="/chat")
    assert [m["role"] for m in after].count("user") == 2 and last_reply(after)


def test_cancel_then_clear_starts_a_clean_conversation(server, instruct_backend, tmp_path):
    # What the Clear button does in a browser: cancel the running reply (the page knows its event), then clear.
    client = Client(server, verbose=False, download_files=str(tmp_path))
    client.predict({"text": "First", "files": []}, **GREEDY, api_name="/chat")
    job = client.submit({"text": "Tell me a long story", "files": []}, max_tokens=4000, api_name="/chat")
    for outputs in job:
        if assistant_texts(outputs[0])[1:]:
            break
    job.cancel()
    cleared, *_ = client.predict(api_name="/clear")
    assert cleared == []
    assert instruct_backend._lock.acquire(timeout=5), "Clear should stop the running reply"
    instruct_backend._lock.release()
    fresh, *_ = client.predict({"text": "New topic", "files": []}, **GREEDY, api_name="/chat")
    assert [m["content"][0].get("text") for m in fresh if m["role"] == "user"] == ["New topic"]


def test_a_thinking_checkpoint_shows_its_reasoning_folded_apart_from_the_answer(captioner_backend, tmp_path):
    from backends import build_backend
    from backends.checkpoints import Checkpoint

    # The Thinking checkpoint has the captioner's shape (thinker only); the kind comes from its name.
    thinking = Checkpoint("Qwen3-Omni-30B-A3B-Thinking (tiny)", captioner_backend.checkpoint.path, True)
    with build_backend("transformers", thinking) as backend:
        assert backend.info.kind == "thinking" and not backend.info.can_speak
        demo = launch(backend)
        try:
            client = Client(demo.local_url, verbose=False, download_files=str(tmp_path))
            conversation, *_ = client.predict({"text": "Why is the sky blue?", "files": []}, **GREEDY,
                                              api_name="/chat")
        finally:
            demo.close()
    reasoning = [m for m in conversation if m["role"] == "assistant" and (m.get("metadata") or {}).get("title")]
    assert reasoning and reasoning[0]["metadata"]["title"] == "Thinking"
    assert reasoning[0]["content"][0]["text"]  # the random model never closes </think>: all of it is reasoning


def test_a_conversation_exports_to_a_zip_and_imports_back(server, image_path, tmp_path):
    import json
    import zipfile

    client = Client(server, verbose=False, download_files=str(tmp_path))
    first, *_ = client.predict({"text": "What is this?", "files": [handle_file(str(image_path))]}, **GREEDY,
                               api_name="/chat")
    exported = client.predict(api_name="/export")
    exported = exported.get("value", exported) if isinstance(exported, dict) else exported
    with zipfile.ZipFile(exported) as archive:
        document = json.loads(archive.read("conversation.json"))
        names = archive.namelist()
    assert [t["role"] for t in document["turns"]] == ["user", "assistant"]
    assert document["settings"]["model"] == "tiny" and document["settings"]["sampling"]["temperature"] == 0
    kinds = [p["type"] for t in document["turns"] for p in t["parts"]]
    assert kinds == ["image", "text", "text", "audio"] and sum(n.startswith("media/") for n in names) == 2

    client.predict(api_name="/clear")
    restored, status = client.predict(handle_file(exported), api_name="/import")
    assert status == "Imported 2 messages."
    assert last_reply(restored) == last_reply(first) and audio_files(restored)  # notes are not part of it
    after, *_ = client.predict({"text": "And now?", "files": []}, **GREEDY, api_name="/chat")
    assert [m["role"] for m in after].count("user") == 3  # the imported image, its question, and the new one


def test_compare_replays_the_last_turn_with_two_speakers_side_by_side(server, tmp_path):
    client = Client(server, verbose=False, download_files=str(tmp_path))
    before, *_ = client.predict({"text": "Say something", "files": []}, **GREEDY, api_name="/chat")
    text_a, audio_a, text_b, audio_b = client.predict(
        speaker_a="chelsie", seed_a=3, speaker_b="aiden", seed_b=3, temperature=0.9, max_tokens=8, api_name="/compare")
    assert text_a and text_a == text_b, "same seed, same text"
    first, second = soundfile.read(audio_a)[0], soundfile.read(audio_b)[0]
    assert first.shape != second.shape or (first != second).any(), "another speaker, another voice"
    after, *_ = client.predict({"text": "Next", "files": []}, **GREEDY, api_name="/chat")
    assert [m["role"] for m in after].count("user") == 2  # comparing left the conversation as it was


def test_messages_made_while_the_app_runs_follow_the_browsers_language(server, tmp_path):
    """Errors, chat notes and the status line come in the language of the request's Accept-Language
    (a browser sends it); an API client that sends none gets English."""
    chinese = Client(server, verbose=False, download_files=str(tmp_path),
                     headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    english = Client(server, verbose=False, download_files=str(tmp_path))
    with pytest.raises(Exception, match="还没有可以重新生成的回复。"):
        chinese.predict(**GREEDY, api_name="/retry")
    with pytest.raises(Exception, match="Nothing to retry yet."):
        english.predict(**GREEDY, api_name="/retry")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    failed, *_ = chinese.predict({"text": "看看这个", "files": [handle_file(str(broken))]}, **GREEDY, api_name="/chat")
    assert "⚠️ broken.mp4：无法读取的视频" in assistant_texts(failed)[-1]
    _, _, status, *_ = chinese.predict({"text": "你好", "files": []}, **GREEDY, api_name="/chat")
    assert "首个词元" in status and "词元/秒" in status and "tok/s" not in status
    _, _, status, *_ = english.predict({"text": "Hello", "files": []}, **GREEDY, api_name="/chat")
    assert "first token" in status and "reply tokens" in status


def test_every_warm_up_line_the_engine_shows_is_in_chinese_too():
    from backends.transformers.backend import (COMPILING_TALKER, COMPILING_THINKER, LOADING_WEIGHTS,
                                               WAITING_TO_COMPILE, loading_progress)
    from messages import Message

    shown = [LOADING_WEIGHTS, WAITING_TO_COMPILE, COMPILING_TALKER, COMPILING_THINKER,
             *(loading_progress(done / 313) for done in range(314))]
    for step in shown:  # the header renders the step by its code, in the page's language
        line = Message("warm_up.header", {"what": step}).text("zh")
        assert line.startswith("⏳ **预热中：**") and step.text("zh") in line and step.text("zh") != step.text("en")


def test_session_files_left_at_shutdown_go_with_the_process(tmp_path):
    # A session still open when the app stops never gets its end-of-session cleanup.
    script = ("import tempfile, sys; tempfile.tempdir = sys.argv[1]\n"
              "from ui.chat.session import ChatSession\n"
              "session = ChatSession()\n"
              "open(session.replies_folder() + '/reply.wav', 'wb').write(b'RIFF')\n"
              "print(session.folder)\n")
    folder = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    assert folder.startswith(str(tmp_path))  # it was made where the app keeps its files
    assert not list(tmp_path.iterdir())


def test_a_long_session_keeps_only_the_apps_own_components(instruct_backend, tmp_path):
    """Gradio 6.31 kept a copy of an output for each property update (gr.update, gr.skip) that a value
    followed, for as long as the session lived (ui/gradio_fixes.py)."""
    demo = launch(instruct_backend)
    try:
        client = Client(demo.local_url, verbose=False, download_files=str(tmp_path))
        for turn in range(3):
            client.predict({"text": f"Turn {turn}", "files": []}, **GREEDY, api_name="/chat")
        client.predict(api_name="/clear")
        conversation, *_ = client.predict({"text": "Again", "files": []}, **GREEDY, api_name="/chat")
        assert assistant_texts(conversation)  # the updates still reach the page
        session = demo.state_holder.session_data[client.session_hash]
        assert set(session.blocks_config.blocks) == set(demo.blocks)
    finally:
        demo.close()



def test_without_mcp_the_app_serves_no_mcp_endpoint(server):
    """MCP is opt-in: without --mcp the address MCP clients post to isn't there (the mcp client then reports
    "Session terminated")."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(server + "gradio_api/mcp/", data=b"{}", method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 404


def test_mcp_is_refused_where_gradios_mcp_server_cant_serve(monkeypatch):
    import cli
    from mcp.server import Server

    monkeypatch.delenv("GRADIO_MCP_SERVER", raising=False)
    assert cli.launch_settings(cli.parse_args(["--mcp"]))["mcp_server"] is True
    assert cli.launch_settings(cli.parse_args([]))["mcp_server"] is False
    monkeypatch.setenv("GRADIO_MCP_SERVER", "true")  # Gradio's own switch turns it on too
    assert cli.parse_args([]).mcp
    cli.check_mcp_server(cli.parse_args(["--mcp"]))  # this environment serves it
    with pytest.raises(SystemExit, match="doesn't go with a login"):
        cli.check_mcp_server(cli.parse_args(["--mcp", "--auth", "bob:builder"]))
    monkeypatch.delattr(Server, "call_tool")  # mcp 2, as requirements-vllm.txt holds
    with pytest.raises(SystemExit, match=r"--mcp needs mcp<2 .* this environment has mcp 1\."):
        cli.check_mcp_server(cli.parse_args(["--mcp"]))
