"""The audio and vision encoders' outputs for files already seen, so that later turns skip them.

transformers' thinker encodes every file of the prompt on every turn: the third turn of a chat about
three photos runs the vision encoder over all three again, and on a GPU each costs about as long as the
whole captured text pass (BENCHMARKS.md). This cache stands in for the thinker's ``get_audio_features``,
``get_image_features`` and ``get_video_features``: it splits their batch into items, encodes only the
items it hasn't seen (in one batch, as before) and puts the rest together from what it kept.

An item is found by its encoder input: its shape and two sums pick a candidate, and only an input equal
element for element to the one kept is served, so a mirrored photo (same sums) is encoded anew. The
processor pads a turn's audio clips to the longest before its STFT: a clip's features are the same however
far it is padded, but differ at its end when it is the longest (not padded). So a clip that was the longest
of its turn is encoded once more when a longer one joins; the cache simply misses it then. Entries live in
host memory (pinned on a GPU, whose memory the weights and caches need) and are dropped least recently
used first past ``max_bytes`` (inputs and outputs counted). PyTorch's pinned-memory allocator rounds each
block up to a power of two and keeps freed blocks for reuse, so the host may hold up to twice ``max_bytes``.

Example::

    cache = EncoderCache.on(model.thinker, max_bytes=256 << 20)
    # the thinker's forward (and generate()) now reuses what it encoded
    cache.encoded, cache.reused  # items encoded and items served from the cache so far
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    BaseModelOutputWithDeepstackFeatures,
    _get_feat_extract_output_lengths,
)


class EncoderCache:
    """Encoder outputs by encoder input, for one thinker (see the module's docstring)."""

    def __init__(self, thinker, max_bytes: int):
        self.thinker, self.max_bytes = thinker, max_bytes
        self._entries: OrderedDict[tuple, tuple] = OrderedDict()
        """Key → (the input, its outputs, the outputs' device, events once their copies into host memory are done)."""
        self._bytes = 0
        self._lock = threading.Lock()  # the hybrid backend's prompt pass and a reply may encode at once
        self.encoded = self.reused = 0

    @classmethod
    def on(cls, thinker, max_bytes: int) -> EncoderCache:
        """The cache installed on ``thinker``, installed first if none is (backends sharing a model share it)."""
        cache = thinker.__dict__.get("encoder_cache")
        if cache is None:
            cache = thinker.encoder_cache = cls(thinker, max_bytes)
            cache.install()
        return cache

    def install(self) -> None:
        """Instance attributes: the thinker's forward and generate() call these in place of its methods (the
        parameter names are the originals': generate() picks its arguments by them)."""
        thinker = self.thinker
        image, video, audio = thinker.get_image_features, thinker.get_video_features, thinker.get_audio_features

        def get_image_features(pixel_values, image_grid_thw=None, **kwargs):
            return self._visual_features("image", image, pixel_values, image_grid_thw, kwargs)

        def get_video_features(pixel_values_videos, video_grid_thw=None, **kwargs):
            return self._visual_features("video", video, pixel_values_videos, video_grid_thw, kwargs)

        def get_audio_features(input_features, feature_attention_mask=None, audio_feature_lengths=None, **kwargs):
            return self._audio_features(audio, input_features, feature_attention_mask, audio_feature_lengths, kwargs)

        thinker.get_image_features, thinker.get_video_features = get_image_features, get_video_features
        thinker.get_audio_features = get_audio_features

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def _visual_features(self, kind: str, encode, pixel_values, grid_thw, kwargs: dict):
        if grid_thw is None:
            return encode(pixel_values, grid_thw, **kwargs)
        items = pixel_values.split(grid_thw.prod(-1).tolist())
        keys = [(kind, tuple(grid.tolist())) for grid in grid_thw]

        def encode_batch(missing: list[int]) -> list:
            out = encode(torch.cat([items[i] for i in missing]), grid_thw[missing], **kwargs)
            levels = out.deepstack_features or []
            return [(out.pooler_output[n], tuple(level[n] for level in levels)) for n in range(len(missing))]

        outputs = self._lookup(keys, items, encode_batch)
        levels = len(outputs[0][1]) if outputs else 0
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=tuple(pooled for pooled, _ in outputs),
            deepstack_features=[tuple(deep[level] for _, deep in outputs) for level in range(levels)])

    def _audio_features(self, encode, input_features, feature_attention_mask, audio_feature_lengths, kwargs: dict):
        if feature_attention_mask is None:
            return encode(input_features, feature_attention_mask, audio_feature_lengths, **kwargs)
        items = [features[:, frames] for features, frames in zip(input_features, feature_attention_mask.bool())]
        keys = [("audio", tuple(item.shape)) for item in items]

        def encode_batch(missing: list[int]) -> list:
            hidden = encode(input_features[missing], feature_attention_mask[missing], **kwargs).last_hidden_state
            lengths = _get_feat_extract_output_lengths(feature_attention_mask[missing].sum(-1))
            return list(hidden.split(lengths.tolist()))

        return BaseModelOutputWithPooling(last_hidden_state=torch.cat(self._lookup(keys, items, encode_batch)))

    def _lookup(self, keys: list[tuple], items: list[torch.Tensor], encode_batch) -> list:
        """Each item's output: kept ones from the cache, the others encoded in one batch and kept."""
        with torch.no_grad():  # one sync for all the items' sums
            sums = torch.stack([_sums(item.float()) for item in items])
        keys = [(*key, *map(float, pair)) for key, pair in zip(keys, sums.tolist())]
        with self._lock:
            found = [self._get(key, item) for key, item in zip(keys, items)]
        missing = [i for i, output in enumerate(found) if output is None]
        if missing:
            for i, output in zip(missing, encode_batch(missing)):
                found[i] = output
            with self._lock:
                for i in missing:
                    self._put(keys[i], items[i], found[i])
        self.encoded += len(missing)
        self.reused += len(items) - len(missing)
        return found

    def _get(self, key: tuple, item: torch.Tensor):
        entry = self._entries.get(key)
        if entry is None:
            return None
        kept_item, output, device, copied = entry
        for event in copied:
            event.synchronize()  # its copies into host memory have landed
        if not torch.equal(kept_item, item.to(kept_item.device)):
            return None
        self._entries.move_to_end(key)
        return _moved(output, device)

    def _put(self, key: tuple, item: torch.Tensor, output) -> None:
        size = _size((item, output))
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._bytes -= _size(self._entries.pop(key)[:2])
        # Copies in host memory: views would keep the whole batch they came from alive, and on a GPU the weights
        # and caches need its memory (a hit copies a few MB back, well under a millisecond). A hit goes back to
        # the device the encoder gave it on (spread over GPUs, not always the input's).
        device = _first_tensor(output).device
        self._entries[key] = (_to_host(item), _to_host(output), device, _copies_done({item.device, device}))
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._bytes -= _size(self._entries.popitem(last=False)[1][:2])


def _sums(values: torch.Tensor) -> torch.Tensor:
    return torch.stack((values.sum(), values.square().sum()))


def _to_host(value):
    """A copy in host memory (pinned, copied without waiting for the GPU) of a tensor or (nested) tuple."""
    if isinstance(value, torch.Tensor):
        if not value.is_cuda:
            return value.detach().clone()
        return torch.empty(value.shape, dtype=value.dtype, pin_memory=True).copy_(value.detach(), non_blocking=True)
    return tuple(_to_host(part) for part in value)


def _copies_done(devices: set) -> list:
    """Events behind the copies just queued on each GPU among ``devices`` (on its current stream)."""
    events = []
    for device in (d for d in devices if d.type == "cuda"):
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        events.append(event)
    return events


def _first_tensor(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else _first_tensor(value[0])


def _moved(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    return tuple(_moved(part, device) for part in value)


def _size(value) -> int:
    """Bytes of a tensor, or of the tensors in a (nested) tuple."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(_size(part) for part in value)
