"""The leaderboard: Bradley–Terry strengths with bootstrap intervals, the win-rate matrix, agreement between raters.

Bradley–Terry: set-up i beats j with probability p_i / (p_i + p_j). A tie and a "both bad" count as half a win
each way (as Chatbot Arena counts them), and every two set-ups are given ``PRIOR`` extra tied games, so a set-up
that has never won (or never lost) still gets a finite strength and a few votes don't swing the board. The
strengths are fitted by maximum likelihood (Newton's method on log-strengths) and shown on the Elo scale:
``1000 + 400 · log10(p_i)``, with the p's geometric mean at 1 (a 120-point gap: the stronger wins 2 of 3).
Intervals: the fit repeated on ``BOOTSTRAP`` resamples (a fixed seed, so a board doesn't jitter between two looks at
the same votes), 2.5th to 97.5th percentile. Votes on the same prompt are not independent (a prompt one set-up
handles badly gives it losses from every rater), so a resample draws prompts, each with all its votes (a cluster
bootstrap), once ``CLUSTER_MIN_PROMPTS`` prompts have votes; with fewer there are too few clusters to resample, and
single votes are drawn. Clustering by rater as well is not done: intervals still ignore that one rater's votes
lean alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from studies.records import Vote

PRIOR = 1.0
"""Tied games added between every two set-ups (a weak pull towards equal strengths)."""
BOOTSTRAP = 200
CLUSTER_MIN_PROMPTS = 5
"""From this many prompts with votes, the bootstrap resamples prompts rather than single votes."""
SCALE, BASE = 400 / np.log(10), 1000.0


@dataclass(frozen=True)
class Standing:
    setup: int
    score: float
    """Elo scale."""
    low: float | None
    high: float | None
    """The bootstrap interval (None with no votes)."""
    votes: int
    wins: int
    losses: int
    ties: int
    both_bad: int

    @property
    def win_rate(self) -> float | None:
        """Wins, with ties and both-bad as half, per vote."""
        return (self.wins + 0.5 * (self.ties + self.both_bad)) / self.votes if self.votes else None


@dataclass(frozen=True)
class Leaderboard:
    standings: tuple[Standing, ...]
    """Best first."""
    win_rates: tuple[tuple[float | None, ...], ...]
    """[i][j]: how often set-up i beat j (ties and both-bad as half), over their votes; None where none."""
    games: tuple[tuple[int, ...], ...]
    """[i][j]: votes between i and j."""
    votes: int
    raters: int
    agreement: float | None
    """Of two raters who judged the same cell, how often they voted the same (None: no cell has two votes)."""
    alpha: float | None
    """Krippendorff's alpha (nominal) over those cells: 1 full agreement, 0 as by chance."""


RESULTS = ("low", "high", "tie", "both_bad")
LOW_SHARE = np.array([1.0, 0.0, 0.5, 0.5])
"""The lower set-up's share of the win, per result (a tie and both-bad are half a win each way)."""


def columns(outcomes: Sequence[tuple[int, int, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, result as its index in ``RESULTS``) as arrays, one entry per (low, high, result) outcome."""
    code = {result: k for k, result in enumerate(RESULTS)}
    return (np.array([o[0] for o in outcomes], dtype=int), np.array([o[1] for o in outcomes], dtype=int),
            np.array([code[o[2]] for o in outcomes], dtype=int))


def _wins(setups: int, low: np.ndarray, high: np.ndarray, result: np.ndarray,
          weights: np.ndarray | None = None) -> np.ndarray:
    """wins[i, j]: i over j, ties as half, each outcome counted ``weights`` times (once by default)."""
    weights = np.ones(len(low)) if weights is None else weights
    share, size = LOW_SHARE[result], setups * setups
    flat = (np.bincount(low * setups + high, weights * share, minlength=size)
            + np.bincount(high * setups + low, weights * (1 - share), minlength=size))
    return flat.reshape(setups, setups)


def wins_matrix(setups: int, outcomes: Sequence[tuple[int, int, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(wins[i, j]: i over j, ties as half; games[i, j]) from (low, high, result) outcomes."""
    wins = _wins(setups, *columns(outcomes))
    return wins, wins + wins.T


def bradley_terry(wins: np.ndarray, prior: float = PRIOR) -> np.ndarray:
    """Log-strengths (natural log, mean 0) that maximise the likelihood of ``wins`` plus the prior's tied games."""
    n = len(wins)
    wins = wins + prior / 2 * (1 - np.eye(n))
    games = wins + wins.T
    total = wins.sum(axis=1)
    theta = np.zeros(n)
    for _ in range(100):
        p = 1 / (1 + np.exp(theta[None, :] - theta[:, None]))  # p[i, j]: i beats j
        gradient = total - (games * p).sum(axis=1)
        curvature = games * p * p.T
        hessian = np.diag(curvature.sum(axis=1)) - curvature  # minus the log-likelihood's Hessian
        step = np.linalg.lstsq(hessian + 1.0 / n, gradient, rcond=None)[0]  # + 1/n: no drift along a shift
        theta = theta + step * min(1.0, 2.0 / max(np.abs(step).max(), 1e-12))  # damped: never overshoots far
        theta -= theta.mean()
        if np.abs(step).max() < 1e-10:
            break
    return theta


def scores(theta: np.ndarray) -> np.ndarray:
    return BASE + SCALE * theta


def leaderboard(setups: int, votes: Sequence[Vote], prior: float = PRIOR, bootstrap: int = BOOTSTRAP,
                seed: int = 0) -> Leaderboard:
    low, high, result = columns([vote.outcome for vote in votes])
    wins = _wins(setups, low, high, result)
    games = wins + wins.T
    point = scores(bradley_terry(wins, prior))
    prompts = np.array([vote.prompt for vote in votes], dtype=int)
    intervals = _intervals(setups, (low, high, result), prompts, prior, bootstrap, seed)

    def per_setup(mask: np.ndarray, sides=(low, high)) -> np.ndarray:
        """Per set-up: the outcomes where ``mask`` holds that it is in (on the sides given)."""
        return sum(np.bincount(side[mask], minlength=setups) for side in sides)

    seen, ties, both_bad = per_setup(result >= 0), per_setup(result == 2), per_setup(result == 3)
    won = per_setup(result == 0, (low,)) + per_setup(result == 1, (high,))
    standings = []
    for i in range(setups):
        ci_low, ci_high = intervals[i] if intervals is not None else (None, None)
        standings.append(Standing(i, float(point[i]), ci_low, ci_high, int(seen[i]), int(won[i]),
                                  int(seen[i] - won[i] - ties[i] - both_bad[i]), int(ties[i]), int(both_bad[i])))
    standings.sort(key=lambda s: (-s.score, s.setup))
    rates = tuple(tuple(float(wins[i, j] / games[i, j]) if games[i, j] else None for j in range(setups))
                  for i in range(setups))
    agreement, alpha = rater_agreement(votes)
    return Leaderboard(tuple(standings), rates, tuple(tuple(int(g) for g in row) for row in games), len(votes),
                       len({v.rater for v in votes}), agreement, alpha)


def _intervals(setups: int, outcomes: tuple[np.ndarray, np.ndarray, np.ndarray], prompts: np.ndarray, prior: float,
               bootstrap: int, seed: int) -> list[tuple[float, float]] | None:
    """2.5th and 97.5th percentiles of the scores fitted on ``bootstrap`` resamples: of the prompts (each with all
    its votes) once ``CLUSTER_MIN_PROMPTS`` have votes, else of single votes. Votes of the same kind (the same two
    set-ups, the same result) are interchangeable, so a resample is how many of each kind it holds: one multinomial
    draw over the prompts (or the kinds), not a pass over the votes."""
    low, high, result = outcomes
    if not len(low) or bootstrap <= 0:
        return None
    kinds, kind_of, count = np.unique((low * setups + high) * len(RESULTS) + result, return_inverse=True,
                                      return_counts=True)
    pair, kind_result = np.divmod(kinds, len(RESULTS))
    kind_low, kind_high = np.divmod(pair, setups)
    rng = np.random.default_rng(seed)
    voted, prompt_of = np.unique(prompts, return_inverse=True)
    if len(voted) >= CLUSTER_MIN_PROMPTS:
        per_prompt = np.bincount(prompt_of * len(kinds) + kind_of.ravel(), minlength=len(voted) * len(kinds))
        drawn = rng.multinomial(len(voted), np.full(len(voted), 1 / len(voted)), size=bootstrap)
        drawn = drawn @ per_prompt.reshape(len(voted), len(kinds))  # each kind's votes in each resample
    else:
        drawn = rng.multinomial(len(low), count / len(low), size=bootstrap)
    fits = [scores(bradley_terry(_wins(setups, kind_low, kind_high, kind_result, weights), prior))
            for weights in drawn]
    ci_low, ci_high = np.percentile(np.array(fits), [2.5, 97.5], axis=0)
    return [(float(ci_low[i]), float(ci_high[i])) for i in range(setups)]


def rater_agreement(votes: Sequence[Vote]) -> tuple[float | None, float | None]:
    """(pairwise agreement, Krippendorff's alpha) over the cells (prompt and pair of set-ups) with two votes or more.
    The value compared is the outcome whatever the sides were: the lower set-up won, the higher, tie, both bad."""
    units: dict[tuple, list[str]] = {}
    for vote in votes:
        low, high, result = vote.outcome
        units.setdefault((vote.prompt, low, high), []).append(result)
    units = {cell: values for cell, values in units.items() if len(values) > 1}
    if not units:
        return None, None
    agree = pairs = 0
    for values in units.values():
        for a in range(len(values)):
            for b in range(a + 1, len(values)):
                pairs += 1
                agree += values[a] == values[b]
    # Krippendorff's alpha, nominal: observed disagreement over the disagreement expected from the values' totals.
    categories = sorted({v for values in units.values() for v in values})
    index = {c: k for k, c in enumerate(categories)}
    coincidence = np.zeros((len(categories), len(categories)))
    for values in units.values():
        m = len(values)
        for a in range(m):
            for b in range(m):
                if a != b:
                    coincidence[index[values[a]], index[values[b]]] += 1 / (m - 1)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    observed = (coincidence.sum() - np.trace(coincidence)) / n
    expected = (n * n - (n_c * n_c).sum()) / (n * (n - 1))
    alpha = 1 - observed / expected if expected > 0 else None
    return agree / pairs, (None if alpha is None else float(alpha))


def score_history(setups: int, votes: Sequence[Vote], prior: float = PRIOR, points: int = 40) -> list[tuple]:
    """(votes so far, set-up, score) after every few votes (at most ``points`` steps): how the board moved."""
    low, high, result = columns([vote.outcome for vote in votes])
    if not len(low):
        return []
    step = max(1, -(-len(low) // points))
    marks = sorted({*range(step, len(low), step), len(low)})
    history = []
    for mark in marks:
        fitted = scores(bradley_terry(_wins(setups, low[:mark], high[:mark], result[:mark]), prior))
        history += [(mark, i, float(fitted[i])) for i in range(setups)]
    return history
