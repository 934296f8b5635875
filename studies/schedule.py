"""Which prompt and which two set-ups a rater judges next.

A cell is one prompt with one pair of set-ups. The next cell for a rater is one they have not been shown, with the
fewest votes so far (pairs shown and not yet voted on count too, while they are fresh: raters asking at the same
moment spread out); among those, the pair of set-ups with the fewest votes, then the prompt with the fewest, then
chance. Filling the emptiest cell first keeps every cell, pair and prompt within two votes of the others (a rater
who has seen the emptiest cells already takes the next emptiest), and a rater's own cells never repeat (the store
also refuses a repeat, under concurrency). Pure: the store calls it inside its write transaction with what the
database holds.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Iterable, Mapping

Cell = tuple[int, int, int]
"""(prompt, lower set-up, higher set-up)."""


def cells(prompts: Iterable[int], setups: int) -> list[Cell]:
    """Every cell of the prompts given (those whose answers are all ready) and ``setups`` set-ups."""
    return [(p, i, j) for p in prompts for i in range(setups) for j in range(i + 1, setups)]


def next_cell(candidates: Iterable[Cell], counts: Mapping[Cell, int], seen: set[Cell],
              rng: random.Random) -> Cell | None:
    """The cell to show next, or None when the rater has seen every candidate. ``counts``: votes (and fresh
    unvoted showings) per cell, from every rater; ``seen``: the rater's own cells."""
    pair_counts: Counter = Counter()
    prompt_counts: Counter = Counter()
    for (prompt, low, high), count in counts.items():
        pair_counts[low, high] += count
        prompt_counts[prompt] += count
    best, best_key = None, None
    for cell in candidates:
        if cell in seen:
            continue
        key = (counts.get(cell, 0), pair_counts[cell[1], cell[2]], prompt_counts[cell[0]], rng.random())
        if best_key is None or key < best_key:
            best, best_key = cell, key
    return best


def sides(cell: Cell, rng: random.Random) -> tuple[int, int]:
    """The two set-ups of ``cell`` as (left, right), in random order: position says nothing about the set-up."""
    low, high = cell[1], cell[2]
    return (low, high) if rng.random() < 0.5 else (high, low)
