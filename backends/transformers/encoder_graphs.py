"""The audio and vision encoders as CUDA graphs, one per input size, for every input up to the largest.

Eagerly, both encoders are launch-bound: their kernels take a few milliseconds, but launching them one by
one from Python, with a host sync per layer where transformers splits attention by window, took 42–75 ms of
a 10 s clip and a 448×448 image's first token (BENCHMARKS.md). Here each encoder's own forward is captured
for a ladder of sizes (audio in whole 1 s chunks, images and videos in patches), and an input runs in the
smallest size that holds it, padded, as the thinker's prompt passes already do.

Padding must not change the real positions' outputs. transformers takes the parts it computes on the host
(chunking, window boundaries, position ids, the position embedding's interpolation) precomputed, as keyword
arguments (``transformers.vision_utils``); we compute them for the real input with transformers' own helpers
and pad them. Attention is the one part rewritten: one masked attention over the padded sequence, where a
real position sees the positions of its own window (audio) or frame (vision), exactly as transformers'
attention per window does, and a padded position sees only itself. Audio is padded with zero frames to whole
chunks, which is how transformers pads a clip's last chunk anyway; the vision merger reads groups of four
patches, and a padded image is still whole groups. So the real outputs equal the stock ones up to kernel
rounding (one masked attention instead of one per window; tests/test_encoder_graphs.py compares them).

On the CPU nothing is captured: the same padded functions run eagerly (which is how the tests check them).

Example::

    graphs = EncoderGraphs(model.thinker)
    put_back = graphs.install()   # the thinker's forward now encodes through them
    graphs.capture()              # CUDA: capture every size (a second or two); optional
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    BaseModelOutputWithDeepstackFeatures,
    Qwen3OmniMoeAudioAttention,
    Qwen3OmniMoeVisionAttention,
    _get_feat_extract_output_lengths,
    apply_rotary_pos_emb_vision,
)
from transformers.vision_utils import get_vision_interpolation_indices_and_weights, get_vision_position_ids

from backends.transformers.cuda_graphs import captured_each

log = logging.getLogger(__name__)

AUDIO_CHUNKS = (1, 2, 4, 6, 8, 12, 16, 24, 32)
"""Captured audio sizes in the encoder's chunks (100 mel frames: 1 s): a clip runs in the smallest that holds
it. Longer clips run eagerly."""
VISION_PATCHES = (64, 256, 512, 1024, 1536, 2048, 3072, 4096)
"""Captured image and video sizes in patches (16×16 pixels; 448×448 is 784, 640×480 1200); larger run eagerly."""


class EncoderGraphs:
    """The thinker's audio and vision encoders over fixed-size inputs (see the module's docstring)."""

    def __init__(self, thinker, audio_chunks: tuple[int, ...] = AUDIO_CHUNKS,
                 vision_patches: tuple[int, ...] = VISION_PATCHES):
        self.audio, self.visual = thinker.audio_tower, thinker.visual
        device = self.audio.conv2d1.weight.device
        self.device = device
        audio_config = self.audio.config
        self.n_window = audio_config.n_window
        self.chunk_frames = 2 * self.n_window
        self.tokens_per_chunk = int(_get_feat_extract_output_lengths(torch.tensor(self.chunk_frames), self.n_window))
        # transformers' audio attention windows: n_window_infer frames of whole chunks.
        self.audio_window = self.tokens_per_chunk * (self.audio.n_window_infer // self.chunk_frames)
        self.audio_chunks = sorted(set(audio_chunks))
        merge_unit = self.visual.spatial_merge_size ** 2
        self.vision_patches = sorted({n for n in vision_patches if n % merge_unit == 0})
        most_frames = self.chunk_frames * max(self.audio_chunks)
        most_patches = max(self.vision_patches)
        patch_size = self.visual.patch_embed
        patch_values = (patch_size.in_channels * patch_size.temporal_patch_size * patch_size.patch_size ** 2)
        # The graphs' inputs live at fixed addresses; a size reads the first rows.
        self.features_in = torch.zeros((audio_config.num_mel_bins, most_frames), device=device)
        self.audio_blocks = torch.zeros(self.tokens_per_chunk * max(self.audio_chunks), device=device,
                                        dtype=torch.long)
        self.pixels_in = torch.zeros((most_patches, patch_values), device=device, dtype=self.visual.dtype)
        taps = self._interpolation(torch.tensor([[1, 2, 2]]))[0].shape[1]  # 4 bilinear, 16 bicubic
        self.interp_indices_in = torch.zeros((most_patches, taps), device=device, dtype=torch.long)
        self.interp_weights_in = torch.zeros((most_patches, taps), device=device)
        self.positions_in = torch.zeros((most_patches, 2), device=device, dtype=torch.long)
        self.vision_blocks = torch.zeros(most_patches, device=device, dtype=torch.long)
        # Their outputs too, shared by every size (sizes never replay at once): else each size's graph keeps its own.
        vision_config = self.visual.config
        self.audio_out = torch.zeros((self.audio_blocks.shape[0], audio_config.output_dim), device=device,
                                     dtype=self.audio.dtype)
        self.vision_last_out = torch.zeros((most_patches, vision_config.hidden_size), device=device,
                                           dtype=self.visual.dtype)
        merged = most_patches // merge_unit
        self.vision_pooled_out = torch.zeros((merged, vision_config.out_hidden_size), device=device,
                                             dtype=self.visual.dtype)
        self.vision_deepstack_out = torch.zeros((len(vision_config.deepstack_visual_indexes), merged,
                                                 vision_config.out_hidden_size), device=device, dtype=self.visual.dtype)
        self._unused = torch.zeros(2, device=device, dtype=torch.int32)
        """Stands for what transformers would compute on the host and the masked attention doesn't read."""
        # transformers' own forwards (not whatever instance attribute stands in for them now).
        self._audio_forward = type(self.audio).forward.__get__(self.audio)
        self._vision_forward = type(self.visual).forward.__get__(self.visual)
        self._mask: torch.Tensor | None = None
        """While a padded pass runs: which positions each position may attend to (True: may)."""
        self._audio_passes = {size: self._audio_pass_of(size) for size in self.audio_chunks}
        self._vision_passes = {size: self._vision_pass_of(size) for size in self.vision_patches}
        self._audio_runs: dict[int, Callable] = dict(self._audio_passes)
        self._vision_runs: dict[int, Callable] = dict(self._vision_passes)
        """Size → its pass: the plain functions, or their CUDA graphs once captured."""
        # One set of input buffers, and _mask is read by every attention layer: one encoding at a time. The lock
        # orders the host's work; the GPU's (filling the buffers, the replay, copying out) is ordered by running
        # on the caller's current stream.
        self._lock = threading.Lock()
        self.captured = False

    def install(self) -> Callable[[], None]:
        """The encoders' forward (instance attributes) and attention go through the padded passes; returns a
        function that puts transformers' own back. Raises ValueError for encoders under accelerate's device
        hooks (spread over GPUs): the hooks' forward moves inputs between devices, which ours would skip."""
        modules = [*self.audio.modules(), *self.visual.modules()]
        if any(hasattr(module, "_hf_hook") for module in modules):
            raise ValueError("the encoders are under accelerate's device hooks")
        attentions = [m for m in modules if isinstance(m, (Qwen3OmniMoeAudioAttention, Qwen3OmniMoeVisionAttention))]
        self.audio.forward, self.visual.forward = self._encode_audio, self._encode_vision
        for module in attentions:
            module.forward = self._masked_attention(module)

        def put_back() -> None:
            for module in (self.audio, self.visual, *attentions):
                module.__dict__.pop("forward", None)
        return put_back

    def capture(self, pool=None, stream: torch.cuda.Stream | None = None) -> float:
        """On CUDA, capture every size as a CUDA graph (``pool`` and ``stream`` shared with graphs that never
        replay at the same time as these, like the thinker's prompt passes); returns the seconds it took.
        Raises if a capture fails (the caller puts transformers' forward back)."""
        if self.device.type != "cuda":
            return 0.0
        started = time.perf_counter()
        with self._lock:
            audio = captured_each(lambda size: self._audio_passes[size](), self.audio_chunks, self.device,
                                  "the audio encoder", stream, pool=pool)
            pool = next(iter(audio.values())).pool if audio and pool is None else pool
            vision = captured_each(lambda size: self._vision_passes[size](), self.vision_patches, self.device,
                                   "the vision encoder", stream, pool=pool)
        if not audio or not vision:
            raise RuntimeError("capturing the encoders failed")
        self._audio_runs, self._vision_runs = audio, vision
        self.captured = True
        return time.perf_counter() - started

    def audio_size(self, frames: int) -> int | None:
        """The captured size (chunks) a clip of ``frames`` runs in; None: too long, it runs eagerly."""
        return _smallest(self.audio_chunks, math.ceil(frames / self.chunk_frames))

    def vision_size(self, patches: int) -> int | None:
        """The captured size (patches) an image or video runs in; None: too large, it runs eagerly."""
        return _smallest(self.vision_patches, patches)

    # Per call: split into items, each in the smallest size that holds it.

    def _encode_audio(self, input_features: torch.Tensor, feature_lens: torch.Tensor, **kwargs):
        """transformers' audio encoder forward: features (mel bins, frames of every clip), frames per clip."""
        lengths = feature_lens.tolist()
        sizes = [self.audio_size(n) for n in lengths]
        with self._lock:
            # transformers pads every clip's last chunk to the longest chunk of the call: a whole one (as the
            # padded pass does) unless all clips are shorter than a chunk.
            if not lengths or None in sizes or max(lengths) < self.chunk_frames or _asks_for_more(kwargs):
                return self._audio_forward(input_features, feature_lens=feature_lens, **kwargs)
            with torch.no_grad():
                hidden = [self._audio_item(features, frames, size)
                          for features, frames, size in zip(input_features.split(lengths, dim=1), lengths, sizes)]
        return BaseModelOutputWithPooling(last_hidden_state=torch.cat(hidden))

    def _audio_item(self, features: torch.Tensor, frames: int, size: int) -> torch.Tensor:
        self.features_in[:, :frames].copy_(features)
        self.features_in[:, frames:size * self.chunk_frames].zero_()  # as transformers pads a last chunk
        real = int(_get_feat_extract_output_lengths(torch.tensor(frames), self.n_window))
        _fill_blocks(self.audio_blocks, size * self.tokens_per_chunk, real, self.audio_window)
        return self._audio_runs[size]()[:real].clone()  # the graph's output buffer: the next replay overwrites it

    def _encode_vision(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs):
        """transformers' vision encoder forward: patches of every image or video, (t, h, w) of each."""
        grids = [tuple(grid) for grid in grid_thw.tolist()]
        counts = [t * h * w for t, h, w in grids]
        sizes = [self.vision_size(n) for n in counts]
        with self._lock:
            if not grids or None in sizes or _asks_for_more(kwargs):
                return self._vision_forward(hidden_states, grid_thw=grid_thw, **kwargs)
            with torch.no_grad():
                outputs = [self._vision_item(pixels, grid, size)
                           for pixels, grid, size in zip(hidden_states.split(counts), grids, sizes)]
        last, pooled, deepstack = zip(*outputs)
        return BaseModelOutputWithDeepstackFeatures(
            last_hidden_state=torch.cat(last), pooler_output=torch.cat(pooled),
            deepstack_features=[torch.cat(level) for level in zip(*deepstack)])

    def _vision_item(self, pixels: torch.Tensor, grid: tuple[int, int, int], size: int) -> tuple:
        visual, patches = self.visual, pixels.shape[0]
        grid_thw = torch.tensor([grid])  # on the host: transformers' helpers read it there, with no GPU sync
        indices, weights = self._interpolation(grid_thw)
        positions = get_vision_position_ids(grid_thw, visual.spatial_merge_size)
        for buffer, real in ((self.pixels_in, pixels), (self.interp_indices_in, indices),
                             (self.interp_weights_in, weights), (self.positions_in, positions)):
            buffer[:patches].copy_(real)
            buffer[patches:size].zero_()
        # transformers' attention: each frame of a video on its own.
        _fill_blocks(self.vision_blocks, size, patches, grid[1] * grid[2])
        last, pooled, deepstack = self._vision_runs[size]()
        merged = patches // visual.spatial_merge_unit
        return last[:patches].clone(), pooled[:merged].clone(), [level[:merged].clone() for level in deepstack]

    def _interpolation(self, grid_thw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The position embedding's taps and weights for one grid, as the vision encoder's forward asks for them."""
        visual = self.visual
        return get_vision_interpolation_indices_and_weights(
            grid_thw, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners, spatial_merge_size=visual.config.spatial_merge_size)

    # The functions below read and write only the fixed buffers: they get captured.

    def _audio_pass_of(self, chunks: int) -> Callable[[], torch.Tensor]:
        frames, tokens = chunks * self.chunk_frames, chunks * self.tokens_per_chunk
        chunk_lengths = torch.full((chunks,), self.chunk_frames, device=self.device, dtype=torch.long)
        every_token = torch.arange(tokens, device=self.device)
        frame_count = torch.tensor([frames], device=self.device)

        def audio_pass() -> torch.Tensor:
            features = self.features_in[:, :frames]
            self._mask = _block_mask(self.audio_blocks[:tokens])
            try:
                # transformers' chunking, for whole chunks: (chunks, mel bins, chunk frames).
                padded = features.T.reshape(chunks, self.chunk_frames, -1).transpose(1, 2)
                out = self._audio_forward(features, feature_lens=frame_count, padded_feature=padded,
                                          chunk_lengths=chunk_lengths, valid_indices=every_token,
                                          cu_seqlens=self._unused, max_seqlen=tokens)
            finally:
                self._mask = None
            return self.audio_out[:tokens].copy_(out.last_hidden_state)
        return audio_pass

    def _vision_pass_of(self, patches: int) -> Callable[[], tuple]:
        grid_thw = torch.tensor([[1, 1, patches]], device=self.device)  # read by nothing: all is precomputed

        def vision_pass() -> tuple:
            self._mask = _block_mask(self.vision_blocks[:patches])
            try:
                out = self._vision_forward(self.pixels_in[:patches], grid_thw=grid_thw,
                                           interp_indices=self.interp_indices_in[:patches],
                                           interp_weights=self.interp_weights_in[:patches],
                                           position_ids=self.positions_in[:patches], cu_seqlens=self._unused,
                                           max_seqlen=patches)
            finally:
                self._mask = None
            merged = patches // self.visual.spatial_merge_unit
            return (self.vision_last_out[:patches].copy_(out.last_hidden_state),
                    self.vision_pooled_out[:merged].copy_(out.pooler_output),
                    tuple(self.vision_deepstack_out[n, :merged].copy_(level)
                          for n, level in enumerate(out.deepstack_features)))
        return vision_pass

    def _masked_attention(self, module) -> Callable:
        """``module``'s forward: transformers' own, except inside a padded pass (one attention under the mask)."""
        stock = type(module).forward.__get__(module)
        audio = isinstance(module, Qwen3OmniMoeAudioAttention)

        def forward(hidden_states, cu_seqlens=None, position_embeddings=None, **kwargs):
            if self._mask is None:
                if audio:
                    return stock(hidden_states, cu_seqlens, **kwargs)
                return stock(hidden_states, cu_seqlens, position_embeddings=position_embeddings, **kwargs)
            length = hidden_states.shape[0]
            if audio:
                query, key, value = (projection(hidden_states).reshape(length, module.num_heads, -1)
                                     for projection in (module.q_proj, module.k_proj, module.v_proj))
            else:
                query, key, value = module.qkv(hidden_states).reshape(length, 3, module.num_heads, -1).unbind(1)
                query, key = apply_rotary_pos_emb_vision(query, key, *position_embeddings)
            # (1, heads, positions, head dim), as transformers' sdpa sees each window: in 4 dimensions, which
            # sdpa's fused kernels require (in 3 it computes every score in fp32: gigabytes at 4096 patches).
            attended = F.scaled_dot_product_attention(*(part.transpose(0, 1)[None] for part in (query, key, value)),
                                                      attn_mask=self._mask, scale=module.scaling)
            output = attended[0].transpose(0, 1).reshape(length, -1)
            return (module.out_proj if audio else module.proj)(output)
        return forward


def _block_mask(blocks: torch.Tensor) -> torch.Tensor:
    """(positions, positions): True where two positions share a block."""
    return blocks[:, None] == blocks[None, :]


def _fill_blocks(blocks: torch.Tensor, size: int, real: int, block: int) -> None:
    """Real positions in blocks of ``block`` (their attention windows); each padded one in a block of its own."""
    position = torch.arange(size, device=blocks.device)
    blocks[:size].copy_(torch.where(position < real, position // block, -1 - position))


def _smallest(sizes: list[int], needed: int) -> int | None:
    return next((size for size in sizes if size >= needed), None)


def _asks_for_more(kwargs: dict) -> bool:
    """Whether the caller wants what only transformers' forward does: attentions or hidden states per layer,
    or tensors it was given precomputed (``image_position_ids`` …)."""
    return any(value is not None and value is not False for name, value in kwargs.items() if name != "return_dict")
