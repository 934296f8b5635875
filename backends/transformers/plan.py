"""The Transformers engine's plan: where and how it runs, decided once, before anything is built.

``plan_engine`` reads the options, the checkpoint's config and this machine (is there a GPU, is flash-attn
installed) one time; loading (``loading.load_model``), the header and the queue's size (``BackendInfo``),
compiling, our kernels and the batch all read the same ``EnginePlan`` instead of asking again.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

from backends.checkpoints import Checkpoint
from backends.transformers.options import TransformersOptions

DEFAULT_GPU_SLOTS = 8
"""Replies decoded together when compiled on a GPU and ``batch_slots`` is not given."""


@dataclass(frozen=True)
class EnginePlan:
    checkpoint: Checkpoint
    config: Any
    """The checkpoint's transformers config, as the model is built from it (no talker when mute)."""
    on_gpu: bool
    device: str
    """Where the weights go: "cpu", "cuda:N" (one GPU) or "auto" (spread over every GPU)."""
    device_label: str
    """Where the thinker will be, for the header: "cpu" or "cuda:0 (NVIDIA H200)"."""
    attention: str
    """transformers' attn_implementation: flash_attention_2 when it imports on a GPU (auto), else sdpa."""
    max_memory: dict | None
    """accelerate's caps per GPU and for the CPU (``max_gpu_memory_gib``): what doesn't fit stays in CPU memory."""
    compiled: bool
    """Static caches, torch.compile and (on a GPU) CUDA graphs, unless loading offloaded layers to the CPU."""
    batch_slots: int
    """Replies decoded together (1: one at a time; so is a model that loading offloaded in part)."""
    gpu_kernels: bool
    """Our Triton kernels may serve (they need a GPU)."""

    @property
    def speaks(self) -> bool:
        return bool(self.config.enable_audio_output)

    def load_kwargs(self) -> dict:
        """``from_pretrained`` keywords for this plan."""
        import torch

        kwargs = {"config": self.config, "dtype": torch.bfloat16 if self.on_gpu else torch.float32,
                  "attn_implementation": self.attention}
        if self.on_gpu:
            kwargs["device_map"] = {"": self.device} if self.device.startswith("cuda:") else "auto"
            if self.max_memory:
                kwargs.update(device_map="auto", max_memory=self.max_memory)
        return kwargs


def plan_engine(checkpoint: Checkpoint, options: TransformersOptions = TransformersOptions(), *,
                talker_only: bool = False, config: Any = None) -> EnginePlan:
    """The plan for serving ``checkpoint`` with ``options`` on this machine. ``talker_only``: the hybrid's talker
    side (another engine writes the replies); ``config``: the checkpoint's config when it is at hand already."""
    import torch

    if config is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(checkpoint.path)
    if not options.audio_output and config.enable_audio_output:
        config = copy.deepcopy(config)
        config.enable_audio_output = False  # the talker is never built: its weights are skipped
    on_gpu = torch.cuda.is_available() and options.device.startswith(("auto", "cuda"))
    device = options.device if on_gpu and options.device.startswith("cuda:") else "auto" if on_gpu else "cpu"
    offloading = on_gpu and bool(options.max_gpu_memory_gib)
    # With a cap the model may still fit the GPUs whole: OmniModel.take compiles unless layers were offloaded.
    compiled = options.compile == "on" or (options.compile == "auto" and on_gpu)
    if not options.static_cache_tokens or (talker_only and not config.enable_audio_output):
        slots = 1
    elif options.batch_slots is not None:
        slots = max(1, options.batch_slots)
    else:  # a cap on GPU memory is a small GPU: one reply at a time unless asked
        slots = DEFAULT_GPU_SLOTS if compiled and on_gpu and not offloading else 1
    first_gpu = device if device.startswith("cuda:") else "cuda:0"
    return EnginePlan(
        checkpoint=checkpoint, config=config, on_gpu=on_gpu, device=device,
        device_label=device_label(first_gpu if on_gpu else "cpu"),
        attention=_attention(options.attn_implementation, on_gpu),
        max_memory=memory_caps(options.max_gpu_memory_gib) if offloading else None,
        compiled=compiled, batch_slots=slots, gpu_kernels=on_gpu)


def device_label(device: str) -> str:
    """``device`` for the header: a GPU with its name."""
    import torch

    return f"{device} ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else device


def memory_caps(gib_per_gpu: float) -> dict:
    """accelerate's ``max_memory``: this much on each GPU, the rest in CPU memory (leaving 8 GiB to the system)."""
    import torch

    caps: dict = {index: f"{gib_per_gpu}GiB" for index in range(torch.cuda.device_count())}
    system_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    caps["cpu"] = f"{max(1, system_gib - 8):.0f}GiB"
    return caps


def _attention(requested: str, on_gpu: bool) -> str:
    if requested != "auto":
        return requested
    if on_gpu:
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"
