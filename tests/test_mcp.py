"""`python app.py --mcp` as a user starts it, driven by the real mcp client: every tool, with files given as data:
URIs, spoken replies as WAV URLs, and the tool list an agent reads (names, descriptions, parameters)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
import soundfile

TOOLS = ["chat", "chat_retry", "chat_compare", "chat_export", "chat_import", "caption_file", "caption_batch",
         "evaluate", "evaluate_rate", "evaluate_export", "evaluate_import"]
SHORT = {"temperature": 0, "max_tokens": 8}
CALL_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def app_url():
    """One `app.py -c tiny --mcp` for the module."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = subprocess.Popen([sys.executable, "app.py", "-c", "tiny", "--mcp", "--server-port", str(port)],
                           cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert app.poll() is None, f"the app exited: {app.stderr.read()[-2000:]}"
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the app did not start in 180 s"
                time.sleep(0.5)
        yield url
    finally:
        app.terminate()
        app.wait(timeout=30)


async def _session(url: str, work, headers: dict | None = None):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url + "gradio_api/mcp/", headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def call(url: str, tool: str, arguments: dict, error: bool = False) -> list[str]:
    """The tool's answer, one text per output (a file's is its URL); with ``error``, the error's text."""
    async def work(session):
        return await session.call_tool(tool, arguments, read_timeout_seconds=timedelta(seconds=CALL_TIMEOUT_S))

    result = asyncio.run(asyncio.wait_for(_session(url, work), CALL_TIMEOUT_S + 30))
    assert result.isError == error, result.content
    assert all(content.type == "text" for content in result.content)
    return [content.text for content in result.content]


def list_tools(url: str) -> dict:
    async def work(session):
        return await session.list_tools()

    return {tool.name: tool for tool in asyncio.run(asyncio.wait_for(_session(url, work), CALL_TIMEOUT_S)).tools}


def data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def fetch(url: str) -> bytes:
    assert url.startswith("http://127.0.0.1:"), url
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def exported_turns(url: str, conversation_id: str) -> list[dict]:
    (zip_url,) = call(url, "chat_export", {"conversation_id": conversation_id})
    with zipfile.ZipFile(io.BytesIO(fetch(zip_url))) as archive:
        return json.loads(archive.read("conversation.json"))["turns"]


def test_every_tool_has_a_clear_name_a_description_and_described_parameters(app_url):
    """The tools an agent reads: named for what they do, described by what they do (not Gradio's boilerplate),
    every parameter described, and plain schemas (no $defs the client can't resolve); no UI event is a tool."""
    by_name = list_tools(app_url)
    assert list(by_name) == TOOLS
    for tool in by_name.values():
        assert len(tool.description) > 60 and not tool.description.startswith((" ", "If a user")), tool.name
        assert "$defs" not in json.dumps(tool.inputSchema) and "$ref" not in json.dumps(tool.inputSchema), tool.name
        for name, parameter in tool.inputSchema["properties"].items():
            assert parameter.get("description"), f"{tool.name}.{name}"
    assert by_name["chat"].description.startswith("Talk with Qwen3-Omni")
    assert "Returns: reply: " in by_name["chat"].description
    chat = by_name["chat"].inputSchema["properties"]
    assert chat["message"]["type"] == "string" and chat["files"]["oneOf"][1]["items"]["type"] == "string"
    assert chat["speaker"]["enum"] == ["aiden", "chelsie", "ethan"]
    assert by_name["caption_file"].description.startswith("Caption one audio or video file")
    assert by_name["evaluate_import"].inputSchema["required"] == ["file"]


def test_chat_answers_text_and_goes_on_with_the_conversation(app_url):
    reply, conversation_id, speech, _notes = call(app_url, "chat", {"message": "Hello", **SHORT})
    assert reply.strip() and conversation_id and speech == ""  # text only unless speech is asked for
    again, same_id, _, _ = call(app_url, "chat", {"message": "And then?", "conversation_id": conversation_id, **SHORT})
    assert again.strip() and same_id == conversation_id
    turns = exported_turns(app_url, conversation_id)
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[3]["parts"][0]["text"] == again


def test_chat_takes_files_as_data_uris_and_urls(app_url, image_path, speech_path):
    reply, conversation_id, _, _ = call(app_url, "chat", {
        "message": "What do you see and hear?",
        "files": [data_uri(image_path, "image/png"), data_uri(speech_path, "audio/wav")], **SHORT})
    assert reply.strip()
    first = exported_turns(app_url, conversation_id)[0]
    assert [part["type"] for part in first["parts"]] == ["image", "audio", "text"]
    # A URL is fetched by Gradio, through its guard against requests to the server's own network.
    (refused,) = call(app_url, "chat", {"message": "And this?", "files": [app_url + "favicon.ico"], **SHORT},
                      error=True)
    assert "127.0.0.1" in refused
    (refused,) = call(app_url, "chat", {"message": "And this?", "files": ["/etc/hostname"], **SHORT}, error=True)
    assert "provide a url" in refused


def test_a_spoken_reply_comes_back_as_a_wav_url(app_url):
    reply, _, speech, _ = call(app_url, "chat", {"message": "Say something", "speak": True, "speaker": "chelsie",
                                                 **SHORT})
    assert reply.strip() and speech.endswith(".wav")
    samples, rate = soundfile.read(io.BytesIO(fetch(speech)))
    assert rate == 24_000 and samples.size > 0


def test_a_returned_file_is_at_the_address_the_agent_called(app_url):
    """Behind a proxy (a Space, a reverse proxy) the agent reaches the app at the proxy's address, not at the
    server's own 127.0.0.1 (the tools' answers come through Gradio's client of that address: the caller's headers
    go with it)."""
    async def work(session):
        return await session.call_tool("chat", {"message": "Hi", "speak": True, **SHORT},
                                       read_timeout_seconds=timedelta(seconds=CALL_TIMEOUT_S))

    result = asyncio.run(asyncio.wait_for(_session(app_url, work, {"X-Forwarded-Host": "omni.example.org",
                                                                   "X-Forwarded-Proto": "https"}),
                                          CALL_TIMEOUT_S + 30))
    assert not result.isError, result.content
    speech = result.content[2].text
    assert speech.startswith("https://omni.example.org/gradio_api/file=") and speech.endswith(".wav")
    assert fetch(speech.replace("https://omni.example.org/", app_url))[:4] == b"RIFF"  # served there, by the app


def test_chat_retry_replaces_the_last_reply(app_url):
    first, conversation_id, _, _ = call(app_url, "chat", {"message": "Hello", **SHORT})
    reply, speech, _ = call(app_url, "chat_retry", {"conversation_id": conversation_id, "seed": 3, "speak": True,
                                                    "max_tokens": 8})
    assert reply.strip() and speech.endswith(".wav")
    turns = exported_turns(app_url, conversation_id)
    assert [turn["role"] for turn in turns] == ["user", "assistant"] and turns[1]["parts"][0]["text"] == reply


def test_chat_compare_answers_twice_and_leaves_the_conversation(app_url):
    first, conversation_id, _, _ = call(app_url, "chat", {"message": "Hello", **SHORT})
    text_a, speech_a, text_b, speech_b = call(app_url, "chat_compare", {
        "conversation_id": conversation_id, "speak": True, "speaker_a": "aiden", "speaker_b": "ethan", **SHORT})
    assert text_a.strip() and text_b.strip()
    for speech in (speech_a, speech_b):
        assert soundfile.read(io.BytesIO(fetch(speech)))[0].size > 0
    assert [turn["parts"][0]["text"] for turn in exported_turns(app_url, conversation_id)] == ["Hello", first]


def test_chat_export_and_import_go_on_from_an_exported_conversation(app_url):
    first, conversation_id, _, _ = call(app_url, "chat", {"message": "Hello", "speak": True, **SHORT})
    (zip_url,) = call(app_url, "chat_export", {"conversation_id": conversation_id})
    exported = fetch(zip_url)
    with zipfile.ZipFile(io.BytesIO(exported)) as archive:
        assert any(name.endswith(".wav") for name in archive.namelist())  # the spoken reply goes with it
    imported_id, transcript = call(app_url, "chat_import", {
        "file": "data:application/zip;base64," + base64.b64encode(exported).decode()})
    assert imported_id != conversation_id
    assert [(turn["role"], turn["text"]) for turn in json.loads(transcript)] == [("user", "Hello"),
                                                                                ("assistant", first)]
    reply, same_id, _, _ = call(app_url, "chat", {"message": "Go on", "conversation_id": imported_id, **SHORT})
    assert reply.strip() and same_id == imported_id
    assert len(exported_turns(app_url, imported_id)) == 4


def test_an_unknown_conversation_is_named_in_the_error(app_url):
    (error,) = call(app_url, "chat", {"message": "Hi", "conversation_id": "not-an-id", **SHORT}, error=True)
    assert error.startswith("No conversation not-an-id") and "chat and no conversation_id" in error
    (error,) = call(app_url, "chat_export", {"conversation_id": "not-an-id"}, error=True)
    assert error.startswith("No conversation not-an-id")


def test_caption_file_says_what_its_parameters_mean_and_captions_a_data_uri(app_url, speech_path):
    schema = list_tools(app_url)["caption_file"].inputSchema
    assert schema["required"] == ["file"]
    assert schema["properties"]["file"]["description"].startswith("the audio or video file, as an http(s) URL")
    assert schema["properties"]["instruction"]["description"].startswith("an extra instruction")
    (caption,) = call(app_url, "caption_file", {"file": data_uri(speech_path, "audio/wav"), "temperature": 0,
                                                "max_tokens": 16})
    assert caption.strip()  # the tiny random model's words: any, but some


def test_caption_batch_captions_every_file_and_every_file_in_a_zip(app_url, speech_path, tmp_path):
    with zipfile.ZipFile(tmp_path / "clips.zip", "w") as clips:
        clips.write(speech_path, "one.wav")
        clips.write(speech_path, "two.wav")
    (table,) = call(app_url, "caption_batch", {
        "files": [data_uri(speech_path, "audio/wav"), data_uri(tmp_path / "clips.zip", "application/zip")],
        "temperature": 0, "max_tokens": 8})
    captions = json.loads(table)
    assert [row["file"] for row in captions] == ["file.wav", "one.wav", "two.wav"]  # a data: URI has no name
    assert all(row["caption"].strip() and not row["error"] and row["duration_s"] > 0 for row in captions)


@pytest.fixture(scope="module")
def evaluated(app_url, speech_path, tmp_path_factory):
    """A run of two rows (one with an audio file, given in a zip) through set-ups A and B, A spoken."""
    work = tmp_path_factory.mktemp("sheet")
    (work / "prompts.csv").write_text("id,prompt,media\nrow-1,What is said?,clip.wav\nrow-2,Hello.,\n")
    with zipfile.ZipFile(work / "media.zip", "w") as media:
        media.write(speech_path, "clip.wav")
    return call(app_url, "evaluate", {
        "files": [data_uri(work / "prompts.csv", "text/csv"), data_uri(work / "media.zip", "application/zip")],
        "speak_a": True, "compare_b": True, "speaker_b": "aiden", "temperature_a": 0, "max_tokens_a": 8,
        "max_tokens_b": 8})


def test_evaluate_answers_every_row_with_both_setups(evaluated):
    results, run_id, status = evaluated
    rows = json.loads(results)
    assert [(row["id"], row["media"]) for row in rows] == [("row-1", "clip.wav"), ("row-2", "")]
    assert all(row["answer A"].strip() and row["answer B"].strip() and row["status"].startswith("✓") for row in rows)
    assert run_id and status.startswith("Every row is done")


def test_evaluate_rate_keeps_a_rating_and_refuses_what_the_run_has_not(app_url, evaluated):
    run_id = evaluated[1]
    (row,) = call(app_url, "evaluate_rate", {"run_id": run_id, "row_id": "row-1", "rating": "A better",
                                             "comment": "clearer"})
    assert json.loads(row) | {"rating": "A better", "comment": "clearer"} == json.loads(row)
    (error,) = call(app_url, "evaluate_rate", {"run_id": run_id, "row_id": "row-9", "rating": "tie"}, error=True)
    assert error == "This run has no row row-9."
    (error,) = call(app_url, "evaluate_rate", {"run_id": run_id, "row_id": "row-1", "rating": "good"}, error=True)
    assert error == "This run's rows are rated A better, B better, tie, both wrong."


def test_evaluate_export_and_import_give_the_run_back(app_url, evaluated):
    run_id = evaluated[1]
    call(app_url, "evaluate_rate", {"run_id": run_id, "row_id": "row-2", "rating": "tie"})
    csv_url, jsonl_url, zip_url = call(app_url, "evaluate_export", {"run_id": run_id})
    assert csv_url.endswith("results.csv") and b"row-2" in fetch(csv_url)
    records = [json.loads(line) for line in fetch(jsonl_url).decode().splitlines()]
    assert [(r["id"], r["rating"]) for r in records] == [("row-1", records[0]["rating"]), ("row-2", "tie")]
    exported = fetch(zip_url)
    with zipfile.ZipFile(io.BytesIO(exported)) as archive:
        assert len([name for name in archive.namelist() if name.endswith(".wav")]) == 2  # A spoke, B didn't
    results, imported_id, status = call(app_url, "evaluate_import", {
        "file": "data:application/zip;base64," + base64.b64encode(exported).decode()})
    assert imported_id != run_id and status.startswith("Imported 2 rows")
    assert [row["rating"] for row in json.loads(results)][1] == "tie"
    # Every row is answered: evaluate on it would start the run over, so it says so instead.
    (error,) = call(app_url, "evaluate", {"run_id": imported_id}, error=True)
    assert error.startswith(f"Run {imported_id} has every row answered")


def test_the_mcp_fixes_stay_out_on_another_gradio_and_say_so(monkeypatch, caplog):
    import gradio
    from gradio.mcp import GradioMCPServer

    from ui import gradio_fixes

    monkeypatch.setattr(GradioMCPServer, "fixed_for_the_app", False)
    monkeypatch.setattr(gradio, "__version__", "6.99.0")
    assert gradio_fixes._fix_the_mcp_server() is False
    assert "Gradio 6.99.0: the fixes for the MCP server (ui/gradio_fixes.py) not applied" in caplog.text


def test_conversations_are_kept_by_id_one_call_at_a_time_and_old_ones_go(monkeypatch):
    import gradio as gr

    from ui.tools import common

    clock = [0.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: clock[0])
    closed = []
    store = common.Store(closed.append, ttl_s=60, limit=2, unknown="tools.no_conversation")
    first, second = store.add("first"), store.add("second")
    assert store.take(second, str) == "second"
    with pytest.raises(gr.Error, match="still answering another call"):
        store.take(second, str)
    store.add("third")  # beyond the limit: the least recently used idle one goes
    assert closed == ["first"]
    with pytest.raises(gr.Error, match=f"No conversation {first}: no such id"):
        store.take(first, str)
    store.give_back(second)
    clock[0] = 61
    store.add("fourth")
    assert closed == ["first", "second", "third"]  # unused for ttl_s


def test_a_file_parameter_takes_only_what_gradio_took_in_as_a_file():
    """A file marked as one was checked by Gradio (an upload of this app); anything else could name any file of the
    server, and is refused."""
    import gradio as gr

    from ui.tools.common import path_of

    assert path_of({"path": "/tmp/gradio/x/clip.wav", "meta": {"_type": "gradio.FileData"}}, str).endswith("clip.wav")
    for unchecked in ({"path": "/etc/hostname"}, "/etc/hostname", None):
        with pytest.raises(gr.Error, match="Give a file as an http"):
            path_of(unchecked, str)


def test_the_captioner_serves_the_caption_tools(captioner_backend, speech_path):
    from ui import build_captioner_demo, queue_settings

    demo = build_captioner_demo(captioner_backend)
    demo.queue(**queue_settings(captioner_backend.info)).launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, show_error=True, mcp_server=True)
    try:
        assert list(list_tools(demo.local_url)) == ["caption_file", "caption_batch"]
        (table,) = call(demo.local_url, "caption_batch", {"files": [data_uri(speech_path, "audio/wav")],
                                                          "max_tokens": 16})
        assert json.loads(table)[0]["caption"].strip()
    finally:
        demo.close()
