"""Many replies at once (issue 25): the batched engine answers each one as it would alone.

On the CPU with the tiny model and the real classes: replies that decode together, join mid-way or are
stopped mid-way give the text, the codec codes and the waveform they get alone (the serialized engine of the
session's ``instruct_backend``, same checkpoint); seeded sampling gives the same text and voice whatever a
reply is batched with; and eight people at once through the app each get their own answer without waiting for
another's whole reply.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from gradio_client import Client

from backends import build_backend
from backends.checkpoints import resolve_checkpoint
from backends.events import AudioChunk, Done, TextDelta
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from tests.streams import audio_of, collect, errors_of, finish_of, text_of


@pytest.fixture(scope="module")
def batched_backend(tiny_cache):
    with build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=2.0, talker_do_sample=False,
                       batch_slots=4) as backend:
        assert backend.batched is not None and backend.info.max_concurrency == 4
        backend.batched.thinker.pack_tokens = 1024  # replies waiting together share prompt passes, as on a GPU
        backend.batched.talker.pack = True
        yield backend


@pytest.fixture
def vocoder_frames(monkeypatch) -> list:
    """Every reply's codec frames, one list per reply (per vocoder), in the order the replies began speaking."""
    from backends.transformers.vocoder import StreamingVocoder

    replies: list[list] = []
    push = StreamingVocoder.push

    def recording(self, frame):
        if not hasattr(self, "_recorded"):
            self._recorded = []
            replies.append(self._recorded)
        self._recorded.append(tuple(frame.tolist()))
        return push(self, frame)

    monkeypatch.setattr(StreamingVocoder, "push", recording)
    return replies


def spoken(*parts, tokens: int, **sampling) -> ChatRequest:
    return ChatRequest(turns=(Turn.user(*parts),), sampling=Sampling(**{"temperature": 0, **sampling},
                                                                    max_new_tokens=tokens), return_audio=True)


def together(backend, requests: list[ChatRequest]) -> list[list]:
    async def run():
        async def one(request):
            return [event async for event in backend.stream(request)]
        return await asyncio.gather(*(one(r) for r in requests))

    return asyncio.run(run())


def test_replies_decoded_together_equal_each_reply_alone(instruct_backend, batched_backend, vocoder_frames,
                                                         speech_path, image_path):
    """Three replies of different lengths and media, started together: each one's greedy text, codec codes and
    waveform equal what it gets alone, and they really were decoded in one batch."""
    requests = [spoken("Hi", tokens=12),
                spoken(MediaPart("audio", str(speech_path)), "What is said?", tokens=20),
                spoken(MediaPart("image", str(image_path)), "Describe this picture.", tokens=8)]
    alone = [collect(instruct_backend, r) for r in requests]
    codes_alone = sorted(map(tuple, vocoder_frames))
    vocoder_frames.clear()
    engine = batched_backend.batched
    engine.thinker.max_rows = engine.talker.max_rows = 0
    steps = engine.thinker.batch.steps
    replies = together(batched_backend, requests)
    assert engine.thinker.max_rows == 3 and engine.talker.max_rows == 3, "the three should share the batch"
    assert engine.thinker.batch.steps > steps
    for mine, reference in zip(replies, alone):
        assert finish_of(mine) == finish_of(reference) == "length"
        assert text_of(mine) == text_of(reference) and text_of(mine)
        assert len(audio_of(mine)) == len(audio_of(reference)) > 0
        assert np.array_equal(audio_of(mine), audio_of(reference))
    assert sorted(map(tuple, vocoder_frames)) == codes_alone


def test_compiled_batched_steps_compile_once_for_every_batch_size_and_answer_as_each_reply_alone(
        instruct_backend, tiny_cache, vocoder_frames, speech_path, image_path):
    """On a GPU the batched steps are torch.compiled before they are captured, one compile serving every batch
    size (a compile per size would add minutes per size to the 30B model's warm-up). Compiled here with
    ``aot_eager`` (tests/compiling.py): the thinker's step, the talker's step and the predictor's frame compile
    once each for the sizes 2 and 4, not again while replies of 1 to 3 rows decode, and three replies together
    still get each one's text, codes and waveform alone."""
    import torch

    graphs: list = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return torch._dynamo.lookup_backend("aot_eager")(graph, example_inputs)

    requests = [spoken("Hi", tokens=12),
                spoken(MediaPart("audio", str(speech_path)), "What is said?", tokens=20),
                spoken(MediaPart("image", str(image_path)), "Describe this picture.", tokens=8)]
    alone = [collect(instruct_backend, r) for r in requests]
    codes_alone = sorted(map(tuple, vocoder_frames))
    vocoder_frames.clear()
    with pytest.MonkeyPatch.context() as patch, \
            build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=2.0,
                          talker_do_sample=False, batch_slots=4) as backend:
        patch.setattr(torch, "compile", functools.partial(torch.compile, backend=counting))
        backend.capture_batches()
        assert backend.thinker_batch.torch_compiled and backend.talker_batch.torch_compiled
        assert backend.thinker_batch.batch_sizes == backend.talker_batch.batch_sizes == [2, 4]
        assert len(graphs) == 3, "the thinker's step, the talker's step and the frame: one compile each"
        engine = backend.batched
        replies = together(backend, requests)
        assert engine.thinker.max_rows == 3 and engine.thinker.batch.steps > 0
    assert len(graphs) == 3, "decoding must not compile again"
    for mine, reference in zip(replies, alone):
        assert text_of(mine) == text_of(reference) and text_of(mine)
        assert len(audio_of(mine)) > 0 and np.array_equal(audio_of(mine), audio_of(reference))
    assert sorted(map(tuple, vocoder_frames)) == codes_alone


@pytest.mark.parametrize("prefill_lengths", [(), (128, 512)], ids=["eager pass", "captured lengths"])
def test_replies_waiting_together_share_one_prompt_pass_and_each_decodes_as_alone(batched_backend, speech_path,
                                                                                 image_path, prefill_lengths):
    """Three prompts (text, audio, image) waiting together go through the text model in one packed pass (its
    weights read once for all three), each attending only to itself: each gets the tokens and the talker's
    prompt states it gets from a prompt pass of its own. Eagerly, and through the passes captured per length
    (plain functions on the CPU) when one holds the three."""
    import torch

    from backends.conversation import build_prompt_inputs
    from backends.transformers.batched.thinker import ThinkerBatch
    from backends.transformers.thinker_decoder import ThinkerDecoder, ThinkerSampling

    model = batched_backend.model
    thinker = model.thinker
    requests = [spoken("Hi", tokens=8), spoken(MediaPart("audio", str(speech_path)), "What is said?", tokens=8),
                spoken(MediaPart("image", str(image_path)), "Describe this picture.", tokens=8)]
    prompts = [batched_backend.encode(build_prompt_inputs(r)) for r in requests]
    decoder = ThinkerDecoder(thinker, 512, prefill_lengths, model.config.talker_config.accept_hidden_layer)
    decoder.capture_prompt_passes()
    passes = []
    text_model = decoder._text_model
    decoder._text_model = lambda embeds, *args: passes.append(embeds.shape[1]) or text_model(embeds, *args)
    if prefill_lengths:
        decoder._prefills = {n: (lambda f=f: passes.append("captured") or f()) for n, f in decoder._prefills.items()}
    greedy = ThinkerSampling(0.0, 20, 1.0, 8, -1)

    def decode(admitted) -> list[list[int]]:
        replies = {row.slot: [first] for row, first in admitted}
        for _ in range(7):
            for slot, token in batch.step().items():
                replies[slot].append(token)
        for row, _ in admitted:
            batch.release(row)
        return [replies[row.slot] for row, _ in admitted]

    batch = ThinkerBatch(thinker, decoder, slots=4, batch_sizes=(4,))
    states_alone = [{} for _ in prompts]
    alone = decode([batch.admit(inputs, greedy, states) for inputs, states in zip(prompts, states_alone)])
    passes.clear()
    states = [{} for _ in prompts]
    broken = {**prompts[1], "input_features": prompts[1]["input_features"][..., :40],
              "feature_attention_mask": prompts[1]["feature_attention_mask"][..., :40]}  # fewer features than tokens
    results = batch.admit_packed([*[(inputs, greedy, s) for inputs, s in zip(prompts, states)], (broken, greedy, {})])
    assert isinstance(results[-1], Exception), "the prompt whose encoder failed is left out, alone"
    packed = decode(results[:-1])
    lengths = [int(inputs["input_ids"].shape[1]) for inputs in prompts]
    padded = next((n for n in prefill_lengths if n >= sum(lengths)), None)
    assert passes == (["captured", padded] if prefill_lengths else [sum(lengths)]), "one pass for the three"
    assert packed == alone and all(len(reply) == 8 for reply in packed)
    for mine, reference, length in zip(states, states_alone, lengths):
        assert mine["hidden"].shape[1] == length
        torch.testing.assert_close(mine["hidden"], reference["hidden"])
    assert not batch.rows, "every row was released"
    from backends.transformers.batched.packed import PromptParts, pack

    parts = [PromptParts(torch.zeros((1, n, width), dtype=thinker.dtype), torch.zeros((3, 1, n), dtype=torch.long),
                         torch.zeros((0, 1, n, width), dtype=thinker.dtype), torch.tensor(0))
             for n, width in ((5, thinker.config.text_config.hidden_size), (4, 7))]
    with pytest.raises(RuntimeError):
        pack(decoder, parts)  # the second prompt's width can't join the first's
    assert not decoder.prompt_segments.any(), "a failed pack leaves the next lone prompt one segment"


@pytest.mark.parametrize("prefill_lengths", [(), (64, 256)], ids=["eager pass", "captured lengths"])
def test_talker_prompts_admitted_together_share_one_pass_and_each_speaks_as_alone(batched_backend,
                                                                                  prefill_lengths):
    """Three talker prompts of different lengths admitted together go through the talker in one packed pass:
    each gets the logits and states it gets from a pass of its own, and its next steps are the same."""
    import torch

    from backends.transformers.batched.talker import TalkerBatch
    from backends.transformers.talker_decoder import TalkerDecoder

    talker = batched_backend.model.talker
    hidden_size = talker.config.text_config.hidden_size
    generator = torch.Generator().manual_seed(0)
    prompts = []
    for length in (9, 23, 14):
        embeds = torch.randn((1, length, hidden_size), generator=generator).to(talker.dtype)
        ids = torch.randint(0, 100, (1, length), generator=generator)
        prompts.append((embeds, ids, torch.ones_like(ids), {}))
    decoder = TalkerDecoder(talker, 128, prefill_lengths)
    decoder.capture_prompt_passes()
    passes = []
    prompt_model = decoder._prompt_model
    decoder._prompt_model = lambda embeds, positions: passes.append(embeds.shape[1]) or prompt_model(embeds, positions)

    def speak(admitted) -> list:
        """Each row's prompt logits, then its logits over three steps of the same inputs."""
        outputs = {slot: [logits] for slot, logits, _ in admitted}
        for step in range(3):
            for slot, _, _ in admitted:
                batch.codec_in[slot].fill_(0.01 * (step + 1))
                batch.text_in[slot].fill_(0.02 * slot)
            for slot, (logits, _) in batch.step({slot for slot, _, _ in admitted}).items():
                outputs[slot].append(logits.clone())
        for slot, _, _ in admitted:
            batch.release(slot)
        return [torch.cat(outputs[slot]) for slot, _, _ in admitted]

    batch = TalkerBatch(talker, decoder, slots=4, batch_sizes=(4,))
    alone = speak([batch.admit(*prompt) for prompt in prompts])
    passes.clear()
    together = batch.admit_packed(prompts)
    assert passes == [next((n for n in prefill_lengths if n >= 46), 46)], "one pass for the three prompts"
    assert [slot for slot, _, _ in together] == [0, 1, 2]
    for mine, reference in zip(speak(together), alone):
        torch.testing.assert_close(mine, reference)


def test_replies_prepared_in_worker_processes_answer_as_in_the_engines_process(instruct_backend, tiny_cache,
                                                                                speech_path, image_path, tmp_path):
    """With ``prepare_processes`` the replies' media decoding and processor run in worker processes (side by
    side: in threads they hold the GIL): three replies together still get their lone text and speech, and a
    file that can't be read is named in a clear message, the others unharmed."""
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    requests = [spoken("Hi", tokens=12),
                spoken(MediaPart("audio", str(speech_path)), "What is said?", tokens=20),
                spoken(MediaPart("image", str(image_path)), "Describe this picture.", tokens=8)]
    alone = [collect(instruct_backend, r) for r in requests]
    with build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=2.0, talker_do_sample=False,
                       batch_slots=4, prepare_processes=2) as backend:
        assert backend.preparing is not None and backend.preparing.workers == 2
        replies = together(backend, [*requests, spoken(MediaPart("image", str(garbage)), "And this?", tokens=8)])
        backend.preparing._pool.submit(os._exit, 1)  # a worker dies (as a decoder crashing on a file would)
        time.sleep(1)
        after = collect(backend, requests[0])
    for mine, reference in zip(replies, alone):
        assert text_of(mine) == text_of(reference) and text_of(mine)
        assert np.array_equal(audio_of(mine), audio_of(reference))
    refused = replies[-1]
    assert finish_of(refused) == "error" and not text_of(refused)
    assert any("garbage.png" in str(e.message) and "not a readable image" in str(e.message)
               for e in errors_of(refused))
    assert text_of(after) == text_of(alone[0]), "the workers start again after one dies"


def test_a_talker_prompt_that_fails_keeps_the_replies_text_says_so_and_the_talker_goes_on(batched_backend,
                                                                                             monkeypatch):
    """Speech is extra: when the talker's prompt can't be made, the replies keep their text, say their speech
    failed, and end; the talker's loop stays up, and the next reply speaks."""
    from backends.transformers.speech import Talker

    def broken(*args, **kwargs):
        raise RuntimeError("no talker prompt today")

    with monkeypatch.context() as patch:
        patch.setattr(Talker, "prompt_embeds", broken)
        replies = together(batched_backend, [spoken("Hi", tokens=8), spoken("Hello there.", tokens=8)])
    for reply in replies:
        assert text_of(reply) and finish_of(reply) == "length" and not audio_of(reply).size
        assert any("no talker prompt today" in str(e.message) for e in errors_of(reply))
    assert batched_backend.batched.talker.alive and not batched_backend.batched.talker.batch.busy
    assert audio_of(collect(batched_backend, spoken("Hi", tokens=8))).size


def test_a_reply_that_joins_mid_way_or_is_stopped_mid_way_leaves_the_others_as_they_would_be_alone(
        instruct_backend, batched_backend, speech_path):
    """A long reply streams; a second joins after its fifth piece of text; a third, started with the first, is
    closed (Stop) at its first audio. The first two equal their replies alone; the stopped one frees its rows."""
    long = spoken(MediaPart("audio", str(speech_path)), "Tell me everything you hear.", tokens=40)
    joining = spoken("What is two plus two?", tokens=16)
    stopped = spoken("Count to ten.", tokens=40)
    alone = [collect(instruct_backend, r) for r in (long, joining)]
    engine = batched_backend.batched

    async def run():
        joined = asyncio.Event()
        results: dict = {}

        async def first():
            events, deltas = [], 0
            async for event in batched_backend.stream(long):
                events.append(event)
                deltas += isinstance(event, TextDelta)
                if deltas == 5:
                    joined.set()
            results["long"] = events

        async def second():
            await joined.wait()
            results["joining"] = [event async for event in batched_backend.stream(joining)]

        async def third():
            events = []
            stream = batched_backend.stream(stopped)
            async for event in stream:
                events.append(event)
                if isinstance(event, AudioChunk):
                    break
            await stream.aclose()
            results["stopped"] = events

        await asyncio.gather(first(), second(), third())
        return results

    results = asyncio.run(run())
    for name, reference in zip(("long", "joining"), alone):
        assert text_of(results[name]) == text_of(reference)
        assert np.array_equal(audio_of(results[name]), audio_of(reference))
    assert any(isinstance(e, AudioChunk) for e in results["stopped"])
    assert not any(isinstance(e, Done) for e in results["stopped"])
    deadline = time.monotonic() + 5
    while (engine.thinker.batch.rows or engine.talker.batch.busy) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.thinker.batch.rows and not engine.talker.batch.busy, "a stopped reply must free its rows"


def test_seeded_sampling_gives_the_same_text_and_voice_whatever_a_reply_is_batched_with(batched_backend,
                                                                                          image_path):
    """A sampled reply (text and voice) with a seed, alone and then beside two others: the same text and
    waveform; another seed gives another reply."""
    options = batched_backend.options
    batched_backend.options = replace(options, talker_do_sample=True)
    try:
        seeded = spoken("Tell me a story.", tokens=16, temperature=0.9, top_k=40, seed=11)
        first = collect(batched_backend, seeded)  # alone: the one-row decoders
        crowd = together(batched_backend, [spoken(MediaPart("image", str(image_path)), "What is it?", tokens=24),
                                           seeded, spoken("Hello there.", tokens=20, temperature=0.7, seed=3)])
        other = collect(batched_backend, replace(seeded, sampling=replace(seeded.sampling, seed=12)))
    finally:
        batched_backend.options = options
    assert text_of(crowd[1]) == text_of(first) and text_of(first)
    assert len(audio_of(first)) > 0 and np.array_equal(audio_of(crowd[1]), audio_of(first))
    assert text_of(other) != text_of(first)


def test_eight_people_at_once_through_the_app_each_get_their_own_answer_without_waiting_for_whole_replies(
        tiny_cache, tmp_path):
    """Eight gradio_client sessions send at once to an app whose engine batches eight: each answer equals the
    answer that question got alone (greedy, asked first one at a time), and every session's first text arrives
    before any session's reply ends."""
    from tests.test_app import assistant_texts, launch

    questions = [f"Question number {n}: what do you think?" for n in range(8)]
    with build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=2.0, talker_do_sample=False,
                       batch_slots=8) as backend:
        demo = launch(backend)
        try:
            assert backend.info.max_concurrency == 8
            first_text: dict[int, float] = {}
            ended: dict[int, float] = {}
            answers: dict[int, str] = {}

            def session(n: int) -> str:
                client = Client(demo.local_url, verbose=False, download_files=str(tmp_path / str(n)))
                job = client.submit({"text": questions[n], "files": []}, speak=False, temperature=0, max_tokens=24,
                                    api_name="/chat")
                for outputs in job:
                    if n not in first_text and "".join(assistant_texts(outputs[0])):
                        first_text[n] = time.monotonic()
                ended[n] = time.monotonic()
                return "".join(assistant_texts(job.outputs()[-1][0]))

            solo = [session(n) for n in range(8)]
            first_text.clear()
            ended.clear()
            backend.batched.thinker.max_rows = 0

            def at_once(n: int) -> None:
                answers[n] = session(n)

            threads = [threading.Thread(target=at_once, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            most_at_once = backend.batched.thinker.max_rows
        finally:
            demo.close()
    assert most_at_once >= 4, f"the replies should have shared the batch (at most {most_at_once} did)"
    assert [answers[n] for n in range(8)] == solo and len(set(solo)) > 1
    assert max(first_text.values()) < min(ended.values()), "someone's first text waited for another's whole reply"
