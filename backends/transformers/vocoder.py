"""code2wav for streamed speech: in chunks whose concatenation equals one decode of all frames
(StreamingVocoder), the convolutions of a chunk over its new frames only (decode_tail), and the chunk lengths
every stream has captured as CUDA graphs (CapturedVocoder)."""

from __future__ import annotations

import time

import torch

from backends.transformers.cuda_graphs import captured_each, compute_device

CONV_REACH_FRAMES = 12
"""Frames before a chunk's new ones that code2wav's convolutions read: their kernels, dilations and upsampling
reach 10 frames back from the first sample a chunk emits (autograd through them); 2 more for margin. Random
weights hide most of it (their contributions fade within 5 frames), trained ones need not."""


class StreamingVocoder:
    """code2wav in chunks whose concatenation equals one decode of all frames.

    A decode of F frames yields ``F * upsample - trim`` samples, and its first samples never
    change when more frames follow (code2wav is causal). So each chunk re-decodes
    ``left_context`` earlier frames and keeps only the samples after what was already sent.
    The context must cover the transformer's sliding window plus the convolutions' reach
    (with random weights window + 4 frames was exact to 1e-6; with stock's 25 frames a long reply
    drifts by ~1% of its peak); the convolutions themselves run over the new frames and
    ``CONV_REACH_FRAMES`` before them only (``decode_tail``). Stock ``chunked_decode`` also cuts
    ``trim`` samples out at every chunk boundary.
    """

    def __init__(self, code2wav, first_chunk: int = 4, chunk: int = 25, left_context: int | None = None,
                 decode=None):
        """``decode(codes, conv_frames)``: the waveform of the codes' last ``conv_frames`` frames, decode_tail's
        signature (default decode_tail on code2wav; the backend passes a ``CapturedVocoder``)."""
        self.code2wav, self.first_chunk, self.chunk = code2wav, first_chunk, chunk
        self.decode = decode or (lambda codes, conv_frames: decode_tail(code2wav, codes, conv_frames))
        self.device = compute_device(code2wav)
        # At least one frame: a chunk's first samples finish the frame before it (code2wav trims its tail).
        self.left_context = max(1, self.default_left_context(code2wav) if left_context is None else left_context)
        self.upsample = int(code2wav.total_upsample)
        self.frames: list[torch.Tensor] = []
        self.sent_frames = 0  # frames whose audio has been returned (up to their trimmed tail)
        self.trim: int | None = None

    @staticmethod
    def default_left_context(code2wav) -> int:
        window = getattr(code2wav.config, "sliding_window", None) or 72
        return window + CONV_REACH_FRAMES

    @staticmethod
    def chunk_frame_counts(first_chunk: int, chunk: int, left_context: int,
                           whole_only: bool = False) -> tuple[int, ...]:
        """The frames code2wav decodes per chunk (context included) in any stream, but its last
        chunk: the lengths worth capturing. They repeat once the context is full. ``whole_only``: only
        the chunks whose convolutions run over every frame decoded (sent within their reach)."""
        counts, sent, frames = [], 0, first_chunk
        while not (whole_only and sent > CONV_REACH_FRAMES):
            count = frames - max(0, sent - left_context)
            if count in counts:
                break
            counts.append(count)
            sent, frames = frames, frames + chunk
        return tuple(counts)

    @staticmethod
    def tail_shapes(first_chunk: int, chunk: int, left_context: int) -> tuple[tuple[int, int], ...]:
        """(frames decoded, frames upsampled) of the chunks after those decoded whole: a long reply's later
        chunks, the last of which repeats to its end (decode_tail's arguments; worth capturing too)."""
        whole = StreamingVocoder.chunk_frame_counts(first_chunk, chunk, left_context, whole_only=True)
        return tuple((count, chunk + CONV_REACH_FRAMES)
                     for count in StreamingVocoder.chunk_frame_counts(first_chunk, chunk, left_context)
                     if count not in whole)

    def push(self, frame: torch.Tensor) -> torch.Tensor | None:
        """Add one frame of codes; returns new samples when a chunk is complete."""
        self.frames.append(frame)
        due = self.first_chunk if self.sent_frames == 0 else self.chunk
        return self._decode() if len(self.frames) - self.sent_frames >= due else None

    def flush(self) -> torch.Tensor | None:
        return self._decode() if len(self.frames) > self.sent_frames else None

    @torch.inference_mode()
    def _decode(self) -> torch.Tensor:
        start = max(0, self.sent_frames - self.left_context)
        conv_start = max(start, self.sent_frames - CONV_REACH_FRAMES)  # where the convolutions' samples begin
        codes = torch.stack(self.frames[start:], dim=1).unsqueeze(0).to(self.device)
        wav = self.decode(codes, len(self.frames) - conv_start)[0, 0]
        if self.trim is None:
            self.trim = (len(self.frames) - conv_start) * self.upsample - wav.shape[-1]
        begin = 0 if self.sent_frames == 0 else (self.sent_frames - conv_start) * self.upsample - self.trim
        self.sent_frames = len(self.frames)
        return wav[begin:].float()


class CapturedVocoder:
    """code2wav for the chunk lengths a speech stream always has, each captured as a CUDA graph.

    Eagerly, code2wav's hundreds of small kernels wait on Python, and the first chunk is on the
    way to the first sound. A shorter length (a reply's last chunk) runs in the next captured one,
    padded; a longer one eagerly. On the CPU the same fixed-buffer functions run without graphs.

    Example::

        vocoder = CapturedVocoder(model.code2wav, frame_counts=(4, 29, 54))
        vocoder.capture()
        wav = vocoder(codes)          # codes (1, num_quantizers, frames) → (1, 1, samples), like code2wav
    """

    def __init__(self, code2wav, frame_counts: tuple[int, ...], tails: tuple[tuple[int, int], ...] = ()):
        """``tails``: the (frames, frames upsampled) of later chunks to capture too (StreamingVocoder.tail_shapes):
        eager, each took 26-31 ms on an H200, nearly all of it kernel launches."""
        self.code2wav = code2wav
        self.device = compute_device(code2wav)
        self.frame_counts = sorted(set(frame_counts))
        self.tails = sorted(set(tails))
        self.upsample = int(code2wav.total_upsample)  # samples per frame
        quantizers = code2wav.config.num_quantizers
        self.codes_in = {n: torch.zeros((1, quantizers, n), device=self.device, dtype=torch.long)
                         for n in self.frame_counts}
        self.tail_in = {shape: torch.zeros((1, quantizers, shape[0]), device=self.device, dtype=torch.long)
                        for shape in self.tails}
        self._decoders: dict = {}
        self._tail_decoders: dict = {}

    def capture(self) -> float:
        started = time.perf_counter()
        self._decoders = captured_each(lambda n: self.code2wav(self.codes_in[n]), self.frame_counts, self.device,
                                       "code2wav")
        self._tail_decoders = captured_each(lambda shape: decode_tail(self.code2wav, self.tail_in[shape], shape[1]),
                                            self.tails, self.device, "code2wav's later chunks")
        return time.perf_counter() - started

    @torch.inference_mode()
    def __call__(self, codes: torch.Tensor, conv_frames: int | None = None) -> torch.Tensor:
        """decode_tail's signature. A whole decode (``conv_frames`` None or all the frames) runs in the
        shortest captured length that holds it: code2wav is causal (causal convolutions, causal attention), so
        the padding after the codes changes none of their samples, which are cut out. A tail (a later chunk of
        a long reply, after its context) runs in its own graph when ``tails`` has its shape, else eagerly."""
        frames = codes.shape[-1]
        if conv_frames is not None and conv_frames < frames:
            tail = self._tail_decoders.get((frames, conv_frames))
            if tail is None:
                return decode_tail(self.code2wav, codes, conv_frames)
            self.tail_in[(frames, conv_frames)].copy_(codes)
            return tail().clone()  # the graph's output is overwritten at its next replay
        padded = next((n for n in self.frame_counts if n >= frames and n in self._decoders), None)
        if padded is None:
            return decode_tail(self.code2wav, codes, frames)
        self.codes_in[padded][..., :frames].copy_(codes)
        self.codes_in[padded][..., frames:].zero_()
        wav = self._decoders[padded]()
        # code2wav's output for n frames is n * upsample samples less a constant the convolutions trim.
        samples = wav.shape[-1] - (padded - frames) * self.upsample
        return wav[..., :samples].clone()  # the graph's output is overwritten at its next replay


def decode_tail(code2wav, codes: torch.Tensor, conv_frames: int) -> torch.Tensor:
    """``code2wav(codes)`` for its last ``conv_frames`` frames only: (1, 1, conv_frames * upsample - trim).

    code2wav's transformer attends over a window of 72 frames, but its convolutions, which upsample each frame
    to 1920 samples and hold nearly all of its work and activations, reach back 10 frames. So the
    transformer runs over every frame given and the convolutions over the last ``conv_frames``: a streamed
    chunk of 25 new frames with its 84 frames of context upsamples 37 frames, not 109. The steps are
    code2wav.forward's own (transformers 5.19), cut between its transformer and its convolutions."""
    if conv_frames >= codes.shape[-1]:
        return code2wav(codes)
    hidden = code2wav.code_embedding(codes + code2wav.code_offset).mean(1)
    hidden = code2wav.pre_transformer(inputs_embeds=hidden).last_hidden_state
    hidden = hidden[:, -conv_frames:].permute(0, 2, 1)
    for blocks in code2wav.upsample:
        for block in blocks:
            hidden = block(hidden)
    for block in code2wav.decoder:
        hidden = block(hidden)
    return hidden.clamp(min=-1, max=1)
