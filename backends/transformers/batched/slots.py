"""Key/value storage for several conversations at once: one row ("slot") per conversation, each at its own length.

transformers' ``StaticCache`` keeps one length for the whole batch, so every row would have to start and
grow together. Here each slot has its own length; a decode step of ``batch`` rows writes each row's new key
at that row's length and attends over the slots up to it (a mask made from the lengths). Rows are the
first ``batch`` slots: a conversation takes the lowest free slot, so a step covers the busy ones and few
idle rows, whose lengths stay put (they compute and are ignored). A prompt pass fills a slot by copying
from a one-row cache (the prompt decoders keep theirs, with their captured passes).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class SlotStore:
    """Keys, values and lengths for ``slots`` conversations of up to ``tokens`` tokens, per layer.

    Example::

        store = SlotStore(model.thinker.config.text_config, slots=8, tokens=8192, device=device, dtype=dtype)
        store.fill(slot, one_row_cache, length)      # after a prompt pass into one_row_cache
        cache, mask = store.cache, store.step_mask(batch)   # for a step of the first `batch` rows
        ... text model(..., past_key_values=cache, attention_mask=mask) ...
        store.advance(batch, active)                 # the rows that took the step's token grow by one
    """

    def __init__(self, text_config, slots: int, tokens: int, device, dtype):
        heads = text_config.num_key_value_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
        self.slots, self.tokens = slots, tokens
        shape = (slots, heads, tokens, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(text_config.num_hidden_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(text_config.num_hidden_layers)]
        self.lengths = torch.zeros((slots,), device=device, dtype=torch.long)
        self.rows = torch.arange(slots, device=device)
        self.cache_slots = torch.arange(tokens, device=device)
        self.cache = SlotCache(self)
        """The ``past_key_values`` of a step over the first rows, however many: the rows its keys come in."""

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def fill(self, slot: int, cache, length: int, start: int = 0) -> None:
        """Slot ``slot`` takes ``length`` positions of a one-row cache (a StaticCache's layers) from ``start``
        (a packed prompt pass holds several prompts one after another)."""
        for keys, values, layer in zip(self.keys, self.values, cache.layers):
            keys[slot, :, :length].copy_(layer.keys[0, :, start:start + length])
            values[slot, :, :length].copy_(layer.values[0, :, start:start + length])
        self.lengths[slot] = length

    def free(self, slot: int) -> None:
        """The slot's conversation left: its length back to 0. Idle rows still compute in the steps of the busy
        rows after them, writing at their length: a slot left full would be written one past its end."""
        self.lengths[slot] = 0

    def step_mask(self, batch: int) -> torch.Tensor:
        """(batch, 1, 1, tokens) bool: a row's new token sees its slot's filled positions and itself."""
        return (self.cache_slots[None, :] <= self.lengths[:batch, None])[:, None, None, :]

    def advance(self, batch: int, active: torch.Tensor) -> None:
        """The rows of ``active`` (batch,) long 0/1 keep the token the step wrote: their lengths grow."""
        self.lengths[:batch] += active


class SlotCache(Cache):
    """The ``past_key_values`` of a decode step over the first slots of a SlotStore, as many as the step has
    rows (a compiled step keeps that number symbolic: one compile serves every batch size)."""

    def __init__(self, store: SlotStore):
        super().__init__(layers=[_SlotLayer(store, index) for index in range(len(store.keys))])


class _SlotLayer(CacheLayerMixin):
    is_compileable = True
    is_sliding = False

    def __init__(self, store: SlotStore, index: int):
        super().__init__()
        self.store = store
        self.keys, self.values = store.keys[index], store.values[index]
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:  # allocated up front
        pass

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """One new token per row (batch, heads, 1, head_dim), written at each row's own length."""
        batch = key_states.shape[0]
        rows, positions = self.store.rows[:batch], self.store.lengths[:batch]
        self.keys[rows, :, positions] = key_states[:, :, 0]
        self.values[rows, :, positions] = value_states[:, :, 0]
        return self.keys[:batch], self.values[:batch]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.store.tokens, 0

    def get_seq_length(self) -> int:
        raise NotImplementedError("a slot cache has one length per row: pass position_ids and a mask")

    def get_max_length(self) -> int:
        return self.store.tokens
