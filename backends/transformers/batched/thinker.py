"""The thinker's replies for several conversations at once: one batched step gives every busy slot its next token.

A reply joins between two steps: its prompt runs through the one-row ``ThinkerDecoder`` (the encoders, the
media merged into the embeddings, the captured prompt passes), and its keys and values are copied into a
free slot. From then on each step decodes every busy slot together; a reply that ends or is stopped frees
its slot between steps. Each row keeps its own sampling settings and noise (drawn from its own generator in
the order a lone reply draws it), and sampling is ``thinker_decoder.sample_rows`` for both, so a row's
tokens depend on its own logits and noise alone.

The step for ``batch`` rows reads and writes only fixed buffers: on a GPU it is captured per batch size
(``batch_sizes``), compiled once for all of them first (steps.py), and a step of the busy rows runs in the
smallest size that holds them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import torch

from backends.transformers.batched.packed import pack, prompt_parts
from backends.transformers.batched.slots import SlotStore
from backends.transformers.batched.steps import steps_per_size
from backends.transformers.cuda_graphs import compute_device
from backends.transformers.speech import capture_prompt_hidden
from backends.transformers.thinker_decoder import ThinkerDecoder, ThinkerSampling, sample_rows

log = logging.getLogger(__name__)


@dataclass
class ThinkerRow:
    """One reply in the batch. ``alone``: the only reply, decoding in the one-row decoder (its compiled step,
    the one-reply engine's speed) until another joins and it moves into its slot."""

    slot: int
    sampling: ThinkerSampling
    alone: bool = False
    token: torch.Tensor | None = None
    """While alone: its last token, on the device."""
    produced: int = 1
    """Tokens sampled so far (the prompt pass gives the first)."""

    @property
    def greedy(self) -> bool:
        return self.sampling.temperature <= 0


@dataclass
class Launched:
    """A step in flight: the rows it serves (as they were) and where its tokens land on the host."""

    rows: dict[int, ThinkerRow]
    host: torch.Tensor
    ready: torch.cuda.Event | None

    def read(self) -> dict[int, int]:
        """{slot: token id}, once the step is done."""
        if self.ready is not None:
            self.ready.synchronize()
        values = self.host.tolist()
        return {slot: values[slot] for slot in self.rows}


class ThinkerBatch:
    """Example::

        batch = ThinkerBatch(model.thinker, ThinkerDecoder(model.thinker, 8192, ...), slots=8)
        row, first = batch.admit(inputs, sampling, prompt_states)   # a prompt pass, between steps
        tokens = batch.step()                                        # {slot: token} for every busy row
        batch.release(row)                                           # its end, or Stop
    """

    def __init__(self, thinker, prompts: ThinkerDecoder, slots: int, batch_sizes: tuple[int, ...] = (1, 2, 4, 8)):
        """``prompts``: the one-row decoder whose prompt passes fill the slots (its cache is their scratch), and
        which decodes a reply that is alone."""
        self.thinker, self.prompts, self.slots = thinker, prompts, slots
        device = compute_device(thinker)
        text_config = thinker.config.text_config
        self.store = SlotStore(text_config, slots, prompts.max_tokens, device, thinker.dtype)
        self.batch_sizes = sorted({b for b in batch_sizes if b < slots} | {slots})
        self.limit, self.repetition_penalty = prompts.limit, prompts.repetition_penalty
        self.token_in = torch.zeros((slots, 1), device=device, dtype=torch.long)
        self.rope_delta = torch.zeros((slots, 1), device=device, dtype=torch.long)
        self.temperature = torch.ones((slots, 1), device=device)
        self.top_k = torch.full((slots, 1), self.limit, device=device, dtype=torch.long)
        self.top_p = torch.ones((slots, 1), device=device)
        self.uniform = torch.full((slots, self.limit), 0.5, device=device)
        self.seen = torch.zeros((slots, text_config.vocab_size), device=device, dtype=torch.bool)
        self.active = torch.zeros((slots,), device=device, dtype=torch.long)
        """1 for a busy slot: its length grows with each step (an idle row's stays, and its token is ignored)."""
        self.rows: dict[int, ThinkerRow] = {}
        self._steps = {batch: (lambda b=batch: self._step_fn(self.token_in[:b])) for batch in self.batch_sizes}
        on_gpu = device.type == "cuda"
        self._host = [torch.zeros((slots,), dtype=torch.long, pin_memory=on_gpu) for _ in range(2)]
        """Two pinned buffers the steps' tokens are copied to, in turn: one is read while the next step runs."""
        self._flip = 0
        self.compiled = self.torch_compiled = False
        """Captured (on a GPU) or compiled; compiled with torch.compile."""
        self.steps = 0
        """Batched steps so far (a lone reply's steps are the one-row decoder's)."""
        self.packed = 0
        """Packed prompt passes so far."""

    def fits(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        return self.prompts.fits(prompt_tokens, max_new_tokens)

    @property
    def free(self) -> int:
        return self.slots - len(self.rows)

    @torch.inference_mode()
    def admit(self, inputs: dict, sampling: ThinkerSampling, prompt_states: dict | None = None,
              alone: bool = False) -> tuple[ThinkerRow, int]:
        """A new reply's prompt pass, for the lowest free slot; returns its row and first token. ``alone``: no
        other reply is busy or waiting, so it decodes in the one-row decoder until another joins."""
        slot = next(s for s in range(self.slots) if s not in self.rows)
        for row in self.rows.values():
            if row.alone:
                self._move_into_slot(row)  # the one-row cache is about to take this prompt
        row = ThinkerRow(slot, sampling, alone=alone and not self.rows)
        prompts = self.prompts
        if row.alone:
            row.token = self._with_prompt_states(lambda: prompts.begin(inputs, sampling, prompt_states),
                                                 prompt_states)
            self.rows[slot] = row
            return row, int(row.token)
        prompts.cache.reset()
        logits = self._with_prompt_states(lambda: prompts._prompt_pass(inputs, prompt_states), prompt_states)
        self.store.fill(slot, prompts.cache, inputs["input_ids"].shape[1])
        return row, self._first_token(row, inputs, logits, self.thinker.rope_deltas.reshape(-1)[0])

    @torch.inference_mode()
    def admit_packed(self, replies: list[tuple[dict, ThinkerSampling, dict | None]]
                     ) -> list[tuple[ThinkerRow, int] | Exception]:
        """Several new replies' prompt passes as one (packed.py), each into the lowest free slot: each one's row
        and first token, in order, or the error that kept it out (its encoders failed on its media: the others
        go on). Their encoders run one prompt at a time; their text goes through the text model together,
        which reads each layer's weights once for all of them. If the shared pass fails, no row is left
        behind."""
        for row in self.rows.values():
            if row.alone:
                self._move_into_slot(row)  # the one-row cache is about to take these prompts
        prompts = self.prompts
        results: list = []
        for inputs, _, _ in replies:
            try:
                results.append(prompt_parts(prompts, inputs))
            except Exception as err:
                log.exception("a prompt's encoders failed; the prompts beside it go on")
                results.append(err)
        packing = [index for index, part in enumerate(results) if not isinstance(part, Exception)]
        if not packing:
            return results
        parts = [results[index] for index in packing]
        self.packed += 1
        logits, layer_states, starts = pack(prompts, parts)
        admitted: list[ThinkerRow] = []
        try:
            for index, part, start, row_logits in zip(packing, parts, starts, logits.split(1)):
                inputs, sampling, prompt_states = replies[index]
                row = ThinkerRow(next(s for s in range(self.slots) if s not in self.rows), sampling)
                self.store.fill(row.slot, prompts.cache, part.length, start)
                if prompt_states is not None and layer_states is not None:
                    prompt_states["hidden"] = layer_states[:, start:start + part.length].clone()
                results[index] = (row, self._first_token(row, inputs, row_logits, part.rope_delta))
                admitted.append(row)
        except BaseException:
            for row in admitted:
                self.release(row)
            raise
        return results

    def _first_token(self, row: ThinkerRow, inputs: dict, logits: torch.Tensor, rope_delta) -> int:
        """A row's settings into its slot after its prompt pass, and its first token from ``logits`` (1, vocab);
        from the next step on, the row decodes with the others (it joins ``rows`` last: a failure on the way
        leaves its slot free)."""
        slot, one = row.slot, slice(row.slot, row.slot + 1)
        self.rope_delta[slot] = rope_delta
        self._set_sampling(row)
        self.seen[slot].zero_()
        self.seen[one].scatter_(1, inputs["input_ids"][:1].to(self.seen.device), True)
        self._draw_noise(row)
        token = sample_rows(logits, self.seen[one], self.temperature[one], self.top_k[one], self.top_p[one],
                            self.uniform[one], self.limit, self.repetition_penalty)
        first = int(token)
        self.token_in[one].copy_(token)
        self.active[slot] = 1
        self.rows[slot] = row
        return first

    def _with_prompt_states(self, prompt_pass, prompt_states: dict | None):
        """``prompt_pass()``, with the talker layer's prompt states kept in ``prompt_states``: a captured pass
        keeps them itself; an eager one is hooked for them."""
        layer = self.prompts.talker_layer if prompt_states is not None else None
        with capture_prompt_hidden(self.thinker, layer) if layer else contextlib.nullcontext({}) as hooked:
            result = prompt_pass()
        if "hidden" in hooked and "hidden" not in prompt_states:
            prompt_states["hidden"] = hooked["hidden"]
        return result

    def _set_sampling(self, row: ThinkerRow) -> None:
        slot, sampling = row.slot, row.sampling
        self.temperature[slot] = 1.0 if row.greedy else sampling.temperature
        self.top_k[slot] = self.limit if row.greedy else max(1, min(sampling.top_k, self.limit))
        self.top_p[slot] = 1.0 if row.greedy else sampling.top_p

    def _move_into_slot(self, row: ThinkerRow) -> None:
        """A lone reply joins the batch: its cache, rope offset, seen tokens and last token into its slot."""
        slot, prompts = row.slot, self.prompts
        self.store.fill(slot, prompts.cache, int(prompts.filled))
        self.rope_delta[slot] = prompts.rope_delta[0, 0]
        self._set_sampling(row)
        self.seen[slot].copy_(prompts.seen[0])
        self.token_in[slot].copy_(row.token[0])
        self.active[slot] = 1
        row.alone, row.token = False, None

    def release(self, row: ThinkerRow) -> None:
        """The row's slot is free from the next step on."""
        if self.rows.get(row.slot) is row:
            del self.rows[row.slot]
            self.active[row.slot] = 0
            self.store.free(row.slot)

    @torch.inference_mode()
    def step(self) -> dict[int, int]:
        """One token for every busy row: {slot: token id}."""
        launched = self.launch()
        return launched.read() if launched is not None else {}

    @torch.inference_mode()
    def launch(self) -> "Launched | None":
        """Start the next step for every busy row, without waiting for it: its tokens come with ``read()``. The
        step reads the tokens of the one before on the GPU, so the host may read those while this one runs."""
        if not self.rows:
            return None
        host, self._flip = self._host[self._flip], 1 - self._flip
        for row in self.rows.values():
            row.produced += 1
            if row.alone:  # the only row: the one-row decoder's step
                row.token = self.prompts.advance(row.token, row.sampling)
                host[row.slot:row.slot + 1].copy_(row.token.view(-1), non_blocking=host.is_pinned())
                return Launched(dict(self.rows), host, self._copied())
        batch = next(b for b in self.batch_sizes if b > max(self.rows))
        for row in self.rows.values():
            self._draw_noise(row)
        host[:batch].copy_(self._steps[batch]().view(-1), non_blocking=host.is_pinned())
        self.steps += 1
        return Launched(dict(self.rows), host, self._copied())

    def _copied(self) -> torch.cuda.Event | None:
        if not self.token_in.is_cuda:
            return None
        event = torch.cuda.Event()
        event.record()
        return event

    def _draw_noise(self, row: ThinkerRow) -> None:
        if row.greedy:
            self.uniform[row.slot].fill_(0.5)  # the same noise everywhere: argmax
        else:
            self.uniform[row.slot].uniform_(generator=row.sampling.generator)

    # Read and write only the fixed buffers and the slots: what gets captured, per batch size.

    def _step_fn(self, token_in: torch.Tensor) -> torch.Tensor:
        """A step of the first ``token_in.shape[0]`` rows (``token_in``: theirs, a view of ``self.token_in``)."""
        store, batch = self.store, token_in.shape[0]
        position = (store.lengths[:batch, None] + self.rope_delta[:batch]).view(1, batch, 1).expand(3, batch, 1)
        embeds = self.thinker.get_input_embeddings()(token_in)
        hidden = self.thinker.model(inputs_embeds=embeds, attention_mask=store.step_mask(batch),
                                    past_key_values=store.cache, position_ids=position,
                                    use_cache=True).last_hidden_state
        rows = slice(0, batch)
        token = sample_rows(self.thinker.lm_head(hidden[:, -1]), self.seen[rows], self.temperature[rows],
                            self.top_k[rows], self.top_p[rows], self.uniform[rows], self.limit, self.repetition_penalty)
        store.advance(batch, self.active[rows])
        token_in.copy_(token)
        return token

    def compile(self, torch_compile: bool = True) -> float:
        """On a GPU, each batch size's step captured as a CUDA graph; ``torch_compile``: compiled first, once
        for every size (steps.py), on any device (a lone reply keeps the one-row decoder's compiled step).
        Returns the seconds it took. If compiling fails the steps are captured as they are; if capturing
        fails too, they stay eager (slower, same tokens)."""
        started = time.perf_counter()
        on_gpu = self.token_in.is_cuda
        for compiling in dict.fromkeys((torch_compile, False)):
            if not (on_gpu or compiling):
                break
            try:
                self._steps = steps_per_size(self._step_fn, self.token_in, self.batch_sizes, compiling,
                                             self.prompts.capture_stream)
                self.batch_sizes, self.compiled, self.torch_compiled = sorted(self._steps), True, compiling
                break
            except Exception:
                log.exception("%s the thinker's batched steps failed; %s", "compiling" if compiling else "capturing",
                              "captured as they are" if compiling and on_gpu else "they run eagerly (slower, same tokens)")
        return time.perf_counter() - started
