"""The tiny checkpoint's processor, built offline: a ~1k-token byte-level BPE trained here on a built-in corpus,
with the real checkpoint's added tokens in its order, its ChatML template, and the real processor classes
(tiny.py builds the model around it)."""

from __future__ import annotations

import json

# Named tokens the processor reads from the tokenizer (attribute name -> token).
_NAMED_TOKENS = {
    "image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "audio_token": "<|audio_pad|>",
    "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>",
}
# Added tokens in the real checkpoint's order (ids 151643+ there). Like the real tokenizer,
# tool-call and think tags are added but not "special" (skip_special_tokens keeps them).
_ADDED_TOKENS = (
    "<|endoftext|> <|im_start|> <|im_end|> <|object_ref_start|> <|object_ref_end|> <|box_start|> "
    "<|box_end|> <|quad_start|> <|quad_end|> <|vision_start|> <|vision_end|> <|vision_pad|> "
    "<|image_pad|> <|video_pad|> <tool_call> </tool_call> <tool_response> </tool_response> <think> "
    "</think> <|audio_start|> <|audio_end|> <tts_pad> <tts_text_bos> <tts_text_eod> "
    "<tts_text_bos_single> <|audio_pad|>"
).split()
_NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}
_ROLE_WORDS = ("system", "user", "assistant")

# Training text: English and a little Chinese so both get multi-byte merges; role words are
# repeated so each becomes one token (generate() finds the reply by "<|im_start|>assistant").
_CORPUS = """\
You are a helpful assistant. The user asks a question and the assistant answers it. Describe this image
in detail. What is in the picture? There is a cat on the table. Listen to the audio and tell me what you
hear. I hear music, a dog barking and people talking. What happens in this video? A man is walking along
the beach while the sun sets over the sea. Please write a short story about a robot who learns to paint
beautiful pictures. The weather today is sunny and warm, with a light wind from the west in the
afternoon. Hello, how are you? I am fine, thank you. Nice to meet you! Good morning and good night. Can
you help me translate this sentence into Chinese? Of course, here is the translation. Summarize the main
points of the speech: the speaker talks about science, history and art. One, two, three, four, five,
six, seven, eight, nine, ten. 2025 12 34 100 3.14 Let me think step by step. First, we count the apples;
then we add the oranges. The quick brown fox jumps over the lazy dog. Speech, sound, voice, language,
model, reply. Every morning she reads the newspaper, drinks a cup of coffee and walks to the office.
Computers process information quickly; programs tell them exactly which instructions to follow.
Mountains, rivers, forests and deserts cover large parts of our beautiful planet Earth. The orchestra
played a famous symphony, and the audience applauded for several minutes. Children were playing football
in the park near the old library on Sunday afternoon. Scientists measured the temperature of the ocean
to understand how the climate is changing. Would you like some tea or water? Yes, please. No, thanks.
Maybe later, after dinner. The train leaves the station at eight o'clock and arrives in the city before
noon. Her favourite colours are blue, green and yellow; his favourite animal is the elephant.
你好，我是一个乐于助人的助手。请描述这张图片。这是一只猫。今天天气很好。请听这段音频并告诉
我你听到了什么。我听到了音乐和说话的声音。谢谢你！我们明天去公园散步吧。这个问题很有意思，
我们一起来想一想。
"""


def _train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE with Qwen2's pre-tokenizer regex and all 256 bytes as alphabet."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=1024, initial_alphabet=alphabet, show_progress=False)
    lines = _CORPUS.splitlines() * 2 + list(_ROLE_WORDS) * 8  # one word per line: no leading space
    bpe.train_from_iterator(lines, trainer)
    model = json.loads(bpe.to_str())["model"]
    return model["vocab"], [tuple(pair) for pair in model["merges"]]


def _build_tokenizer():
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_bpe()
    # Give the added tokens fixed ids after the BPE vocabulary, in the real checkpoint's order.
    for name in _ADDED_TOKENS:
        vocab[name] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        model_max_length=32768, **_NAMED_TOKENS,
    )
    tokenizer.add_tokens(
        [AddedToken(name, special=name not in _NOT_SPECIAL, normalized=False) for name in _ADDED_TOKENS]
    )
    return tokenizer  # config_token_ids() checks that role words and markers are single tokens


def build_processor():
    """The tiny checkpoint's Qwen3OmniMoeProcessor: its tokenizer trained here, small pixel budgets."""
    from transformers import (
        Qwen2VLImageProcessor, Qwen2VLVideoProcessor, Qwen3OmniMoeProcessor, WhisperFeatureExtractor,
    )

    # Patch 16 x merge 2: one LLM token per 32x32 pixels. Small pixel budgets keep prompts short
    # (a 448x448 image becomes 128x128 -> 16 tokens).
    vision = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2}
    image_processor = Qwen2VLImageProcessor(min_pixels=32 * 32 * 4, max_pixels=128 * 128, **vision)
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=32 * 32 * 4, max_pixels=128 * 64, cap_pixels_per_frame=True, **vision
    )
    audio = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, return_attention_mask=True)
    return Qwen3OmniMoeProcessor(
        image_processor, video_processor, audio, _build_tokenizer(), chat_template=CHAT_TEMPLATE
    )


# ChatML like the real checkpoints; media items become their placeholder triplets, which the
# processor expands to one pad token per encoder output.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- elif item['type'] in ('image', 'image_url') -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] in ('audio', 'audio_url', 'input_audio') -%}"
    "{{- '<|audio_start|><|audio_pad|><|audio_end|>' -}}"
    "{%- elif item['type'] in ('video', 'video_url') -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}{{- '<|im_end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def config_token_ids(tokenizer) -> dict[str, int]:
    """Every token id the model config refers to, looked up in the tiny tokenizer."""

    def one(text: str) -> int:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"tiny tokenizer: {text!r} is not a single token: {ids}")
        return ids[0]

    names = dict(
        im_start="<|im_start|>", im_end="<|im_end|>", endoftext="<|endoftext|>",
        system="system", user="user", assistant="assistant",
        vision_start="<|vision_start|>", vision_end="<|vision_end|>",
        image="<|image_pad|>", video="<|video_pad|>",
        audio_start="<|audio_start|>", audio_end="<|audio_end|>", audio="<|audio_pad|>",
        tts_pad="<tts_pad>", tts_bos="<tts_text_bos>", tts_eos="<tts_text_eod>",
        think_start="<think>", think_end="</think>",
    )
    return {key: one(text) for key, text in names.items()}
