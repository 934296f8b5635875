"""The team-study core without the app: the store (SQLite), the schedule of pairs, the leaderboard's numbers
checked against Bradley–Terry computed by hand, and the answers made through the tiny engine across a restart."""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile

from backends.base import Backend
from backends.events import Done, Error, TextDelta
from backends.request import ChatRequest, MediaPart, Sampling, TextPart, Turn
from media import kind_of
from messages import Message
from studies import StudyError, StudyAnswer, StudyPrompt, StudyStore
from studies.generation import Generator
from studies.ranking import bradley_terry, leaderboard, rater_agreement, wins_matrix
from studies.records import Vote
from studies.schedule import cells, next_cell
from studies.store import SCHEMA_VERSION

SETUPS = [("warm", {"speaker": "ethan", "temperature": 0.7}), ("cold", {"speaker": "chelsie", "temperature": 0.0}),
          ("long", {"speaker": "aiden", "max_new_tokens": 512})]


def answered_study(store: StudyStore, prompts: int = 5, setups=SETUPS):
    study = store.create_study("five prompts", setups, [StudyPrompt(k, f"p{k}", f"Question {k}?")
                                                        for k in range(prompts)], created_by="lead")
    for prompt in range(prompts):
        for setup in range(len(setups)):
            store.save_answer(study.id, StudyAnswer(prompt, setup, f"answer {prompt}/{setup}"))
    return study


def vote(seq, left, right, choice, rater="r", prompt=0) -> Vote:
    return Vote(seq, f"pair{seq}", "s", rater, prompt, left, right, choice, "", 0.0)


def hand_bradley_terry(votes: list[Vote], setups: int, prior: float) -> list[float]:
    """Hunter's MM iteration, written out plainly: p_i ← W_i / Σ_j n_ij / (p_i + p_j), ties half a win each way,
    ``prior`` tied games between every two set-ups; Elo scale with the geometric mean at 1000."""
    wins = [[prior / 2 if i != j else 0.0 for j in range(setups)] for i in range(setups)]
    for v in votes:
        if v.choice == "A":
            wins[v.left][v.right] += 1
        elif v.choice == "B":
            wins[v.right][v.left] += 1
        else:
            wins[v.left][v.right] += 0.5
            wins[v.right][v.left] += 0.5
    p = [1.0] * setups
    for _ in range(20000):
        new = [sum(wins[i]) / sum((wins[i][j] + wins[j][i]) / (p[i] + p[j]) for j in range(setups) if j != i)
               for i in range(setups)]
        mean = math.exp(sum(math.log(x) for x in new) / setups)
        p = [x / mean for x in new]
    return [1000 + 400 * math.log10(x) for x in p]


def test_bradley_terry_matches_strengths_computed_by_hand():
    """A beats B 2 of 3, B beats C 2 of 3, A beats C 4 of 5: exactly what strengths 4 : 2 : 1 predict, so those
    are the maximum-likelihood strengths (without the prior): 120.4 Elo points (400·log10 2) between neighbours."""
    votes = [vote(1, 0, 1, "A"), vote(2, 1, 0, "B"), vote(3, 0, 1, "B"),
             vote(4, 1, 2, "A"), vote(5, 2, 1, "B"), vote(6, 1, 2, "B"),
             *[vote(7 + k, 0, 2, "A") for k in range(4)], vote(11, 2, 0, "A")]
    theta = bradley_terry(wins_matrix(3, [v.outcome for v in votes])[0], prior=0)
    assert np.allclose(np.exp(theta) / np.exp(theta).min(), [4, 2, 1], atol=1e-9)
    board = leaderboard(3, votes, prior=0, bootstrap=0)
    scores = {s.setup: s.score for s in board.standings}
    assert scores[0] - scores[1] == pytest.approx(400 * math.log10(2)) == scores[1] - scores[2]
    assert [s.setup for s in board.standings] == [0, 1, 2]
    # With the app's prior (one tied game between every two set-ups), the same as the MM iteration by hand.
    board = leaderboard(3, votes, bootstrap=0)
    assert [s.score for s in sorted(board.standings, key=lambda s: s.setup)] == \
        pytest.approx(hand_bradley_terry(votes, 3, prior=1.0))


def test_ties_both_bad_and_the_win_rate_matrix_count_as_the_board_says():
    votes = [vote(1, 0, 1, "A"), vote(2, 0, 1, "tie"), vote(3, 1, 0, "both_bad"), vote(4, 2, 1, "B"),
             vote(5, 0, 2, "A", rater="q")]
    board = leaderboard(3, votes, bootstrap=50)
    by_setup = {s.setup: s for s in board.standings}
    assert (by_setup[0].votes, by_setup[0].wins, by_setup[0].losses, by_setup[0].ties, by_setup[0].both_bad) == \
        (4, 2, 0, 1, 1)
    assert by_setup[0].win_rate == pytest.approx(3 / 4)
    assert board.win_rates[0][1] == pytest.approx(2 / 3) and board.win_rates[1][0] == pytest.approx(1 / 3)
    assert board.win_rates[1][2] == 1.0 and board.games[0][1] == 3 and board.win_rates[0][0] is None
    assert (board.votes, board.raters) == (5, 2)
    for s in board.standings:
        assert s.low <= s.score <= s.high
    assert leaderboard(3, votes, bootstrap=50).standings == board.standings  # the same votes, the same board


def test_the_wins_matrix_counts_every_vote_as_a_plain_loop_does():
    rng = random.Random(3)
    outcomes = [(*sorted(rng.sample(range(5), 2)), rng.choice(["low", "high", "tie", "both_bad"])) for _ in range(300)]
    by_hand = np.zeros((5, 5))
    for low, high, result in outcomes:
        share = {"low": 1.0, "high": 0.0}.get(result, 0.5)
        by_hand[low, high] += share
        by_hand[high, low] += 1 - share
    wins, games = wins_matrix(5, outcomes)
    assert np.array_equal(wins, by_hand) and games.sum() == 2 * 300 and wins_matrix(5, [])[0].sum() == 0


def test_the_intervals_resample_prompts_once_five_have_votes():
    """Votes on one prompt lean alike (here each prompt's ten votes all agree): resampling single votes would
    treat 60 votes as 60 independent facts and give too narrow an interval. From five prompts the bootstrap draws
    prompts; below that, too few to draw from, single votes (then which prompt a vote was on changes nothing)."""
    results = ["A"] * 40 + ["B"] * 20  # set-up 0 beats set-up 1 two times in three

    def width(prompt_of) -> float:
        votes = [vote(k, 0, 1, choice, prompt=prompt_of(k)) for k, choice in enumerate(results)]
        standing = next(s for s in leaderboard(2, votes).standings if s.setup == 0)
        return standing.high - standing.low

    spread, clustered = width(lambda k: k), width(lambda k: k // 10)  # 60 prompts of one vote; 6 of ten alike
    assert clustered > 1.5 * spread
    assert width(lambda k: k // 15) == width(lambda k: 0)  # 4 prompts: as if one, the votes are drawn


def test_agreement_between_raters_is_pairwise_and_krippendorffs_alpha():
    """Two cells judged by three raters: the first all agree (the lower set-up won, whatever the sides), the second
    splits 2 : 1. Agreement: 4 of 6 pairs of votes. Alpha by hand: 6 values (the lower set-up won ×3, the higher
    ×2, tie ×1); observed disagreement 2/6 (the tie against either of two), expected (6² - 3² - 2² - 1²) / (6·5),
    so alpha = 1 - (1/3) / (22/30) = 6/11."""
    votes = [vote(1, 0, 1, "A", "a"), vote(2, 1, 0, "B", "b"), vote(3, 0, 1, "A", "c"),
             vote(4, 1, 2, "B", "a", 1), vote(5, 2, 1, "A", "b", 1), vote(6, 1, 2, "tie", "c", 1),
             vote(7, 0, 2, "A", "a", 2)]  # judged once: no pair to agree on
    agreement, alpha = rater_agreement(votes)
    assert agreement == pytest.approx(4 / 6)
    assert alpha == pytest.approx(6 / 11)
    assert rater_agreement(votes[-1:]) == (None, None)


def spreads(counts: Counter, prompts: int, setups: int) -> tuple[int, int, int]:
    """How far apart the vote counts are: (over cells, over pairs of set-ups, over prompts)."""
    by_pair, by_prompt = Counter(), Counter()
    for (prompt, low, high), n in counts.items():
        by_pair[low, high] += n
        by_prompt[prompt] += n
    every = cells(range(prompts), setups)
    pairs = {(low, high) for _, low, high in every}
    return (max(counts[c] for c in every) - min(counts[c] for c in every),
            max(by_pair[p] for p in pairs) - min(by_pair[p] for p in pairs),
            max(by_prompt[p] for p in range(prompts)) - min(by_prompt[p] for p in range(prompts)))


@pytest.mark.parametrize("raters, each", [(20, 4), (3, 15)])
def test_the_schedule_spreads_votes_evenly_over_pairs_and_prompts(raters, each):
    """Raters asking in random order, each for ``each`` pairs (3 raters: every pair of every prompt): at every
    moment no cell, pair of set-ups or prompt is more than two votes ahead of another, and once every rater has
    judged every cell, each has exactly one vote per rater."""
    rng = random.Random(raters)
    every = cells(range(5), 3)
    counts: Counter = Counter()
    seen: dict[int, set] = {r: set() for r in range(raters)}
    turns = [r for r in range(raters) for _ in range(each)]
    rng.shuffle(turns)
    for rater in turns:
        cell = next_cell(every, counts, seen[rater], rng)
        assert cell not in seen[rater]
        seen[rater].add(cell)
        counts[cell] += 1
        assert max(spreads(counts, 5, 3)) <= 2, counts
    if each == len(every):
        assert set(counts.values()) == {raters} and next_cell(every, counts, seen[0], rng) is None


def test_a_rater_judges_every_pair_once_then_is_done_and_votes_are_kept_once(tmp_path):
    store = StudyStore(tmp_path)
    study = answered_study(store)
    shown = []
    while (pair := store.next_pair(study.id, "ana")) is not None:
        assert store.next_pair(study.id, "ana") == pair  # the same pair until it is voted on
        shown.append((pair.prompt, *sorted((pair.left, pair.right))))
        first, before = store.vote(pair.id, "ana", "A", "left is better")
        again, after = store.vote(pair.id, "ana", "B")  # a retry, or a second tab: the first vote stands
        assert (before, after) == (False, True) and again == first and first.winner == pair.left
    assert sorted(shown) == sorted(cells(range(5), 3)) and len(store.votes(study.id)) == 15
    assert store.progress(study.id, "ana") == (15, 15) and store.progress(study.id, "ben") == (0, 15)
    with pytest.raises(StudyError, match="No pair"):
        store.vote(store.next_pair(study.id, "ben").id, "ana", "A")  # someone else's pair
    with pytest.raises(StudyError, match="A vote is one of"):
        store.vote(store.next_pair(study.id, "ben").id, "ben", "C")


def test_pairs_come_only_from_prompts_every_setup_has_answered(tmp_path):
    store = StudyStore(tmp_path)
    study = store.create_study("s", SETUPS, [StudyPrompt(0, "a", "A?"), StudyPrompt(1, "b", "B?")])
    assert store.next_pair(study.id, "ana") is None and store.progress(study.id, "ana") == (0, 0)
    assert len(store.missing_answers()) == 6
    for setup in range(3):
        store.save_answer(study.id, StudyAnswer(1, setup, "yes"))
    store.save_answer(study.id, StudyAnswer(1, 0, "a second answer is ignored"))
    assert store.answers(study.id)[1, 0].text == "yes"
    assert store.next_pair(study.id, "ana").prompt == 1 and store.progress(study.id, "ana") == (0, 3)
    assert store.missing_answers() == [(study.id, 0, 0), (study.id, 0, 1), (study.id, 0, 2)]


def test_everything_is_kept_when_the_store_is_opened_again(tmp_path):
    store = StudyStore(tmp_path)
    study = answered_study(store)
    pair = store.next_pair(study.id, "ana")
    store.vote(pair.id, "ana", "tie", "same")
    open_pair = store.next_pair(study.id, "ana")
    reopened = StudyStore(tmp_path)
    assert reopened.study(study.id) == study and reopened.votes(study.id) == store.votes(study.id)
    assert reopened.next_pair(study.id, "ana") == open_pair and reopened.progress(study.id, "ana") == (1, 15)


def test_the_schema_is_versioned_and_a_newer_file_is_refused(tmp_path):
    StudyStore(tmp_path)
    db = sqlite3.connect(tmp_path / "studies.sqlite3")
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StudyError, match="newer version of the app"):
        StudyStore(tmp_path)


def test_twenty_raters_voting_at_once_lose_and_double_no_vote(tmp_path):
    store = StudyStore(tmp_path)
    study = answered_study(store, prompts=8, setups=SETUPS + [("fourth", {"seed": 4})])  # 48 pairs each
    stored: dict[str, list[str]] = {}
    errors = []
    stop = time.monotonic() + 3.0

    def rater(name: str) -> None:
        mine = stored.setdefault(name, [])
        try:
            while time.monotonic() < stop and (pair := store.next_pair(study.id, name)) is not None:
                store.vote(pair.id, name, random.choice(["A", "B", "tie", "both_bad"]))
                store.vote(pair.id, name, "A")  # sent twice: kept once
                mine.append(pair.id)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=rater, args=(f"rater {k}",)) for k in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    votes = store.votes(study.id)
    assert sorted(v.pair_id for v in votes) == sorted(p for ids in stored.values() for p in ids)
    assert len(votes) >= 20 and len({v.pair_id for v in votes}) == len(votes)
    for name, ids in stored.items():
        cells_seen = [(v.prompt, *sorted((v.left, v.right))) for v in votes if v.rater == name]
        assert len(cells_seen) == len(set(cells_seen)) == len(ids)
        assert store.progress(study.id, name)[0] == len(ids)


# Generation: the answers, through the engine, once


class Counting(Backend):
    """The tiny engine, counting the requests it gets (by prompt text and speaker)."""

    def __init__(self, inner: Backend):
        self.inner, self.info, self.requests = inner, inner.info, []

    async def stream(self, request):
        self.requests.append((request.turns[-1].text, request.speaker))
        async for event in self.inner.stream(request):
            yield event


def short_request(setup, prompt, paths, backend) -> ChatRequest:
    parts = tuple(MediaPart(kind_of(path), path) for path in paths) + (TextPart(prompt.text),)
    return ChatRequest(turns=(Turn("user", parts),), speaker=setup.settings.get("speaker"),
                       return_audio=bool(setup.settings.get("speech")) and backend.info.can_speak,
                       sampling=Sampling(temperature=0, max_new_tokens=4, seed=0))


SPOKEN = [("warm", {"speaker": "ethan", "speech": True}), ("cold", {"speaker": "chelsie"}),
          ("long", {"speaker": "aiden"})]


def test_answers_are_made_once_with_their_speech_and_a_restart_finishes_the_rest(tmp_path, instruct_backend,
                                                                                  speech_path):
    store = StudyStore(tmp_path)
    prompts = [StudyPrompt(0, "hear", "What is said?", (store.keep_media(str(speech_path), "speech.wav"),))]
    prompts += [StudyPrompt(k, f"p{k}", f"Question {k}?") for k in range(1, 5)]
    prompts.append(StudyPrompt(5, "bad", "", problem="missing file: gone.wav"))  # never answered
    study = store.create_study("s", SPOKEN, prompts)
    engine = Counting(instruct_backend)

    async def until_restart():
        generator = Generator(store, {"app": engine}, short_request)
        generator.wake()
        while len(store.answers(study.id)) < 4:
            await asyncio.sleep(0.02)
        await generator.close()  # the app stops: the answer under way is dropped

    asyncio.run(until_restart())
    made_before = len(store.answers(study.id))
    reopened = StudyStore(tmp_path)

    async def after_restart():
        generator = Generator(reopened, {"app": engine}, short_request)
        generator.wake()
        await generator.idle()

    asyncio.run(after_restart())
    answers = reopened.answers(study.id)
    assert sorted(answers) == [(p, s) for p in range(5) for s in range(3)]
    assert len(engine.requests) <= 15 + 1 and 4 <= made_before < 15  # at most the interrupted one made again
    assert [s.engine for s in reopened.study(study.id).setups] == [{"model": instruct_backend.info.model,
                                                                   "backend": "transformers"}] * 3
    spoken = [a for a in answers.values() if a.audio]
    assert {a.setup for a in spoken} == {0} and len(spoken) >= 4  # a tiny reply may be too short to speak
    for answer in spoken:
        path = reopened.file(answer.audio)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == answer.audio_sha256
        samples, rate = soundfile.read(path)
        assert rate == 24_000 and len(samples) > 0
    assert len({Path(a.audio).name for a in spoken}) == len(spoken)  # random names: no set-up in them
    assert engine.requests.count(("What is said?", "ethan")) in (1, 2)


def test_a_setup_whose_engine_this_server_lacks_waits_and_says_so(tmp_path, instruct_backend):
    store = StudyStore(tmp_path)
    study = store.create_study("s", [("here", {}), ("elsewhere", {"engine": "compare"})],
                               [StudyPrompt(0, "a", "Hi?"), StudyPrompt(1, "b", "Hello?")])
    generator = Generator(store, {"app": instruct_backend}, short_request)

    async def work():
        generator.wake()
        await generator.idle()

    asyncio.run(work())
    assert sorted(store.answers(study.id)) == [(0, 0), (1, 0)]
    assert "which this server lacks" in str(generator.waiting[study.id])
    assert store.next_pair(study.id, "ana") is None  # no prompt has both answers: nothing to rate yet


class Flaky(Backend):
    """An engine that fails its first ``failures`` requests (with an error of ``stage``, after a little text), then
    answers "fine"."""

    def __init__(self, failures: int, stage: str = "backend"):
        self.info = SimpleNamespace(model="flaky", backend="test", can_speak=False)
        self.failures, self.stage, self.requests = failures, stage, 0

    async def stream(self, request):
        self.requests += 1
        if self.requests <= self.failures:
            yield TextDelta("half an ans")
            yield Error(Message("server.unreachable", {"url": "http://gone:8000/v1", "cause": "refused"}), self.stage)
            yield Done("error")
            return
        yield TextDelta("fine")
        yield Done()


def flaky_study(tmp_path, engine: Flaky, retry_after_s):
    """One prompt, answered by a sound set-up and one on ``engine``; the generator, woken."""
    store = StudyStore(tmp_path)
    study = store.create_study("s", [("sound", {}), ("flaky", {"engine": "flaky"})], [StudyPrompt(0, "a", "Hi?")])
    generator = Generator(store, {"app": Flaky(0), "flaky": engine}, short_request, retry_after_s=retry_after_s)
    generator.wake()
    return store, study, generator


async def until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def test_an_answer_the_engine_failed_to_make_is_not_kept_but_made_again_later(tmp_path):
    """A passing failure (a server unreachable, a stalled engine) would be a permanent answer if kept: the answer
    waits, the study says which set-up fails and why, and a later attempt makes it."""
    engine = Flaky(failures=2)

    async def work():
        store, study, generator = flaky_study(tmp_path, engine, retry_after_s=(0.3, 0.3))
        await until(lambda: engine.requests == 1 and (0, 0) in store.answers(study.id) and generator.current is None)
        assert (0, 1) not in store.answers(study.id) and store.next_pair(study.id, "ana") is None
        assert "Set-up flaky failed in the engine (Can't reach the model server" in str(generator.waiting[study.id])
        # Kept (in the store, from a thread), then no longer said to be failing (on the loop, a moment later).
        await until(lambda: (0, 1) in store.answers(study.id) and study.id not in generator.waiting)
        assert engine.requests == 3 and store.answers(study.id)[0, 1] == StudyAnswer(0, 1, "fine", finish_reason="stop")
        await generator.close()

    asyncio.run(work())


def test_an_engine_that_keeps_failing_is_tried_a_few_times_and_a_speech_failure_keeps_its_text(tmp_path):
    """After the last attempt the answer waits for a restart (no request storm); an answer whose text is whole but
    whose speech failed is kept with its error, as in the Evaluate tab, and so is one the engine refused outright."""
    engine = Flaky(failures=99)

    async def work():
        store, study, generator = flaky_study(tmp_path / "down", engine, retry_after_s=(0.05, 0.05))
        await until(lambda: "wait until the app restarts" in str(generator.waiting.get(study.id, "")))
        await asyncio.sleep(0.3)
        assert engine.requests == 3 and sorted(store.answers(study.id)) == [(0, 0)]
        assert "failed in the engine 3 times on 1 prompts" in str(generator.waiting[study.id])
        await generator.close()
        for stage in ("speech", "input"):
            store, study, generator = flaky_study(tmp_path / stage, Flaky(1, stage), retry_after_s=(0.05,))
            await until(lambda: len(store.answers(study.id)) == 2)
            kept = store.answers(study.id)[0, 1]
            assert (kept.text, kept.finish_reason) == ("half an ans", "error") and "Can't reach" in kept.error
            await generator.close()

    asyncio.run(work())


def test_the_generator_keeps_the_store_off_the_event_loop_and_outlives_its_errors(tmp_path):
    """A store call may wait for the database's lock (up to 60 s): never on the server's event loop. An error in the
    task (listing the answers to make, keeping one) is logged and the task goes on, rather than dying unseen."""
    store = StudyStore(tmp_path)
    study = store.create_study("s", [("one", {}), ("two", {})], [StudyPrompt(k, f"p{k}", "Hi?") for k in range(2)])
    calls, failed = [], []
    for name in ("missing_answers", "study", "set_engine", "save_answer"):
        def spy(*args, _original=getattr(store, name), _name=name):
            calls.append((_name, threading.current_thread() is threading.main_thread()))  # asyncio.run's loop
            if _name in ("missing_answers", "save_answer") and _name not in failed:
                failed.append(_name)
                raise sqlite3.OperationalError("database is locked")
            return _original(*args)
        setattr(store, name, spy)
    generator = Generator(store, {"app": Flaky(0)}, short_request, retry_after_s=(0.05,), pause_s=0.05)

    async def work():
        generator.wake()
        await until(lambda: len(store.answers(study.id)) == 4)
        await generator.close()

    asyncio.run(work())
    assert failed == ["missing_answers", "save_answer"]
    assert {name for name, _ in calls} == {"missing_answers", "study", "set_engine", "save_answer"}
    assert not [name for name, on_the_loop in calls if on_the_loop]


def test_a_study_and_an_evaluate_run_keep_the_same_timings(tmp_path):
    """One rounding for both (``studies.generation.timings``): ms for the first token and audio, 0.1 tokens/s."""
    from backends.events import Metrics
    from studies.generation import timings
    from ui.evaluate import runner
    from ui.evaluate.setup import Setup
    from ui.evaluate.sheet import Prompt

    class Timed(Flaky):
        async def stream(self, request):
            yield TextDelta("fine")
            yield Metrics(time_to_first_token_s=0.123456, tokens_per_s=17.77, time_to_first_audio_s=None)
            yield Done()

    store = StudyStore(tmp_path)
    study = store.create_study("s", [("one", {}), ("two", {})], [StudyPrompt(0, "p", "Hi?")])

    async def work():
        generator = Generator(store, {"app": Timed(0)}, short_request)
        kept = await generator.answer(study.id, 0, 0)
        evaluated = await runner.answer(Timed(0), Setup(), Prompt(1, "p", "Hi?"), tmp_path / "a.wav")
        return kept, evaluated

    kept, evaluated = asyncio.run(work())
    assert timings(None) == dict.fromkeys(["first_token_s", "first_audio_s", "tokens_per_s"])
    assert (kept.first_token_s, kept.first_audio_s, kept.tokens_per_s) == (0.123, None, 17.8)
    assert (evaluated.first_token_s, evaluated.first_audio_s, evaluated.tokens_per_s) == (0.123, None, 17.8)
