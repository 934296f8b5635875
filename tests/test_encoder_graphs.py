"""The encoders' padded passes (what a GPU captures as CUDA graphs) give transformers' own outputs.

A clip, two images of different sizes and a video each run padded to the next captured size, with a mask
in place of transformers' attention per window; what a user's turn gets from them must be the stock
encoders' output. ``fullgraph`` tracing proves a pass has no host sync, which is what lets a GPU capture it.
"""

from __future__ import annotations

import pytest
import torch

from backends.conversation import build_prompt_inputs
from backends.transformers.encoder_graphs import EncoderGraphs
from backends.request import ChatRequest, MediaPart, Turn
from tests import media_factory


@pytest.fixture(scope="module")
def thinker_inputs(instruct_backend, speech_path, image_path, video_path, tmp_path_factory):
    """The tiny thinker and a turn's processed inputs: a speech clip, two images, a video with its sound."""
    tall = media_factory.test_image(tmp_path_factory.mktemp("tall") / "tall.png", size=(160, 224))
    turn = Turn.user(MediaPart("audio", str(speech_path)), MediaPart("image", str(image_path)),
                     MediaPart("image", str(tall)), MediaPart("video", str(video_path)), "What is this?")
    inputs = instruct_backend.encode(build_prompt_inputs(ChatRequest(turns=(turn,))))
    return instruct_backend.model.thinker, inputs


def encode(thinker, inputs: dict) -> dict:
    """What the thinker's forward asks its encoders for, for every file of the turn (through transformers'
    methods: the backend's encoder cache would serve the second call from the first)."""
    model = type(thinker)
    with torch.no_grad():
        audio = model.get_audio_features(thinker, inputs["input_features"], inputs["feature_attention_mask"])
        images = model.get_image_features(thinker, inputs["pixel_values"], inputs["image_grid_thw"])
        video = model.get_video_features(thinker, inputs["pixel_values_videos"], inputs["video_grid_thw"])
    return {"audio": audio.last_hidden_state,
            **{f"{kind} {n}": pooled for kind, out in (("image", images), ("video", video))
               for n, pooled in enumerate(out.pooler_output)},
            **{f"{kind} deepstack {n}": level for kind, out in (("image", images), ("video", video))
               for n, level in enumerate(torch.cat(levels) for levels in out.deepstack_features)}}


def counting_passes(graphs: EncoderGraphs) -> dict[str, int]:
    """How many times the padded passes run (whatever size), by encoder."""
    runs = {"audio": 0, "vision": 0}

    def counted(encoder, run):
        def counting():
            runs[encoder] += 1
            return run()
        return counting

    graphs._audio_runs = {size: counted("audio", run) for size, run in graphs._audio_runs.items()}
    graphs._vision_runs = {size: counted("vision", run) for size, run in graphs._vision_runs.items()}
    return runs


def stock_then_padded(thinker, encode_all, **sizes) -> tuple:
    """``encode_all()`` through transformers' encoders, then through the padded passes (``sizes``: the ladders
    EncoderGraphs takes); returns (stock, padded, how many padded passes ran by encoder)."""
    stock = encode_all()
    graphs = EncoderGraphs(thinker, **sizes)
    put_back = graphs.install()
    runs = counting_passes(graphs)
    try:
        padded = encode_all()
    finally:
        put_back()
    return stock, padded, runs


def assert_close(padded: torch.Tensor, expected: torch.Tensor, name: str = "") -> None:
    # One masked attention instead of one per window: the same sums in another order.
    assert padded.shape == expected.shape, name
    assert torch.allclose(padded, expected, rtol=1e-4, atol=1e-6 * expected.abs().max()), name


def test_padded_passes_give_what_transformers_encoders_give(thinker_inputs):
    thinker, inputs = thinker_inputs
    assert len(inputs["feature_attention_mask"]) == 2 and len(inputs["image_grid_thw"]) == 2
    # Each file runs padded: none fills a captured size exactly.
    sizes = EncoderGraphs(thinker)
    assert all(n % sizes.chunk_frames for n in inputs["feature_attention_mask"].sum(-1).tolist())
    assert all(int(grid.prod()) not in sizes.vision_patches
               for grid in (*inputs["image_grid_thw"], *inputs["video_grid_thw"]))
    stock, padded, runs = stock_then_padded(thinker, lambda: encode(thinker, inputs))
    assert runs == {"audio": 2, "vision": 3}, "each clip, image and video ran in a padded pass"
    assert padded.keys() == stock.keys()
    for name, expected in stock.items():
        assert_close(padded[name], expected, name)
    assert all(torch.equal(again, stock[name]) for name, again in encode(thinker, inputs).items()), \
        "put_back() restores transformers' encoders"


def test_what_no_captured_size_holds_runs_in_transformers_encoders(thinker_inputs):
    """A clip shorter than one chunk (transformers pads it differently), or an image past the largest size."""
    thinker, inputs = thinker_inputs
    short = dict(inputs, feature_attention_mask=inputs["feature_attention_mask"].clone())
    short["feature_attention_mask"][:, 60:] = 0
    stock, served, runs = stock_then_padded(thinker, lambda: encode(thinker, short), vision_patches=(16,))
    assert runs == {"audio": 0, "vision": 0}
    for name, expected in stock.items():
        assert torch.equal(served[name], expected), name


def test_long_clips_attend_in_transformers_windows(thinker_inputs):
    """Clips past one attention window (8 s), one a whole number of chunks, beside a short one in one call."""
    thinker, _ = thinker_inputs
    frames = [1650, 800, 250]
    features = torch.randn((len(frames), 128, max(frames)), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(max(frames))[None] < torch.tensor(frames)[:, None]).long()

    def encode_clips():
        with torch.no_grad():
            return type(thinker).get_audio_features(thinker, features, mask).last_hidden_state

    stock, padded, runs = stock_then_padded(thinker, encode_clips)
    assert runs["audio"] == 3
    assert_close(padded, stock)


def test_precomputed_inputs_go_to_transformers_encoders(thinker_inputs):
    """transformers lets a caller hand the vision encoder its rope positions: they are served as given."""
    from transformers.vision_utils import get_vision_position_ids

    thinker, inputs = thinker_inputs
    grid = inputs["image_grid_thw"]
    positions = get_vision_position_ids(grid, thinker.visual.spatial_merge_size).flip(-1)  # not the usual ones

    def encode_images():
        with torch.no_grad():
            return type(thinker).get_image_features(thinker, inputs["pixel_values"], grid,
                                                    image_position_ids=positions).pooler_output

    stock, served, runs = stock_then_padded(thinker, encode_images)
    assert runs["vision"] == 0
    assert all(torch.equal(a, b) for a, b in zip(served, stock))


@pytest.mark.parametrize("encoder", ["audio", "vision"])
def test_a_padded_pass_traces_as_one_graph(thinker_inputs, encoder):
    """No host sync (no .item(), .tolist(), data-dependent shape) in a pass: a GPU can capture it whole."""
    thinker, _ = thinker_inputs
    graphs = EncoderGraphs(thinker)
    put_back = graphs.install()
    try:
        passes = graphs._audio_passes if encoder == "audio" else graphs._vision_passes
        with torch.no_grad():
            out = torch.compile(passes[min(passes)], fullgraph=True, backend="eager")()
    finally:
        put_back()
    tensors = [out] if encoder == "audio" else [out[0], out[1], *out[2]]
    assert all(torch.isfinite(tensor).all() for tensor in tensors)
