"""The pure pieces of the backend contract: reasoning split, reply accumulation, CLI mapping."""

from __future__ import annotations

import numpy as np
import pytest

import cli
from backends.events import AudioChunk, Done, Error, Metrics, ReasoningDelta, TextDelta
from backends.reasoning import ReasoningSplitter
from messages import Message
from ui.reply import ReplyState


def _split(pieces: list[str], thinking: bool) -> tuple[str, str]:
    splitter = ReasoningSplitter(starts_in_reasoning=thinking)
    events = [e for piece in pieces for e in splitter.feed(piece)] + splitter.flush()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return reasoning, text


@pytest.mark.parametrize("pieces", [
    ["<think>two plus two</think>\n\nFour."],
    ["<th", "ink>two plus", " two</th", "ink>", "\n\nFour."],
    list("<think>two plus two</think>\n\nFour."),
])
def test_reasoning_is_split_from_the_reply_even_when_tags_arrive_in_pieces(pieces):
    assert _split(pieces, thinking=False) == ("two plus two", "Four.")


def test_thinking_checkpoint_starts_inside_reasoning_without_an_opening_tag():
    assert _split(["weigh it", "</think>Yes."], thinking=True) == ("weigh it", "Yes.")


def test_a_think_tag_in_the_middle_of_a_reply_is_plain_text():
    assert _split(["Use <think> tags like this."], thinking=False) == ("", "Use <think> tags like this.")


def test_reply_state_builds_messages_a_user_can_read():
    reply = ReplyState()
    for event in [ReasoningDelta("hmm"), TextDelta("Hel"), TextDelta("lo"),
                  AudioChunk(np.zeros(1920, np.float32)), AudioChunk(np.ones(3840, np.float32)),
                  Error(Message("speech.failed_reply_kept", {"cause": "RuntimeError: boom"}), "speech"),
                  Metrics(time_to_first_token_s=0.1, output_tokens=2, tokens_per_s=20.0, audio_seconds=0.24),
                  Done("stop")]:
        reply.handle(event)
    messages = reply.messages("/tmp/reply.wav")
    assert messages[0]["metadata"]["title"] == "Thinking" and messages[0]["metadata"]["status"] == "done"
    assert messages[1]["content"] == "Hello"
    assert messages[2]["content"]["path"] == "/tmp/reply.wav"
    assert "Speech generation failed (RuntimeError: boom)" in messages[3]["content"]
    assert reply.audio().shape == (5760,)
    assert "first token 0.10 s" in reply.status() and "20.0 tok/s" in reply.status()


def test_input_errors_are_told_apart_from_failures_after_text():
    refused = ReplyState()
    unreadable = Message("media.file_problem", {"file": "clip.wav", "problem": Message("media.unreadable_audio")})
    refused.handle(Error(unreadable, "input"))
    refused.handle(Done("error"))
    assert refused.failed_without_reply
    partial = ReplyState()
    partial.handle(TextDelta("Half an ans"))
    partial.handle(Error(Message("engine.generation_failed", {"cause": "boom"})))
    assert not partial.failed_without_reply and partial.messages()[0]["content"] == "Half an ans"


def test_official_demo_command_lines_map_onto_ours():
    args = cli.parse_args(["-c", "Qwen/Qwen3-Omni-30B-A3B-Instruct", "--use-transformers", "--generate-audio",
                           "--flash-attn2"])
    assert args.checkpoint == "Qwen/Qwen3-Omni-30B-A3B-Instruct"
    assert args.backend == "transformers" and args.attn_implementation == "flash_attention_2"
    assert cli.backend_options(args, random_weights=False)["audio_output"] is True
    args = cli.parse_args(["--checkpoint-path", "/models/omni", "--server-port", "8901", "--no-audio", "--cpu-only"])
    assert args.checkpoint == "/models/omni" and args.server_port == 8901
    options = cli.backend_options(args, random_weights=True)
    assert options["audio_output"] is False and options["device"] == "cpu"
    assert not cli.parse_args([]).share  # share links are opt-in


def test_each_backend_takes_its_settings_from_the_command_line():
    from backends.openai.backend import OpenAIOptions
    from backends.transformers.options import TransformersOptions
    from backends.vllm.backend import VLLMOptions

    args = cli.parse_args(["--backend", "vllm", "-tp", "2", "--gpu-memory-utilization", "0.8", "--max-num-seqs", "16",
                           "--limit-mm-per-prompt", '{"image": 5, "audio": 2, "video": 1}'])
    engine = VLLMOptions(**cli.backend_options(args, random_weights=False))
    assert (engine.tensor_parallel_size, engine.gpu_memory_utilization, engine.max_num_seqs) == (2, 0.8, 16)
    assert engine.limit_mm_per_prompt == {"image": 5, "audio": 2, "video": 1} and engine.max_model_len == 32768
    assert not engine.enforce_eager
    local = TransformersOptions(**cli.backend_options(cli.parse_args(["--no-compile", "--max-gpu-memory", "48"]), False))
    assert (local.compile, local.max_gpu_memory_gib) == ("off", 48)
    assert TransformersOptions(**cli.backend_options(cli.parse_args([]), False)).compile == "auto"
    hybrid = cli.backend_options(cli.parse_args(["--backend", "hybrid", "--max-speech-seconds", "30"]), True)
    assert VLLMOptions(**hybrid["engine"]).enforce_eager  # the tiny model on a CPU: no torch.compile
    assert TransformersOptions(**hybrid["talker"]).max_speech_seconds == 30 and "server" not in hybrid
    remote = cli.backend_options(cli.parse_args(["--backend", "hybrid", "--api-base", "http://gpu-box:8000/v1"]), False)
    assert OpenAIOptions(**remote["server"]).api_base == "http://gpu-box:8000/v1"
    args = cli.parse_args(["--backend", "openai", "--api-base", "http://gpu-box:8000/v1", "--model", "qwen",
                           "--video-audio", "separate", "--no-audio"])
    server = OpenAIOptions(**cli.backend_options(args, random_weights=False))
    assert (server.api_base, server.model, server.video_audio, server.speech) == (
        "http://gpu-box:8000/v1", "qwen", "separate", "off")


def test_the_queue_lets_as_many_users_generate_as_the_engine_batches():
    from backends.base import BackendInfo
    from ui import queue_settings

    info = BackendInfo(backend="vllm", model="m", kind="instruct", device="cpu", max_concurrency=8)
    assert queue_settings(info)["default_concurrency_limit"] == 8
