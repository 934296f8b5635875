"""A tiny random-weight Qwen3-Omni checkpoint, built offline, for tests and CPU-only machines.

Same architecture, files and processor classes as the real checkpoints (so every code path,
vLLM's included, runs for real), but ~0.7 M parameters and a ~1k-token byte-level BPE trained
here on a built-in corpus. Nothing is downloaded. "instruct" = thinker (audio + vision
encoders) + talker + code2wav; "captioner" = thinker only (``enable_audio_output=False``, only
``thinker.*`` weights), the shape of the Thinking and Captioner checkpoints. Builds are
deterministic: two builds (in any processes) give bit-identical files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Literal

from backends.checkpoints.tiny_processor import build_processor, config_token_ids

TinyKind = Literal["instruct", "captioner"]

# Bump whenever the build changes: the cache folder name carries it, so old builds are ignored.
TINY_CHECKPOINT_VERSION = 2
_SEED = 1234
_MARKER = "tiny_checkpoint.json"  # written last; a folder without it is not a finished build
# Random init draws from torch's global RNG: two builds in one process at once would interleave
# their draws and lose determinism, so in-process builds take turns (progress bars too).
_BUILD_LOCK = threading.RLock()

# Real-model values kept on purpose: the audio relations (24 kHz, 1920 samples per codec
# frame) only hold with the real upsampling factors, and 16 codebooks keep the talker's
# code predictor loop the same length as the real one.
_CODEBOOK_SIZE = 128
_NUM_CODE_GROUPS = 16
_UPSAMPLE_RATES = [8, 5, 4, 3]
_UPSAMPLING_RATIOS = [2, 2]


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("QWEN_OMNI_TINY_DIR")
    return Path(env) if env else Path.home() / ".cache" / "qwen3-omni-app"


def ensure_tiny_checkpoint(kind: TinyKind = "instruct", cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a folder loadable with Qwen3OmniMoeForConditionalGeneration.from_pretrained +
    Qwen3OmniMoeProcessor.from_pretrained; build it on first use.

    The folder is ``<cache>/tiny-<kind>-v<N>`` where ``<cache>`` is ``cache_dir``, else
    ``$QWEN_OMNI_TINY_DIR``, else ``~/.cache/qwen3-omni-app``. It is built in a temporary
    folder beside it and renamed into place, so concurrent builders (pytest-xdist, the app
    and the tests) never see a half-written checkpoint: the first rename wins, others discard
    their copy (builds are deterministic, so the copies are identical anyway).
    """
    if kind not in ("instruct", "captioner"):
        raise ValueError(f"unknown tiny checkpoint kind {kind!r}")
    root = _cache_root(cache_dir)
    final = root / f"tiny-{kind}-v{TINY_CHECKPOINT_VERSION}"
    if (final / _MARKER).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tiny-{kind}-building-", dir=root))
    try:
        build_tiny_checkpoint(kind, tmp)
        for path in (tmp, *tmp.iterdir()):  # mkdtemp and safetensors make them private
            path.chmod(0o755 if path.is_dir() else 0o644)
        if final.exists() and not (final / _MARKER).is_file():
            shutil.rmtree(final)  # not made by us (we only ever rename finished builds)
        try:
            os.rename(tmp, final)  # atomic; fails if another process got there first
        except OSError:
            if not (final / _MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_tiny_checkpoint(kind: TinyKind, out_dir: Path) -> Path:
    """Build the tiny checkpoint of ``kind`` into ``out_dir`` (created if needed) and return it.

    Saved with save_pretrained (safetensors) and checked: reloading gives identical parameters.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _BUILD_LOCK, _quiet_progress_bars():
        model, processor = create_tiny_model(kind)
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
        _check_reload(model, out_dir)
    marker = {"kind": kind, "version": TINY_CHECKPOINT_VERSION, "token_ids": config_token_ids(processor.tokenizer)}
    (out_dir / _MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return out_dir


def create_tiny_model(kind: TinyKind):
    """The tiny ``(model, processor)`` in memory, exactly what build_tiny_checkpoint saves."""
    import torch

    processor = build_processor()
    ids = config_token_ids(processor.tokenizer)
    config = _build_config(kind, ids, vocab_size=len(processor.tokenizer))
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(_SEED)
        model = _build_model(config)
    return model, processor


@contextlib.contextmanager
def _quiet_progress_bars():
    """Saving and reloading a 300-tensor checkpoint should not draw progress bars in test logs."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _check_reload(model, out_dir: Path) -> None:
    import torch
    from transformers import Qwen3OmniMoeForConditionalGeneration

    reloaded, info = Qwen3OmniMoeForConditionalGeneration.from_pretrained(out_dir, output_loading_info=True)
    problems = {key: value for key, value in info.items() if value}
    expected, actual = model.state_dict(), reloaded.state_dict()
    if problems or expected.keys() != actual.keys():
        raise RuntimeError(f"tiny checkpoint: reload mismatch: {problems or expected.keys() ^ actual.keys()}")
    changed = [key for key in expected if not torch.equal(expected[key], actual[key])]
    if changed:
        raise RuntimeError(f"tiny checkpoint: reloaded weights differ: {changed}")


# ---------------------------------------------------------------- model


def _thinker_config(ids: dict[str, int], vocab_size: int) -> dict:
    hidden = 64
    # vLLM's CPU attention needs head_dim in {32, 64, ...}; mrope_section sums to head_dim / 2.
    text = {
        "hidden_size": hidden, "head_dim": 32, "num_attention_heads": 2, "num_key_value_heads": 1,
        "num_hidden_layers": 2, "intermediate_size": 128, "moe_intermediate_size": 32, "num_experts": 4,
        "num_experts_per_tok": 2, "norm_topk_prob": True, "shared_expert_intermediate_size": 0,
        "use_qk_norm": True, "vocab_size": vocab_size, "max_position_embeddings": 32768,
        "tie_word_embeddings": False, "eos_token_id": ids["im_end"], "pad_token_id": ids["endoftext"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000, "interleaved": True,
                            "mrope_interleaved": True, "mrope_section": [4, 6, 6]},
    }
    # vLLM needs image_size with (image_size / patch_size) ** 2 == num_position_embeddings.
    vision = {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "in_channels": 3,
        "patch_size": 16, "spatial_patch_size": 16, "temporal_patch_size": 2, "spatial_merge_size": 2,
        "out_hidden_size": hidden, "image_size": 128, "num_position_embeddings": 64,
        "apply_vit_abs_pos_embed": True, "deepstack_visual_indexes": [1], "tokens_per_second": 2,
        "hidden_act": "gelu_pytorch_tanh",
    }
    audio = {
        "num_mel_bins": 128, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
        "d_model": 32, "downsample_hidden_size": 8, "output_dim": hidden, "n_window": 50,
        "n_window_infer": 800, "conv_chunksize": 500, "max_source_positions": 1500,
    }
    return {
        "text_config": text, "vision_config": vision, "audio_config": audio,
        "audio_token_id": ids["audio"], "image_token_id": ids["image"], "video_token_id": ids["video"],
        "audio_start_token_id": ids["audio_start"], "audio_end_token_id": ids["audio_end"],
        "vision_start_token_id": ids["vision_start"], "vision_end_token_id": ids["vision_end"],
        "user_token_id": ids["user"], "position_id_per_seconds": 13, "seconds_per_chunk": 2,
    }


def _talker_config(ids: dict[str, int], thinker_hidden: int) -> dict:
    hidden = 32
    text = {
        "hidden_size": hidden, "head_dim": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
        "num_hidden_layers": 1, "intermediate_size": 64, "moe_intermediate_size": 16, "num_experts": 4,
        "num_experts_per_tok": 2, "norm_topk_prob": True, "shared_expert_intermediate_size": 32,
        "vocab_size": _CODEBOOK_SIZE + 1024,  # codebook + a 1024 block holding codec/speaker ids
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000, "interleaved": True,
                            "mrope_section": [2, 3, 3]},
    }
    code_predictor = {
        "hidden_size": hidden, "head_dim": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
        "num_hidden_layers": 1, "intermediate_size": 64, "vocab_size": _CODEBOOK_SIZE,
        "num_code_groups": _NUM_CODE_GROUPS, "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000},
    }
    return {
        "text_config": text, "code_predictor_config": code_predictor, "num_code_groups": _NUM_CODE_GROUPS,
        "thinker_hidden_size": thinker_hidden, "accept_hidden_layer": 1,  # the real 24 of 48 layers
        "audio_token_id": ids["audio"], "image_token_id": ids["image"], "video_token_id": ids["video"],
        "audio_start_token_id": ids["audio_start"], "audio_end_token_id": ids["audio_end"],
        "vision_start_token_id": ids["vision_start"], "position_id_per_seconds": 13, "seconds_per_chunk": 2,
        "spatial_merge_size": 2, **_codec_ids(),
    }


def _codec_ids() -> dict:
    """Talker codec and speaker ids at the real checkpoint's offsets above its codebook (2048)."""
    offsets = {"codec_pad_id": 100, "codec_bos_id": 101, "codec_eos_token_id": 102, "codec_nothink_id": 107,
               "codec_think_bos_id": 108, "codec_think_eos_id": 109}
    speakers = {"chelsie": 253, "ethan": 254, "aiden": 255}
    ids = {key: _CODEBOOK_SIZE + offset for key, offset in offsets.items()}
    return {**ids, "speaker_id": {name: _CODEBOOK_SIZE + offset for name, offset in speakers.items()}}


def _code2wav_config() -> dict:
    return {
        "codebook_size": _CODEBOOK_SIZE, "num_quantizers": _NUM_CODE_GROUPS, "hidden_size": 32,
        "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 2, "num_hidden_layers": 1,
        "decoder_dim": 32, "upsample_rates": _UPSAMPLE_RATES, "upsampling_ratios": _UPSAMPLING_RATIOS,
        "sliding_window": 72, "max_position_embeddings": 8000, "num_semantic_quantizers": 1,
        "semantic_codebook_size": 4096, "codebook_dim": 32, "vector_quantization_hidden_dimension": 32,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000},
    }


def _build_config(kind: TinyKind, ids: dict[str, int], vocab_size: int):
    from transformers import Qwen3OmniMoeConfig

    thinker = _thinker_config(ids, vocab_size)
    # The captioner keeps tiny talker/code2wav configs too (never built while audio output is
    # off), so the config stays self-consistent instead of carrying full-size defaults.
    return Qwen3OmniMoeConfig(
        thinker_config=thinker,
        talker_config=_talker_config(ids, thinker["text_config"]["hidden_size"]),
        code2wav_config=_code2wav_config(),
        enable_audio_output=kind == "instruct",
        im_start_token_id=ids["im_start"], im_end_token_id=ids["im_end"],
        system_token_id=ids["system"], user_token_id=ids["user"], assistant_token_id=ids["assistant"],
        tts_pad_token_id=ids["tts_pad"], tts_bos_token_id=ids["tts_bos"], tts_eos_token_id=ids["tts_eos"],
    )


def _build_model(config):
    """Random weights (the caller seeds torch), every parameter finite."""
    import torch
    from transformers import GenerationConfig, Qwen3OmniMoeForConditionalGeneration

    model = Qwen3OmniMoeForConditionalGeneration._from_config(config, dtype=torch.float32)
    if model.has_talker:
        _init_talker(model.talker, std=config.initializer_range)
        _init_code2wav_convs(model.code2wav)
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise RuntimeError(f"tiny checkpoint: non-finite parameters after init: {bad}")
    # Thinker replies end at <|im_end|> (stock generate() still needs thinker_eos_token_id).
    pad = config.thinker_config.text_config.pad_token_id
    model.generation_config = GenerationConfig(eos_token_id=[config.im_end_token_id, pad], pad_token_id=pad)
    return model.eval()


def _init_talker(talker, std: float) -> None:
    """Fix two things random init gets wrong for the talker.

    Its MoE experts are allocated with torch.empty and no _init_weights covers them
    (transformers only initialises the thinker's expert class): uninitialised memory (NaN, huge
    values) and a zero router; fill them like the thinker's. And with std 0.02 its attention
    output is negligible next to the residual stream, so the talker ignores its prompt and every
    speaker gives the same codes: draw the attention projections variance-preserving instead.
    """
    import math

    import torch

    with torch.no_grad():
        for layer in talker.model.layers:
            if hasattr(layer.mlp, "experts"):
                layer.mlp.experts.gate_up_proj.normal_(0.0, std)
                layer.mlp.experts.down_proj.normal_(0.0, std)
                layer.mlp.gate.weight.normal_(0.0, std)
            attention = layer.self_attn
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj):
                proj.weight.normal_(0.0, 1.0 / math.sqrt(proj.weight.shape[1]))


def _init_code2wav_convs(code2wav) -> None:
    """With std 0.02 everywhere the vocoder's conv stack shrinks its input to ~1e-8: silence.
    Re-draw its convolutions variance-preserving (std 1/sqrt(fan_in)), residual branches
    damped so the stack does not blow up, and the last conv scaled so the waveform is
    audible noise (mean |x| ~0.1) that changes with the codes, not clipped or silent."""
    import math

    import torch

    last = f"decoder.{len(code2wav.decoder) - 1}.conv"
    with torch.no_grad():
        for name, module in code2wav.named_modules():
            if not isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) or name.startswith("pre_"):
                continue
            weight = module.weight  # Conv1d: (out, in, k); ConvTranspose1d: (in, out, k)
            if isinstance(module, torch.nn.Conv1d):
                fan_in = weight.shape[1] * weight.shape[2]
            else:
                fan_in = weight.shape[0] * weight.shape[2] // module.stride[0]
            gain = 0.1 if name.endswith("conv2.conv") or name == last else 1.0
            weight.normal_(0.0, gain / math.sqrt(fan_in))
