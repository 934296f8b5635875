"""Which weights to load: a hub id, a local folder, or the tiny offline checkpoint."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from backends.base import CheckpointKind

INSTRUCT = "Qwen/Qwen3-Omni-30B-A3B-Instruct"
THINKING = "Qwen/Qwen3-Omni-30B-A3B-Thinking"
CAPTIONER = "Qwen/Qwen3-Omni-30B-A3B-Captioner"
TINY = "tiny"
TINY_CAPTIONER = "tiny-captioner"


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: ``path`` is what ``from_pretrained`` receives."""

    name: str
    path: str
    random_weights: bool = False


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_checkpoint(requested: str | None, *, default: str = INSTRUCT, tiny_default: str = TINY) -> Checkpoint:
    """``requested`` as given; or the real default on a GPU machine; else the tiny model.

    Hub ids are passed through untouched: transformers downloads them only if the machine
    is online (nothing here ever reaches for the hub on its own).
    """
    if requested is None:
        requested = default if gpu_available() else tiny_default
    if requested in (TINY, TINY_CAPTIONER):
        from backends.checkpoints.tiny import ensure_tiny_checkpoint

        kind = "captioner" if requested == TINY_CAPTIONER else "instruct"
        return Checkpoint(requested, str(ensure_tiny_checkpoint(kind)), random_weights=True)
    path = os.path.expanduser(requested)
    if os.path.isdir(path):
        return Checkpoint(requested, path)
    if os.environ.get("QWEN_OMNI_HUB") == "modelscope":  # ModelScope studios reach ModelScope, not the HF hub
        from modelscope import snapshot_download

        return Checkpoint(requested, snapshot_download(requested))
    return Checkpoint(requested, requested)


def detect_kind(checkpoint: Checkpoint, config) -> CheckpointKind:
    """Instruct checkpoints carry a talker; Thinking and Captioner don't.

    Thinking vs Captioner: the name says it, else the chat template (the Thinking
    template opens a <think> block).
    """
    if getattr(config, "enable_audio_output", False):
        return "instruct"
    name = checkpoint.name.lower()
    if "caption" in name:
        return "captioner"
    if "thinking" in name or "<think>" in _chat_template(checkpoint.path):
        return "thinking"
    return "captioner"


def _chat_template(path: str) -> str:
    for file_name in ("chat_template.jinja", "chat_template.json"):
        file = Path(path) / file_name
        if file.is_file():
            text = file.read_text(encoding="utf-8")
            return json.loads(text).get("chat_template", "") if file.suffix == ".json" else text
    return ""
