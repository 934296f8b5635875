"""A fix for Gradio 6.31.0 (pinned in requirements.txt), applied when ``ui`` is imported.

Gradio answers a property update of an output (``gr.update``, even ``gr.skip()``) by building a
new instance of the component for the session. That instance gets a fresh block id, and the next
plain value sent to the output stores it again under that fresh id. So every update followed by
a value added a block to the session, kept until the session ends: three per Chat turn (the
textbox, the checkbox and the reply player), with the component's whole config. Giving the new
instance the id of the block it replaces keeps a session at the app's own blocks. tests/test_app.py
checks that.

It replaces a private method, as ``ui/reply_player.py`` overrides one: both apply only on the Gradio
versions they were written for and checked with (``GRADIO_VERSIONS``), and on any other the app runs
without them and says so in the log.
"""

from __future__ import annotations

import logging

import gradio

GRADIO_VERSIONS = ("6.31.0",)
"""The Gradio versions whose private code the patches in ``ui`` were written for."""

log = logging.getLogger(__name__)


def written_for_this_gradio(patch: str, without_it: str) -> bool:
    """Whether the running Gradio is one ``patch`` was written for; if not, logs that it is left out and what
    that costs (``without_it``)."""
    if gradio.__version__ in GRADIO_VERSIONS:
        return True
    log.warning("Gradio %s: %s not applied (written for Gradio %s); %s.", gradio.__version__, patch,
                " or ".join(GRADIO_VERSIONS), without_it)
    return False


def apply() -> bool:
    """Keep a session's copies of its outputs under their own block ids; whether the fix is in place."""
    if not written_for_this_gradio("the fix for session blocks (ui/gradio_fixes.py)",
                                   "each session keeps a copy of an output for every property update"):
        return False
    from gradio.blocks import Block
    from gradio.state_holder import SessionState

    original = SessionState.__setitem__
    if getattr(original, "keeps_block_ids", False):
        return True

    def setitem_keeping_ids(self: SessionState, key: int, value) -> None:
        replaced = self.blocks_config.blocks.get(key)
        if isinstance(value, Block) and isinstance(replaced, Block) and not replaced.stateful and value._id != key:
            value._id = key  # the session's version of block ``key``, not a new block
        original(self, key, value)

    setitem_keeping_ids.keeps_block_ids = True
    SessionState.__setitem__ = setitem_keeping_ids
    return True
