"""Token ids → text as they stream in, with each id decoded a bounded number of times.

Decoding the whole reply at every token costs O(n²) over a reply (and runs on the thinker's
thread, between its steps). Like vLLM's incremental detokenizer, this decodes only a short
window: the ids since the last emitted text, plus the ids just before them as context (a
tokenizer may decode an id differently at the start of a text). A window that ends in the
middle of a multi-byte character (CJK, emoji: byte-level BPE splits them over ids) decodes to
U+FFFD at its end; it waits for the next id instead of emitting half a character.
"""

from __future__ import annotations

MAX_PENDING_IDS = 8
"""A UTF-8 character spans at most 4 byte-tokens: a window still incomplete after this many ids holds bytes
that will never form a character (a random or broken model emits those), so it goes out as the tokenizer
decodes it rather than waiting, and growing, to the end of the reply."""


class IncrementalDecoder:
    """Example::

        decoder = IncrementalDecoder(tokenizer)
        text = "".join(decoder.add([token_id]) for token_id in ids) + decoder.flush()
        assert text == tokenizer.decode(ids, skip_special_tokens=True)
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0
        """Where the context window starts: ids already emitted, decoded again only as context."""
        self._read = 0
        """The first id whose text has not been emitted yet."""

    def add(self, new_ids: list[int]) -> str:
        """The text the new ids complete ("" while a character is still incomplete)."""
        self.ids.extend(new_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """What ``add`` held back (an incomplete character), once no more ids come."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read == len(self.ids):
            return ""
        context = self._decode(self.ids[self._prefix:self._read])
        window = self._decode(self.ids[self._prefix:])
        pending = len(self.ids) - self._read
        if window.endswith("\ufffd") and not final and pending < MAX_PENDING_IDS:
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return window[len(context):]

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)
