"""What a study holds, as the store reads it back: plain frozen values, no database handles; and the one refusal
that the store and the rules above it raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from messages import Message

Choice = Literal["A", "B", "tie", "both_bad"]
CHOICES: tuple[Choice, ...] = ("A", "B", "tie", "both_bad")
"""A: the answer shown first (left) is better; B: the second; tie: as good; both_bad: neither is acceptable."""


class StudyError(ValueError):
    """A request about a study that is refused, by the store (an unknown study or pair, a bad choice…) or by the
    rules above it (``ui.evaluate.team``: who may create, the set-ups); ``msg`` says why to the user."""

    def __init__(self, msg: Message):
        super().__init__(str(msg))
        self.msg = msg


@dataclass(frozen=True)
class MediaFile:
    """A prompt's file, kept in the data folder under its content's SHA-256 (``file`` is relative to it)."""

    name: str
    """The name the sheet gave."""
    file: str
    sha256: str


@dataclass(frozen=True)
class StudyPrompt:
    position: int
    id: str
    text: str
    media: tuple[MediaFile, ...] = ()
    system_prompt: str = ""
    reference: str = ""
    problem: str = ""
    """Why the row can't be answered (the sheet's words); such a row is kept for the export, never shown."""


@dataclass(frozen=True)
class StudySetup:
    position: int
    label: str
    """The set-up's name, shown only after a vote and on the leaderboard."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Engine, speaker, system prompt, sampling, seed, speech: as the Evaluate tab's ``Setup`` holds them."""
    engine: Mapping[str, Any] = field(default_factory=dict)
    """The model and backend that answered ({"model": …, "backend": …}), once known."""


@dataclass(frozen=True)
class StudyAnswer:
    prompt: int
    setup: int
    text: str = ""
    audio: str | None = None
    """The spoken answer's WAV, relative to the data folder (None: text only)."""
    audio_sha256: str | None = None
    error: str = ""
    finish_reason: str = ""
    first_token_s: float | None = None
    first_audio_s: float | None = None
    tokens_per_s: float | None = None


@dataclass(frozen=True)
class Study:
    id: str
    name: str
    created_at: float
    created_by: str
    app_version: str
    setups: tuple[StudySetup, ...]
    prompts: tuple[StudyPrompt, ...]
    closed_at: float | None = None
    """When its creator closed it (``time.time()``): no more pairs or votes until it is reopened; None while open."""

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Every two set-ups, as (lower position, higher position)."""
        n = len(self.setups)
        return [(i, j) for i in range(n) for j in range(i + 1, n)]

    def prompt(self, position: int) -> StudyPrompt:
        return self.prompts[position]


@dataclass(frozen=True)
class Pair:
    """One prompt with two set-ups' answers, shown to one rater: ``left`` as A, ``right`` as B."""

    id: str
    """Random: it says nothing about the set-ups (it reaches the page before the vote)."""
    study_id: str
    rater: str
    prompt: int
    left: int
    right: int
    voted: bool = False


@dataclass(frozen=True)
class Vote:
    seq: int
    """The order votes were stored in (the vote log's order)."""
    pair_id: str
    study_id: str
    rater: str
    prompt: int
    left: int
    right: int
    choice: Choice
    comment: str
    voted_at: float

    @property
    def winner(self) -> int | None:
        """The set-up that won, or None for a tie or both bad."""
        return {"A": self.left, "B": self.right}.get(self.choice)

    @property
    def outcome(self) -> tuple[int, int, str]:
        """(lower set-up, higher set-up, "low" | "high" | "tie" | "both_bad"): the vote whatever the sides were."""
        low, high = sorted((self.left, self.right))
        if self.winner is None:
            return low, high, self.choice
        return low, high, "low" if self.winner == low else "high"


@dataclass(frozen=True)
class RaterProgress:
    """One rater's place in a study, for its creators: votes given, pairs still to judge among those ready now
    (every pair of the prompts every set-up has answered), and when they last voted."""

    rater: str
    votes: int
    left: int
    last_vote_at: float | None
    """``time.time()`` of their last vote; None for a rater shown a pair who hasn't voted yet."""
