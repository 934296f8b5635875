"""Loading a Qwen3-Omni checkpoint with transformers where its plan (``plan.py``) puts it, with its progress
reported, refusing a checkpoint whose weights are missing."""

from __future__ import annotations

import contextlib
import copy
from typing import Callable

from backends.transformers.plan import EnginePlan


class CheckpointError(RuntimeError):
    """The checkpoint can't be served (e.g. weights missing): refuse rather than speak noise."""


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


def load_model(plan: EnginePlan, *, thinker_layers: int | None = None):
    """``(model, processor)`` as ``plan`` places them; ``thinker_layers`` builds only that many thinker layers (the
    rest is skipped: the hybrid's talker side needs the thinker up to the talker's layer)."""
    from transformers import Qwen3OmniMoeForConditionalGeneration, Qwen3OmniMoeProcessor

    checkpoint, kwargs = plan.checkpoint, plan.load_kwargs()
    if thinker_layers is not None:
        kwargs["config"] = config = copy.deepcopy(plan.config)
        config.thinker_config.text_config.num_hidden_layers = thinker_layers
    model, loading = Qwen3OmniMoeForConditionalGeneration.from_pretrained(checkpoint.path, output_loading_info=True,
                                                                          **kwargs)
    missing = sorted(loading.get("missing_keys", ()))
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise CheckpointError(f"{checkpoint.name} is missing {len(missing)} weights ({shown}); refusing to serve it.")
    model.eval()
    return model, Qwen3OmniMoeProcessor.from_pretrained(checkpoint.path)
