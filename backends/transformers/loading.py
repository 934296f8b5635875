"""Loading a Qwen3-Omni checkpoint with transformers: where it goes (GPUs, CPU offload), in which dtype and
attention, with its progress reported, refusing a checkpoint whose weights are missing."""

from __future__ import annotations

import contextlib
import os
from typing import Callable

from backends.checkpoints import Checkpoint
from backends.transformers.options import TransformersOptions


class CheckpointError(RuntimeError):
    """The checkpoint can't be served (e.g. weights missing): refuse rather than speak noise."""


def model_config(checkpoint: Checkpoint, options: TransformersOptions):
    """The checkpoint's config as ``load_model`` builds the model from it."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint.path)
    if not options.audio_output:
        config.enable_audio_output = False  # the talker is never built: its weights are skipped
    return config


def _on_gpu(options: TransformersOptions) -> bool:
    import torch

    return torch.cuda.is_available() and options.device.startswith(("auto", "cuda"))


def expected_device(options: TransformersOptions) -> str:
    """Where ``load_model`` will put the model (shown before the weights are in)."""
    if not _on_gpu(options):
        return "cpu"
    return device_label(options.device if options.device.startswith("cuda:") else "cuda:0")


def expected_batch_slots(options: TransformersOptions) -> int:
    """How many replies the engine will decode together (shown, and the queue sized, before the weights are in):
    ``batch_slots``, or 8 where the model will be compiled on a GPU, else 1."""
    if options.batch_slots is not None:
        return max(1, options.batch_slots)
    compiled = options.compile == "on" or (options.compile == "auto" and _on_gpu(options))
    return 8 if compiled and _on_gpu(options) and not options.max_gpu_memory_gib else 1


def device_label(device: str) -> str:
    """``device`` for the header: a GPU with its name."""
    import torch

    return f"{device} ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else device


@contextlib.contextmanager
def weight_loading_progress(report: Callable[[int, int], None]):
    """Calls ``report(done, total)`` as transformers loads the weights (its "Loading weights" bar).

    Wraps the progress bar of ``transformers.core_model_loading`` (5.x); if a later version moves it,
    loading still works, only without a percentage.
    """
    try:
        from transformers import core_model_loading
        bar = core_model_loading.tqdm
    except (ImportError, AttributeError):
        yield
        return

    def reporting_bar(iterable=None, *args, **kwargs):
        total = kwargs.get("total") or (len(iterable) if hasattr(iterable, "__len__") else 0)
        for done, item in enumerate(bar(iterable, *args, **kwargs)):
            if total:
                report(done, total)
            yield item

    core_model_loading.tqdm = reporting_bar
    try:
        yield
    finally:
        core_model_loading.tqdm = bar


def load_model(checkpoint: Checkpoint, options: TransformersOptions, *, thinker_layers: int | None = None):
    """``(model, processor)``; ``thinker_layers`` builds only that many thinker layers (the rest is skipped)."""
    import torch
    from transformers import Qwen3OmniMoeForConditionalGeneration, Qwen3OmniMoeProcessor

    on_gpu = _on_gpu(options)
    config = model_config(checkpoint, options)
    if thinker_layers is not None:
        config.thinker_config.text_config.num_hidden_layers = thinker_layers
    load_kwargs = {
        "config": config,
        "dtype": torch.bfloat16 if on_gpu else torch.float32,
        "attn_implementation": _attention(options.attn_implementation, on_gpu),
        "output_loading_info": True,
    }
    if on_gpu:  # "auto" spreads the model over every GPU; "cuda:N" keeps it on one
        load_kwargs["device_map"] = {"": options.device} if options.device.startswith("cuda:") else "auto"
        if options.max_gpu_memory_gib:
            load_kwargs.update(device_map="auto", max_memory=memory_caps(options.max_gpu_memory_gib))
    model, loading = Qwen3OmniMoeForConditionalGeneration.from_pretrained(checkpoint.path, **load_kwargs)
    missing = sorted(loading.get("missing_keys", ()))
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise CheckpointError(f"{checkpoint.name} is missing {len(missing)} weights ({shown}); refusing to serve it.")
    model.eval()
    return model, Qwen3OmniMoeProcessor.from_pretrained(checkpoint.path)


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
