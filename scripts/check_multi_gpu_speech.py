"""GPU check: streaming speech with the model split over two GPUs (the case device_map="auto" makes on 4 GPUs).

    python scripts/check_multi_gpu_speech.py      # needs 2 CUDA devices; uses the tiny checkpoint

Puts the thinker layer the talker reads (accept_hidden_layer) and the whole talker on cuda:1, the rest on
cuda:0, then asks for spoken replies to a text turn and an image turn. Prints what came back.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.checkpoints import Checkpoint  # noqa: E402
from backends.events import AudioChunk, Error, TextDelta  # noqa: E402
from backends.request import ChatRequest, MediaPart, Sampling, Turn  # noqa: E402
from backends.checkpoints.tiny import ensure_tiny_checkpoint  # noqa: E402
from backends.transformers.backend import TransformersBackend  # noqa: E402
from backends.transformers.options import TransformersOptions  # noqa: E402


def split_device_map(path) -> dict[str, int]:
    """Every module on GPU 0 but the thinker layer the talker reads and the talker itself (GPU 1).

    accelerate wants disjoint keys, so the thinker is listed module by module.
    """
    from transformers import AutoConfig, Qwen3OmniMoeForConditionalGeneration

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = Qwen3OmniMoeForConditionalGeneration._from_config(config)
    target = f"thinker.model.layers.{config.talker_config.accept_hidden_layer - 1}"
    device_map = {"talker": 1, "code2wav": 0}
    for name, _ in model.thinker.named_children():
        if name != "model":
            device_map[f"thinker.{name}"] = 0
    for name, _ in model.thinker.model.named_children():
        if name != "layers":
            device_map[f"thinker.model.{name}"] = 0
    for index in range(len(model.thinker.model.layers)):
        device_map[f"thinker.model.layers.{index}"] = 1 if f"thinker.model.layers.{index}" == target else 0
    return device_map


def main() -> None:
    from transformers import Qwen3OmniMoeForConditionalGeneration, Qwen3OmniMoeProcessor

    path = ensure_tiny_checkpoint("instruct")
    device_map = split_device_map(path)
    model = Qwen3OmniMoeForConditionalGeneration.from_pretrained(path, device_map=device_map, dtype=torch.bfloat16)
    print("placement:", {k: str(v) for k, v in model.hf_device_map.items()})
    backend = TransformersBackend(Checkpoint("tiny split over 2 GPUs", str(path), True),
                                  TransformersOptions(max_speech_seconds=2.0),
                                  loaded=(model, Qwen3OmniMoeProcessor.from_pretrained(path)))
    image = Path(tempfile.mkdtemp()) / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(image)
    for name, turn in (("text", Turn.user("Hello there")), ("image", Turn.user(MediaPart("image", str(image)),
                                                                               "What is this?"))):
        async def run():
            return [e async for e in backend.stream(ChatRequest(turns=(turn,), sampling=Sampling(
                temperature=0, max_new_tokens=16)))]

        events = asyncio.run(run())
        audio = sum(e.samples.size for e in events if isinstance(e, AudioChunk))
        errors = [e.message for e in events if isinstance(e, Error)]
        text = sum(isinstance(e, TextDelta) for e in events)
        print(f"{name}: {text} text deltas, {audio} audio samples, errors: {errors or 'none'}", flush=True)


if __name__ == "__main__":
    main()
