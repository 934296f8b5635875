"""Shared fixtures: one tiny checkpoint cache and one set of media files per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import media_factory

pytest_plugins = ["tests.failure_reports"]  # a failure pytest can't format still gets reported, and the run goes on

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def speech_path(media_dir) -> Path:
    return media_factory.speech_wav(media_dir / "speech.wav")


@pytest.fixture(scope="session")
def video_path(media_dir) -> Path:
    return media_factory.test_video(media_dir / "pattern.mp4")


@pytest.fixture(scope="session")
def image_path(media_dir) -> Path:
    return media_factory.test_image(media_dir / "gradient.png")


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory) -> Path:
    """Build the tiny checkpoints from the current code once per test session."""
    if "QWEN_OMNI_TINY_DIR" not in os.environ:
        os.environ["QWEN_OMNI_TINY_DIR"] = str(tmp_path_factory.mktemp("tiny-checkpoints"))
    return Path(os.environ["QWEN_OMNI_TINY_DIR"])


@pytest.fixture(scope="session")
def instruct_backend(tiny_cache):
    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint

    # A greedy talker: a random sampled one sometimes stops on its first step, and tests that expect
    # speech must not depend on that draw. Tests of sampling switch it back on.
    with build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=2.0,
                       talker_do_sample=False) as backend:
        yield backend


@pytest.fixture(scope="session")
def captioner_backend(tiny_cache):
    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint

    with build_backend("transformers", resolve_checkpoint("tiny-captioner")) as backend:
        yield backend


@pytest.fixture
def talker_frames(monkeypatch) -> list:
    """Records the codec frames every talker loop produces during the test."""
    import torch

    from backends.transformers import speech

    frames: list[torch.Tensor] = []
    original = speech.Talker.frames

    def recording(self):
        for frame in original(self):
            frames.append(frame.clone())
            yield frame

    monkeypatch.setattr(speech.Talker, "frames", recording)
    return frames
