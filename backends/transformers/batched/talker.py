"""The talker and its code predictor for several replies at once: one batched step, one batched frame.

Like the thinker's batch (thinker.py): a reply's talker prompt runs through the one-row ``TalkerDecoder``
(its captured prompt passes) and is copied into a free slot; a step then advances every row that has its next
text, and a frame predicts the fifteen residual codes of every row that sampled a first code. The predictor
starts afresh each frame at the same positions for every row, so its cache is an ordinary StaticCache, of
every slot: the predictor is a small dense model, whose frame costs about the same for 2 rows as for 8 (its
weights are what it reads), so one frame of all the slots serves whatever rows sampled a code, with a single
compile and graph. Rows draw their noise from their own generators in a lone reply's order.
"""

from __future__ import annotations

import logging
import math
import time

import torch
from transformers import StaticCache

from backends.transformers.batched.packed import pack_talker
from backends.transformers.batched.slots import SlotStore
from backends.transformers.batched.steps import steps_per_size
from backends.transformers.cuda_graphs import captured, compute_device
from backends.transformers.speech import sampling_warpers
from backends.transformers.talker_decoder import PREDICTOR_TOP_K, TalkerDecoder, _gumbel_pick

log = logging.getLogger(__name__)


class TalkerBatch:
    """Example::

        batch = TalkerBatch(model.talker, TalkerDecoder(model.talker, 12_000, ...), slots=8)
        slot, logits, hidden = batch.admit(embeds, ids, attention_mask, rope_inputs)
        codes = batch.first_codes({slot: (logits, sampling, generator)})   # (rows, 1), for all rows at once
        residual, codec_embeds = batch.predict([slot], hidden, token_embeds, [generator])   # rows in that order
        batch.codec_in[slot] = codec_embeds[0]; batch.text_in[slot] = text
        logits, hidden = batch.step({slot})          # rows of the batch; only those named advance
        batch.release(slot)
    """

    def __init__(self, talker, prompts: TalkerDecoder, slots: int, batch_sizes: tuple[int, ...] = (1, 2, 4, 8)):
        self.talker, self.predictor, self.prompts, self.slots = talker, talker.code_predictor, prompts, slots
        self.groups = talker.config.num_code_groups
        device, dtype = compute_device(talker), talker.dtype
        hidden = talker.config.text_config.hidden_size
        self.store = SlotStore(talker.config.text_config, slots, prompts.max_tokens, device, dtype)
        self.batch_sizes = sorted({b for b in batch_sizes if b < slots} | {slots})
        self.codec_in = torch.zeros((slots, 1, hidden), device=device, dtype=dtype)
        self.text_in = torch.zeros((slots, 1, hidden), device=device, dtype=dtype)
        self.rope_delta = torch.zeros((slots, 1), device=device, dtype=torch.long)
        self.talker_hidden_in = torch.zeros((slots, 1, hidden), device=device, dtype=dtype)
        self.token_embed_in = torch.zeros((slots, 1, hidden), device=device, dtype=dtype)
        self.uniform = torch.full((slots, self.groups - 1, PREDICTOR_TOP_K), 0.5, device=device)
        self.active = torch.zeros((slots,), device=device, dtype=torch.long)
        vocab = talker.config.text_config.vocab_size
        self.codes_seen = torch.zeros((slots, vocab), device=device, dtype=torch.bool)
        """Each row's codes so far: the ones its repetition penalty applies to."""
        # Stock suppresses the special codec block except its end: the talker must only emit codes.
        self.suppressed = torch.zeros((vocab,), device=device, dtype=torch.bool)
        self.suppressed[vocab - 1024:] = True
        self.suppressed[talker.config.codec_eos_token_id] = False
        self.penalty = torch.ones((slots, 1), device=device)
        """Each row's repetition penalty (``_penalties`` mirrors it on the host)."""
        self._penalties: dict[int, float] = {}
        self._indices: dict[tuple[int, ...], torch.Tensor] = {}
        self.predictor_cache = StaticCache(config=self.predictor.config, max_cache_len=self.groups)
        self.busy: set[int] = set()
        self.alone: int | None = None
        """The slot of the only busy row while it speaks through the one-row decoder (its compiled steps)."""
        self._steps = {b: (lambda b=b: self._step_fn(self.codec_in[:b])) for b in self.batch_sizes}
        self._predict = self._predict_fn
        self.compiled = self.torch_compiled = False
        """Captured (on a GPU) or compiled; compiled with torch.compile."""
        with torch.inference_mode():  # StaticCache allocates on its first write: now, outside any graph
            self._predict_fn()

    def fits(self, prompt_tokens: int, frames: int) -> bool:
        return self.prompts.fits(prompt_tokens, frames)

    @property
    def free(self) -> int:
        return self.slots - len(self.busy)

    @torch.inference_mode()
    def admit(self, embeds: torch.Tensor, ids: torch.Tensor, attention_mask: torch.Tensor, rope_inputs: dict,
              alone: bool = False) -> tuple[int, torch.Tensor, torch.Tensor]:
        """A reply's talker prompt, for the lowest free slot: (slot, logits (1, vocab), hidden (1, 1, hidden)).
        ``alone``: no other row is busy, so it speaks through the one-row decoder until another joins."""
        slot = next(s for s in range(self.slots) if s not in self.busy)
        if self.alone is not None:
            self._move_into_slot()  # the one-row cache is about to take this prompt
        logits, hidden = self.prompts.prefill(embeds, ids, attention_mask, rope_inputs)
        self.busy.add(slot)
        self.codes_seen[slot].zero_()
        self.active[slot] = 0
        if alone and len(self.busy) == 1:
            self.alone = slot
        else:
            self.store.fill(slot, self.prompts.cache, embeds.shape[1])
            self.rope_delta[slot] = self.talker.rope_deltas.reshape(-1)[0]
        return slot, logits.clone(), hidden.clone()  # the prompt pass's buffers serve the next admission too

    @torch.inference_mode()
    def admit_packed(self, prompts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]]
                     ) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Several replies' talker prompts (``admit``'s arguments each) in one pass (packed.py), each into the
        lowest free slot: [(slot, logits (1, vocab), hidden (1, 1, H))] in order."""
        if self.alone is not None:
            self._move_into_slot()  # the one-row cache is about to take these prompts
        positions, deltas = [], []
        for embeds, ids, attention_mask, rope_inputs in prompts:
            positions.append(self.talker.compute_3d_position_ids(embeds, talker_input_ids=ids,
                                                                 attention_mask=attention_mask,
                                                                 past_key_values=None, **rope_inputs))
            deltas.append(self.talker.rope_deltas.reshape(-1)[0].clone())
        logits, hidden, starts = pack_talker(self.prompts, [p[0] for p in prompts], positions)
        admitted = []
        try:  # all or none: a failure on the way leaves no slot taken
            for index, ((embeds, *_), start, delta) in enumerate(zip(prompts, starts, deltas)):
                slot = next(s for s in range(self.slots) if s not in self.busy)
                self.busy.add(slot)
                admitted.append((slot, logits[index:index + 1], hidden[index:index + 1]))
                self.active[slot] = 0
                self.codes_seen[slot].zero_()
                self.store.fill(slot, self.prompts.cache, embeds.shape[1], start)
                self.rope_delta[slot] = delta
        except BaseException:
            for slot, _, _ in admitted:
                self.release(slot)
            raise
        return admitted

    def _move_into_slot(self) -> None:
        """The lone row joins the batch: its cache and rope offset into its slot."""
        slot, prompts = self.alone, self.prompts
        self.store.fill(slot, prompts.cache, int(prompts.cache.layers[0].cumulative_length))
        self.rope_delta[slot] = prompts.rope_delta[0, 0]
        self.alone = None

    def release(self, slot: int) -> None:
        self.busy.discard(slot)
        self.active[slot] = 0
        self.store.free(slot)
        if self.alone == slot:
            self.alone = None

    def index(self, slots: list[int]) -> torch.Tensor:
        """``slots`` as a tensor on the device, made once per set of rows: a tensor made from a list waits for
        the GPU to finish what is queued before the copy, which in a tick would stall the host once per call."""
        key = tuple(slots)
        index = self._indices.get(key)
        if index is None:
            if len(self._indices) > 1024:
                self._indices.clear()
            index = self._indices[key] = torch.tensor(key, device=self.codec_in.device)
        return index

    def _batch(self, slots) -> int:
        return next(b for b in self.batch_sizes if b > max(slots))

    @torch.inference_mode()
    def first_codes(self, rows: dict[int, tuple[torch.Tensor, object, torch.Generator]]) -> torch.Tensor:
        """Each row's first code of its next frame, drawn as ``Talker.sample_code`` draws it alone: {slot:
        (logits (1, vocab), its TalkerSampling, its generator)} → (rows, 1) in that order. The repetition
        penalty over the row's codes so far and the suppressed special codes run for all rows at once (the
        same arithmetic per value as transformers' processors); a sampled row then draws from its own
        generator. The codes join their rows' seen ones."""
        slots = self.index(list(rows))
        for slot, (_, sampling, _) in rows.items():
            if self._penalties.get(slot) != sampling.repetition_penalty:  # a scalar fill: no copy to wait for
                self.penalty[slot] = self._penalties[slot] = sampling.repetition_penalty
        scores = torch.cat([logits for logits, _, _ in rows.values()]).to(self.codes_seen.device).float()
        penalty = self.penalty[slots]
        penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
        scores = torch.where(self.codes_seen[slots], penalized, scores)
        scores = torch.where(self.suppressed, -math.inf, scores)
        codes = scores.argmax(dim=-1, keepdim=True)
        for index, (_, sampling, generator) in enumerate(rows.values()):
            if sampling.do_sample:
                row = sampling_warpers(sampling.temperature, sampling.top_k, sampling.top_p)(
                    scores.new_empty((1, 0), dtype=torch.long), scores[index:index + 1])
                codes[index] = torch.multinomial(torch.softmax(row, dim=-1), 1, generator=generator)[0]
        self.codes_seen[slots, codes[:, 0]] = True
        return codes

    @torch.inference_mode()
    def predict(self, slots: list[int], hidden: torch.Tensor, token_embeds: torch.Tensor,
                generators: list[torch.Generator | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames of rows ``slots``: their talker hidden states (rows, 1, H), their first codes' embeddings
        (rows, 1, H), a generator per row (None: greedy) → (their 15 residual codes (rows, 15), their summed
        codec embeddings (rows, 1, H)), valid until the next predict."""
        if self.alone is not None and slots == [self.alone]:
            return self.prompts.predict(hidden, token_embeds, generators[0])
        index = self.index(slots)
        self.talker_hidden_in.index_copy_(0, index, hidden)
        self.token_embed_in.index_copy_(0, index, token_embeds)
        for slot, generator in zip(slots, generators):
            if generator is None:
                self.uniform[slot].fill_(0.5)
            else:
                self.uniform[slot].uniform_(generator=generator)
        codes, embeds = self._predict()
        return codes[index], embeds[index]

    @torch.inference_mode()
    def step(self, slots: set[int]) -> dict:
        """One talker step for ``slots`` (their ``codec_in`` and ``text_in`` set): {slot: (logits (1, vocab),
        hidden (1, 1, H))}, valid until the next step; the batch's other rows don't advance."""
        if self.alone is not None and slots == {self.alone}:
            one = slice(self.alone, self.alone + 1)
            logits, hidden = self.prompts.step(self.codec_in[one], self.text_in[one])
            return {self.alone: (logits, hidden)}
        self.active.zero_()
        self.active[sorted(slots)] = 1
        logits, hidden = self._steps[self._batch(slots)]()
        return {slot: (logits[slot:slot + 1], hidden[slot:slot + 1]) for slot in slots}

    # Read and write only fixed buffers and caches: what gets captured (the step per batch size, the frame once).

    def _step_fn(self, codec_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A step of the first ``codec_in.shape[0]`` rows (``codec_in``: theirs, a view of ``self.codec_in``)."""
        store, batch = self.store, codec_in.shape[0]
        rows = slice(0, batch)
        position = (store.lengths[:batch, None] + self.rope_delta[rows]).view(1, batch, 1).expand(3, batch, 1)
        out = self.talker.model(inputs_embeds=codec_in + self.text_in[rows],
                                attention_mask=store.step_mask(batch), past_key_values=store.cache,
                                position_ids=position, use_cache=True)
        store.advance(batch, self.active[rows])
        hidden = out.last_hidden_state
        return self.talker.codec_head(hidden[:, -1]), hidden

    def _predict_fn(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame of every slot (rows not framing compute and are ignored)."""
        cache, rows = self.predictor_cache, slice(0, self.slots)
        for layer in cache.layers:  # a new frame: earlier keys are masked out, not erased
            layer.cumulative_length.zero_()
        model, masks = self.predictor.model, self.prompts.predictor_masks
        state = model(inputs_embeds=torch.cat([self.talker_hidden_in[rows], self.token_embed_in[rows]], dim=1),
                      attention_mask={"full_attention": masks[0]}, past_key_values=cache,
                      use_cache=True).last_hidden_state[:, -1]
        embeds, codes = self.token_embed_in[rows], []
        for group in range(self.groups - 1):
            code = _gumbel_pick(self.predictor.lm_head[group](state).float(), self.uniform[rows, group])
            codes.append(code)
            code_embed = model.get_input_embeddings()[group](code)
            embeds = embeds + code_embed
            if group + 2 < self.groups:
                state = model(inputs_embeds=code_embed, attention_mask={"full_attention": masks[group + 1]},
                              past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
        return torch.cat(codes, dim=1), embeds

    def compile(self, torch_compile: bool = True) -> float:
        """On a GPU, the step of each batch size and the frame captured as CUDA graphs; ``torch_compile``:
        compiled first (the step once for every size: steps.py), on any device. Returns the seconds it took;
        if compiling fails they are captured as they are, and if that fails too they stay eager (slower, same
        speech)."""
        started = time.perf_counter()
        on_gpu = self.codec_in.is_cuda
        stream = self.prompts.capture_stream
        for compiling in dict.fromkeys((torch_compile, False)):
            if not (on_gpu or compiling):
                break
            try:
                steps = steps_per_size(self._step_fn, self.codec_in, self.batch_sizes, compiling, stream)
                predict = torch.compile(self._predict_fn, fullgraph=True, dynamic=False) if compiling \
                    else self._predict_fn
                with torch.inference_mode():
                    if on_gpu:
                        predict = captured(predict, stream=stream)
                    else:
                        predict()
                self._steps, self._predict, self.batch_sizes = steps, predict, sorted(steps)
                self.compiled, self.torch_compiled = True, compiling
                break
            except Exception:
                log.exception("%s the talker's batched steps failed; %s", "compiling" if compiling else "capturing",
                              "captured as they are" if compiling and on_gpu else "they run eagerly (slower, same speech)")
        return time.perf_counter() - started
