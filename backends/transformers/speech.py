"""Streaming speech for Qwen3-Omni: the talker speaks while the thinker is still writing.

Stock ``generate()`` runs the thinker to the end, then the talker, then code2wav. The
talker only ever needs (a) the thinker's states for the prompt, known right after the
thinker's prefill, and (b) one new text embedding per step (``trailing_text_hidden``).
So here the thinker runs as usual (``thinker.generate`` with a streamer) while a talker
loop of our own consumes its tokens as they come, and code2wav decodes the codec frames
in chunks. Conditioning, sampling and decoding follow stock ``generate()`` exactly: with
greedy decoding the codes and the waveform are identical (tests compare them).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from backends.transformers.cuda_graphs import compute_device
from backends.transformers.talker_decoder import TalkerDecoder
from backends.transformers.vocoder import StreamingVocoder
from backends.events import OUTPUT_SAMPLE_RATE, AudioChunk, Error
from messages import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TalkerSampling:
    """Stock generate()'s talker defaults; the code predictor follows ``do_sample``."""

    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    max_frames: int = 4096
    seed: int | None = None


@dataclass(frozen=True)
class TalkerSetup:
    """What one reply's talker speaks from: the model, the thinker's inputs for the reply, the voice, the
    sampling, and the backend's static-cache decoder (None: one made for this reply)."""

    model: Any
    inputs: dict
    speaker: str
    sampling: TalkerSampling = TalkerSampling()
    decoder: TalkerDecoder | None = None


class TextFeed:
    """The thinker's generated token ids, shared with the talker thread."""

    def __init__(self, yields_to_talker: bool = False):
        """``yields_to_talker``: extend() (the thinker's thread) waits while the talker holds the feed."""
        self._ids: list[int] = []
        self._finished = False
        self._changed = threading.Condition()
        self._yields = yields_to_talker
        self._held = False
        self.listener: threading.Event | None = None
        """Set whenever text comes or the reply ends (the batched talker's loop waits on it)."""

    def extend(self, ids: list[int]) -> None:
        with self._changed:
            self._ids.extend(ids)
            self._changed.notify_all()
            if self.listener is not None:
                self.listener.set()
            while self._held and not self._finished:
                self._changed.wait(timeout=0.1)

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Pause the thinker at its next token while the talker does work that needs no new text.

        The first audio waits on two big eager steps (the talker's prompt, the first code2wav
        chunk); beside a thinker that launches a CUDA graph every few milliseconds they take
        several times longer (the two threads share the GPU and the interpreter). A pause of a
        few hundred milliseconds in the text buys a much earlier first sound.
        """
        if not self._yields:
            yield
            return
        with self._changed:
            self._held = True
        try:
            yield
        finally:
            with self._changed:
                self._held = False
                self._changed.notify_all()

    def finish(self) -> None:
        with self._changed:
            self._finished = True
            self._changed.notify_all()
            if self.listener is not None:
                self.listener.set()

    def wait_finished(self, stop: threading.Event) -> None:
        with self._changed:
            while not self._finished and not stop.is_set():
                self._changed.wait(timeout=0.1)

    def ready_token(self, index: int) -> tuple[bool, int | None]:
        """``spoken_token`` without waiting: (whether it is known yet, the token or None)."""
        with self._changed:
            if len(self._ids) > index + 1:
                return True, self._ids[index]
            return self._finished, None

    def spoken_token(self, index: int, stop: threading.Event) -> int | None:
        """Generated token ``index`` if the talker speaks it, else None (once that is certain).

        Stock generate() feeds the talker every generated token but the last (the thinker
        never embeds its final token), so token ``index`` counts only once a later one exists.
        """
        with self._changed:
            while len(self._ids) <= index + 1 and not self._finished and not stop.is_set():
                self._changed.wait(timeout=0.1)
            return self._ids[index] if len(self._ids) > index + 1 else None


@contextmanager
def capture_prompt_hidden(thinker, layer: int) -> Iterator[dict]:
    """Keep the output of thinker layer ``layer`` (1-based, as in ``hidden_states``) for the prompt.

    The talker reads it at audio/image/video positions. A forward hook gets it during the
    thinker's own prefill, so nothing is computed twice and generate() stays stock.
    """
    captured: dict = {}

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if "hidden" not in captured and hidden.shape[1] > 1:
            captured["hidden"] = hidden.detach().clone()  # clone: graph-owned memory may be reused
            # Gone before the first decode step: a compiled decode step never sees (or guards on) a hook.
            handle.remove()

    handle = thinker.model.layers[layer - 1].register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


class Talker:
    """The talker + code predictor loop of stock ``generate()``, fed text as it streams in.

    Example::

        talker = Talker(TalkerSetup(model, inputs, "ethan"), feed, captured, stop)
        for frame in talker.frames():   # LongTensor (num_code_groups,) per 80 ms of speech
            ...
    """

    def __init__(self, setup: TalkerSetup, feed: TextFeed, captured: dict, stop: threading.Event):
        model = setup.model
        self.model, self.talker, self.config, self.decoder = model, model.talker, model.config, setup.decoder
        self.prefilled_at: float | None = None
        self.inputs, self.sampling = setup.inputs, setup.sampling
        self.feed, self.captured, self.stop = feed, captured, stop
        self.speaker_id = self.config.talker_config.speaker_id[setup.speaker.lower()]
        self.device = compute_device(self.talker)
        self.generator = torch.Generator(device=self.device)
        if setup.sampling.seed is not None:
            self.generator.manual_seed(setup.sampling.seed)
        else:
            self.generator.seed()

    @torch.inference_mode()
    def frames(self) -> Iterator[torch.Tensor]:
        first_text = self.feed.spoken_token(0, self.stop)
        if first_text is None or self.stop.is_set():
            return  # a reply of one token (or none) has nothing to speak
        if self.device.type == "cuda":  # our own stream: see SpeechRun._run; wait for the prompt's states
            torch.cuda.current_stream(self.device).wait_stream(torch.cuda.default_stream(self.device))
        tts_bos, tts_eos, tts_pad = self.text_hidden(
            [self.config.tts_bos_token_id, self.config.tts_eos_token_id, self.config.tts_pad_token_id]
        ).split(1, dim=1)
        embeds, ids = self.prompt_embeds(first_text, tts_bos, tts_eos, tts_pad)
        decoder = self.decoder
        if decoder is None or not decoder.fits(ids.shape[1], self.sampling.max_frames):
            decoder = TalkerDecoder(self.talker, ids.shape[1] + self.sampling.max_frames + 1)  # eager, this reply only
        attention_mask = torch.ones(ids.shape, dtype=torch.long, device=self.device)
        with self.feed.holding():
            logits, hidden = decoder.prefill(embeds, ids, attention_mask, self.rope_inputs())
        self.prefilled_at = time.perf_counter()
        processors = self.codec_processors()
        generated = torch.empty((1, 0), dtype=torch.long, device=self.device)
        text_ended = False
        for step in range(self.sampling.max_frames):
            token = self.sample_code(logits.to(self.device), generated, processors)
            generated = torch.cat([generated, token], dim=1)
            if token.item() == self.config.talker_config.codec_eos_token_id or step + 1 >= self.sampling.max_frames:
                return  # stock generate() never decodes the last sampled token
            if self.stop.is_set():
                return
            token_embed = self.talker.get_input_embeddings()(token)
            residual, codec_embeds = decoder.predict(hidden, token_embed,
                                                     self.generator if self.sampling.do_sample else None)
            yield torch.cat([token[0], residual[0]])
            next_text = None if text_ended else self.feed.spoken_token(step + 1, self.stop)
            if next_text is not None:
                text = self.text_hidden([next_text])
            else:
                text, text_ended = (tts_pad if text_ended else tts_eos), True
            logits, hidden = decoder.step(codec_embeds, text)

    def text_hidden(self, token_ids: list[int]) -> torch.Tensor:
        ids = torch.tensor([token_ids])
        if self.model.thinker.device.type == "cuda":  # pinned: the copy needn't wait for the GPU's queue
            ids = ids.pin_memory().to(self.model.thinker.device, non_blocking=True)
        else:
            ids = ids.to(self.model.thinker.device)
        return self.talker.text_projection(self.model.thinker.get_input_embeddings()(ids)).to(self.device)

    def prompt_embeds(self, first_text: int, tts_bos, tts_eos, tts_pad) -> tuple[torch.Tensor, torch.Tensor]:
        """The talker's prompt: every user turn (text embeddings, audio/vision hidden states),
        then the assistant header with the speaker and the first text token, as stock does."""
        cfg, thinker_cfg = self.config, self.config.thinker_config
        input_ids = self.inputs["input_ids"]
        length = input_ids.shape[1]
        # With device_map="auto" layer `accept_hidden_layer` may sit on another GPU: gather on input_ids' device,
        # as stock generate() does.
        thinker_embed = self.model.thinker.get_input_embeddings()(input_ids).to(input_ids.device)
        prompt_hidden = self.captured["hidden"].to(input_ids.device)
        multimodal = (input_ids == thinker_cfg.audio_token_id) | (input_ids == thinker_cfg.image_token_id) | (
            input_ids == thinker_cfg.video_token_id)
        user_parts = self.model._get_talker_user_parts(0, length, multimodal, prompt_hidden, thinker_embed)
        # A position belongs to the role named right after the <|im_start|> that precedes it.
        positions = torch.arange(length, device=input_ids.device)
        starts = torch.where(input_ids[0] == cfg.im_start_token_id, positions, -1).cummax(0).values.clamp_min(0)
        user = input_ids[0, (starts + 1).clamp_max(length - 1)] == cfg.user_token_id
        header = (input_ids[0, :-1] == cfg.im_start_token_id) & (input_ids[0, 1:] == cfg.assistant_token_id)
        assistant_start = int(header.nonzero()[-1])
        with_first = torch.cat([thinker_embed, self.model.thinker.get_input_embeddings()(
            torch.tensor([[first_text]], device=input_ids.device))], dim=1)
        assistant_embeds, assistant_ids, _ = self.model._get_talker_assistant_parts(
            assistant_start, length + 1, self.speaker_id, with_first, tts_pad, tts_bos, tts_eos)
        embeds = torch.cat([user_parts[:, user].to(self.device), assistant_embeds.to(self.device)], dim=1)
        ids = torch.cat([input_ids[:, user].to(self.device), assistant_ids.to(self.device)], dim=1)
        return embeds, ids

    def rope_inputs(self) -> dict:
        """What the talker's 3D rope needs; like stock, it gets no use_audio_in_video."""
        keys = ("image_grid_thw", "video_grid_thw", "video_second_per_grid")
        rope = {key: self.inputs[key] for key in keys if self.inputs.get(key) is not None}
        if self.inputs.get("feature_attention_mask") is not None:
            rope["audio_feature_lengths"] = self.inputs["feature_attention_mask"].sum(dim=1)
        return rope

    def codec_processors(self) -> LogitsProcessorList:
        talker_cfg = self.config.talker_config
        vocab = talker_cfg.text_config.vocab_size
        # Stock suppresses the special codec block except EOS: the talker must only emit codes.
        suppressed = [i for i in range(vocab - 1024, vocab) if i != talker_cfg.codec_eos_token_id]
        processors = LogitsProcessorList([
            RepetitionPenaltyLogitsProcessor(self.sampling.repetition_penalty),
            SuppressTokensLogitsProcessor(suppressed, device=self.device),
        ])
        if self.sampling.do_sample:
            processors += sampling_warpers(self.sampling.temperature, self.sampling.top_k, self.sampling.top_p)
        return processors

    def sample_code(self, logits: torch.Tensor, generated: torch.Tensor | None, processors) -> torch.Tensor:
        scores = processors(generated if generated is not None else logits.new_empty((1, 0), dtype=torch.long),
                            logits.float())
        if not self.sampling.do_sample:
            return scores.argmax(dim=-1, keepdim=True)
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator)


def sampling_warpers(temperature: float, top_k: int, top_p: float) -> LogitsProcessorList:
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    return warpers


@functools.cache
def talker_stream(device: torch.device) -> torch.cuda.Stream:
    """The one CUDA stream every reply's talker runs on, per GPU. cuBLAS keeps a workspace for each stream it
    has run on (9.6 MB), and torch.cuda.Stream() deals out its pool's 32 streams in turn: a new stream per reply
    would leave up to 32 of them behind (0.3 GB) over a session's replies."""
    return torch.cuda.Stream(device)


class SpeechRun:
    """The talker thread of one reply: codec frames → audio chunks → ``AudioChunk`` events.

    Example::

        speech = SpeechRun(TalkerSetup(model, inputs, "ethan"), StreamingVocoder(model.code2wav), emit, stop)
        with speech.running():           # captures the prompt states, starts the talker
            model.thinker.generate(**inputs, streamer=<something that calls speech.feed.extend>)
        speech.metrics()
    """

    def __init__(self, setup: TalkerSetup, vocoder: StreamingVocoder, emit, stop: threading.Event,
                 started: float | None = None, feed: TextFeed | None = None):
        self.setup, self.model, self.vocoder = setup, setup.model, vocoder
        self.emit, self.stop = emit, stop
        self.feed = feed or TextFeed(yields_to_talker=True)  # our thinker runs in a thread: it can wait
        self.started = time.perf_counter() if started is None else started
        self.frames = 0
        self.samples = 0
        self.talker_started: float | None = None
        self.first_audio_at: float | None = None
        self.finished_at: float | None = None

    @contextmanager
    def running(self, prompt_hidden: torch.Tensor | None = None) -> Iterator[dict]:
        """Yields the dict the talker reads the prompt's states from (``"hidden"``): a hook on the thinker's
        layer fills it, or a captured prompt pass that bypasses hooks (ThinkerDecoder).
        ``prompt_hidden``: those states, when no thinker runs inside this block to capture them (the
        hybrid backend computes them itself)."""
        layer = self.model.config.talker_config.accept_hidden_layer
        given = contextlib.nullcontext({"hidden": prompt_hidden}) if prompt_hidden is not None else None
        with given or capture_prompt_hidden(self.model.thinker, layer) as captured:
            worker = threading.Thread(target=self._run, args=(captured,), daemon=True, name="omni-talker")
            worker.start()
            try:
                yield captured
            finally:
                self.feed.finish()
                worker.join()  # the reply is done when its speech is

    def _run(self, captured: dict) -> None:
        # On a GPU the talker gets a CUDA stream of its own: on the thinker's stream each of its
        # syncs (one per frame) would wait for the thinker's queued steps, and its kernels could
        # never run beside the thinker's.
        device = compute_device(self.model.talker)
        with torch.cuda.stream(talker_stream(device)) if device.type == "cuda" else contextlib.nullcontext():
            self._speak(captured)

    def _speak(self, captured: dict) -> None:
        try:
            talker = Talker(self.setup, self.feed, captured, self.stop)
            for frame in talker.frames():
                if self.talker_started is None:
                    self.talker_started = time.perf_counter()
                    log.debug("speech timeline: talker prefill done +%.3f s, first frame +%.3f s",
                              talker.prefilled_at - self.started, self.talker_started - self.started)
                self.frames += 1
                with self.feed.holding() if self.samples == 0 else contextlib.nullcontext():
                    self.send(self.vocoder.push(frame))
            self.send(self.vocoder.flush())
        except Exception as err:  # speech is extra: the text reply goes on without it
            if not self.stop.is_set():
                log.exception("speech generation failed")
                self.emit(Error(Message("speech.failed_reply_kept", {"cause": f"{err.__class__.__name__}: {err}"}),
                                "speech"))
        finally:
            self.finished_at = time.perf_counter()

    def send(self, wav: torch.Tensor | None) -> None:
        if wav is None or wav.numel() == 0 or self.stop.is_set():
            return
        samples = wav.cpu().numpy()
        self.first_audio_at = self.first_audio_at or time.perf_counter()
        self.samples += samples.size
        if self.samples == samples.size:
            log.debug("speech timeline: first audio chunk +%.3f s", self.first_audio_at - self.started)
        self.emit(AudioChunk(samples))

    def metrics(self) -> dict:
        """The speech fields of ``events.Metrics``."""
        audio_s = self.samples / OUTPUT_SAMPLE_RATE
        talker_s = (self.finished_at or 0) - (self.talker_started or self.started)
        return {
            "time_to_first_audio_s": None if self.first_audio_at is None else self.first_audio_at - self.started,
            "audio_seconds": audio_s,
            "talker_frames_per_s": self.frames / talker_s if self.frames and talker_s > 0 else None,
            "real_time_factor": talker_s / audio_s if audio_s else None,
        }
