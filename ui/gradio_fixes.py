"""A fix for Gradio 6.31.0 (pinned in requirements.txt), applied when ``ui`` is imported.

Gradio answers a property update of an output (``gr.update``, even ``gr.skip()``) by building a
new instance of the component for the session. That instance gets a fresh block id, and the next
plain value sent to the output stores it again under that fresh id. So every update followed by
a value added a block to the session, kept until the session ends: three per Chat turn (the
textbox, the checkbox and the reply player), with the component's whole config. Giving the new
instance the id of the block it replaces keeps a session at the app's own blocks. tests/test_app.py
checks that.
"""

from __future__ import annotations

from gradio.blocks import Block
from gradio.state_holder import SessionState

_original_setitem = SessionState.__setitem__


def _setitem_keeping_ids(self: SessionState, key: int, value) -> None:
    replaced = self.blocks_config.blocks.get(key)
    if isinstance(value, Block) and isinstance(replaced, Block) and not replaced.stateful and value._id != key:
        value._id = key  # the session's version of block ``key``, not a new block
    _original_setitem(self, key, value)


def apply() -> None:
    SessionState.__setitem__ = _setitem_keeping_ids
