"""Engine defects a user notices: a blocked event loop, unbounded memory, a hung engine, slow streaming."""

from __future__ import annotations

import pytest

from backends.events import TextDelta
from backends.reasoning import ReasoningSplitter

MIXED_TEXT = "Hello 世界! Ça va? 🙂👍🏽 Qwen3-Omni says: 你好，很高兴认识你。\nNext line — done."


@pytest.fixture(scope="module")
def tokenizer(tiny_cache):
    from transformers import AutoTokenizer

    from backends.checkpoints import resolve_checkpoint

    return AutoTokenizer.from_pretrained(resolve_checkpoint("tiny").path)


class CountingTokenizer:
    """The tokenizer, counting the ids it is asked to decode."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decoded_ids = tokenizer, 0

    def decode(self, ids, **kwargs):
        self.decoded_ids += len(ids)
        return self.tokenizer.decode(ids, **kwargs)


def stream_text(tokenizer, ids: list[int]) -> tuple[list[str], int]:
    """The reply's text pieces as the thinker's streamer emits them for ``ids`` (one id per step), and the ids
    it decoded to do so."""
    import torch

    from backends.transformers_backend import _TextStreamer

    counting = CountingTokenizer(tokenizer)
    pieces: list[str] = []
    streamer = _TextStreamer(counting, ReasoningSplitter(False), lambda e: pieces.append(e.text)
                             if isinstance(e, TextDelta) else None)
    streamer.put(torch.tensor([[1, 2, 3]]))  # generate() first puts the prompt
    for token_id in ids:
        streamer.put(torch.tensor([token_id]))
    streamer.flush()
    return pieces, counting.decoded_ids


def test_streamed_text_equals_the_full_decode_with_characters_split_over_tokens(tokenizer):
    ids = tokenizer.encode(MIXED_TEXT * 3)
    split = [i for i in ids if tokenizer.decode([i]).endswith("\ufffd")]
    assert split, "the test needs characters whose bytes span several tokens"
    pieces, _ = stream_text(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == MIXED_TEXT * 3
    assert not any("\ufffd" in piece for piece in pieces), "half a character was shown"
    assert len(pieces) > len(ids) // 2, "text should still stream token by token"


def test_streaming_decodes_each_token_a_bounded_number_of_times(tokenizer):
    short = tokenizer.encode(MIXED_TEXT * 4)
    long = tokenizer.encode(MIXED_TEXT * 32)
    _, short_work = stream_text(tokenizer, short)
    _, long_work = stream_text(tokenizer, long)
    # Decoding the whole reply at each token would be n²/2 ids: 8x the tokens, 64x the work.
    assert long_work / len(long) < 6 and long_work / short_work < 8 * 1.2


def test_a_byte_sequence_that_never_completes_does_not_hold_the_reply_back(tokenizer):
    from backends.incremental_text import MAX_PENDING_IDS, IncrementalDecoder

    stray = [i for i in tokenizer.encode("🙂") if tokenizer.decode([i]).endswith("\ufffd")][0]
    ids = [stray] * (MAX_PENDING_IDS + 4) + tokenizer.encode(" and on")  # a random model's stray bytes
    decoder = IncrementalDecoder(tokenizer)
    shown = [decoder.add([i]) for i in ids]
    assert "".join(shown[:-1]), "text came out before the end of the reply"
    assert "and on" in "".join(shown) + decoder.flush()
