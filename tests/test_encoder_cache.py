"""Later turns of a conversation don't encode its earlier files again, and answer exactly as without the cache."""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pytest
import torch

from backends import build_backend
from backends.checkpoints import resolve_checkpoint
from backends.transformers.encoder_cache import EncoderCache
from backends.events import Error
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from tests import media_factory
from tests.streams import audio_of, collect, text_of


@pytest.fixture
def encoder_inputs(monkeypatch) -> dict[str, list[int]]:
    """How many files each of transformers' encoders is given, call by call (patched before a backend is built)."""
    from transformers import Qwen3OmniMoeThinkerForConditionalGeneration as Thinker

    seen: dict[str, list[int]] = {"audio": [], "image": [], "video": []}

    def counting(kind: str, files_of):
        method = getattr(Thinker, f"get_{kind}_features")

        @functools.wraps(method)  # generate() picks the encoders' arguments by their names
        def encode(self, *args, **kwargs):
            seen[kind].append(files_of(inspect.signature(method).bind(self, *args, **kwargs).arguments))
            return method(self, *args, **kwargs)
        return encode

    for kind, files_of in (("audio", lambda named: len(named["input_features"])),
                           ("image", lambda named: len(named["image_grid_thw"])),
                           ("video", lambda named: len(named["video_grid_thw"]))):
        monkeypatch.setattr(Thinker, f"get_{kind}_features", counting(kind, files_of))
    return seen


def test_a_later_turn_encodes_only_its_new_file_and_replies_as_without_the_cache(encoder_inputs, speech_path,
                                                                                  image_path, video_path, tmp_path):
    second_image = media_factory.test_image(tmp_path / "second.png", size=(160, 224))
    first = Turn.user(MediaPart("audio", str(speech_path)), MediaPart("image", str(image_path)),
                      MediaPart("video", str(video_path)), "What do you see and hear?")
    greedy = Sampling(temperature=0, max_new_tokens=10)
    replies = {}
    for cache_mb in (256, 0):
        with build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=1.0, talker_do_sample=False,
                           encoder_cache_mb=cache_mb) as backend:
            turns = (first,)
            for _ in range(2):
                events = collect(backend, ChatRequest(turns=turns, sampling=greedy))
                assert not [e for e in events if isinstance(e, Error)]
                replies.setdefault(cache_mb, []).append((text_of(events), audio_of(events)))
                turns += (Turn.assistant(text_of(events)),
                          Turn.user(MediaPart("image", str(second_image)), "And this one?"))
        if cache_mb:
            # The first turn: its speech and the video's sound in one batch, its image, its video. The second
            # turn: only the new image (the same two clips, padded alike, come from the cache).
            assert encoder_inputs == {"audio": [2], "image": [1, 1], "video": [1]}
            for seen in encoder_inputs.values():
                seen.clear()
    assert encoder_inputs == {"audio": [2, 2], "image": [1, 2], "video": [1, 1]}  # without: all of them, each turn
    for (text, audio), (text_uncached, audio_uncached) in zip(replies[256], replies[0]):
        assert text and text == text_uncached
        assert audio.size and np.array_equal(audio, audio_uncached)


def test_spoken_turns_encode_each_clip_once_but_the_longest_once_more(encoder_inputs, tmp_path):
    """Live's pattern: a clip per turn. The processor pads a turn's clips to the longest before its STFT, so a clip
    that was the longest of its turn reads differently once padded: it is encoded once more, then served."""
    clips = [media_factory.speech_wav(tmp_path / f"{n}.wav", text) for n, text in enumerate(
        ("Hi.", "Tell me about the weather in Paris tomorrow morning, please.", "What time is it?"))]
    replies = {}
    for cache_mb in (256, 0):
        with build_backend("transformers", resolve_checkpoint("tiny"), encoder_cache_mb=cache_mb) as backend:
            turns: tuple = ()
            for clip in clips:
                turns += (Turn.user(MediaPart("audio", str(clip))),)
                events = collect(backend, ChatRequest(turns=turns, sampling=Sampling(temperature=0, max_new_tokens=6),
                                                      return_audio=False))
                assert not [e for e in events if isinstance(e, Error)]
                replies.setdefault(cache_mb, []).append(text_of(events))
                turns += (Turn.assistant(text_of(events)),)
        # Turn 2: the new long clip, and "Hi." again (the longest of turn 1, padded now); turn 3: the new clip.
        assert encoder_inputs["audio"] == ([1, 2, 1] if cache_mb else [1, 2, 3])
        encoder_inputs["audio"].clear()
    assert replies[256] == replies[0]


class FakeThinker:
    """Stands in for the thinker's image encoder: each image's output is its pixels' rows, doubled."""

    def __init__(self):
        self.encoded: list[torch.Tensor] = []

    def get_image_features(self, pixel_values, image_grid_thw=None, **kwargs):
        from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import BaseModelOutputWithDeepstackFeatures

        self.encoded.extend(pixel_values.split(image_grid_thw.prod(-1).tolist()))
        pooled = (2 * pixel_values).split(image_grid_thw.prod(-1).tolist())
        return BaseModelOutputWithDeepstackFeatures(pooler_output=pooled, deepstack_features=[pooled])

    get_video_features = get_image_features

    def get_audio_features(self, *args, **kwargs):
        raise AssertionError("no audio here")


def images(*pixels: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of one row each: (pixel_values, grid_thw)."""
    return torch.tensor(pixels), torch.tensor([[1, 1, 1]] * len(pixels))


def test_a_different_image_with_the_same_sums_is_encoded_not_taken_for_the_first():
    thinker = FakeThinker()
    cache = EncoderCache.on(thinker, max_bytes=1 << 20)
    photo, mirrored = [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]  # equal sums and sums of squares
    thinker.get_image_features(*images(photo))
    out = thinker.get_image_features(*images(photo, mirrored))
    assert [t.flatten().tolist() for t in thinker.encoded] == [photo, mirrored]
    assert out.pooler_output[1].flatten().tolist() == [8.0, 6.0, 4.0, 2.0]  # the mirrored photo's own output
    assert out.deepstack_features[0][1].flatten().tolist() == [8.0, 6.0, 4.0, 2.0]
    assert (cache.encoded, cache.reused) == (2, 1)
    assert EncoderCache.on(thinker, max_bytes=1) is cache  # a second backend on the same model shares it


def test_the_cache_keeps_to_its_size_dropping_the_least_recently_used_first():
    thinker = FakeThinker()
    entry = 3 * 4 * 4  # a 4-pixel float32 input, its output and its one DeepStack level
    cache = EncoderCache.on(thinker, max_bytes=2 * entry)
    a, b, c = [1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 3.0, 0]
    for pixels in (a, b, a, c):  # a is used again after b, so b is the oldest when c comes
        thinker.get_image_features(*images(pixels))
    assert cache.bytes == 2 * entry
    thinker.encoded.clear()
    thinker.get_image_features(*images(a, b, c))
    assert [t.flatten().tolist() for t in thinker.encoded] == [b]  # only b was dropped; encoded alone, in one batch
