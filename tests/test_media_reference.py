"""What the model is shown, compared with qwen-omni-utils (what the official demo prepares media with).

Frame counts, frame times, resized sizes, the rate handed to the processor and the processor's grids must
equal its output, or differ only where docs/media.md says why (the video budget). It reads
video files with decord, torchcodec or torchvision, none of which can read a file here; a stand-in
``decord`` made of PyAV gives its own ``_read_video_decord`` the frames, so its frame choice is its own.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import media
from backends.conversation import PromptInputs, run_processor
from tests import media_factory

# Wide pixel budgets, so the processor's grids show the sizes each pipeline chose, not its own caps.
IMAGE_PIXELS = {"shortest_edge": 4 * 32 * 32, "longest_edge": 16384 * 32 * 32}
VIDEO_PIXELS = {"shortest_edge": 4 * 32 * 32, "longest_edge": 768 * 32 * 32}


class _PyAVReader:
    """The part of ``decord.VideoReader`` qwen-omni-utils uses, backed by PyAV."""

    def __init__(self, path: str):
        import av

        self.path = path
        with av.open(path) as container:
            stream = container.streams.video[0]
            self.count, self.rate = stream.frames, float(stream.average_rate)

    def __len__(self) -> int:
        return self.count

    def get_avg_fps(self) -> float:
        return self.rate

    def get_batch(self, indices):
        import av

        with av.open(self.path) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
        return types.SimpleNamespace(asnumpy=lambda: np.stack([frames[i] for i in indices]))


@pytest.fixture(scope="module")
def reference():
    """qwen-omni-utils with its decord reader, over PyAV."""
    import qwen_omni_utils
    from qwen_omni_utils.v2_5 import vision_process

    saved = sys.modules.get("decord"), vision_process.FORCE_QWENVL_VIDEO_READER
    sys.modules["decord"] = types.SimpleNamespace(VideoReader=_PyAVReader)
    vision_process.FORCE_QWENVL_VIDEO_READER = "decord"
    vision_process.get_video_reader_backend.cache_clear()
    yield qwen_omni_utils
    if saved[0] is None:
        sys.modules.pop("decord", None)
    else:
        sys.modules["decord"] = saved[0]
    vision_process.FORCE_QWENVL_VIDEO_READER = saved[1]
    vision_process.get_video_reader_backend.cache_clear()


@pytest.fixture(scope="module")
def processor():
    """The tiny checkpoint's processor with wide vision budgets (its tokenizer, template and audio side)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor, Qwen3OmniMoeProcessor

    from backends.checkpoints.tiny_processor import build_processor

    tiny = build_processor()
    vision = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2}
    return Qwen3OmniMoeProcessor(
        Qwen2VLImageProcessor(size=IMAGE_PIXELS, **vision), Qwen2VLVideoProcessor(size=VIDEO_PIXELS, **vision),
        tiny.feature_extractor, tiny.tokenizer, chat_template=tiny.chat_template,
    )


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference-videos")
    return {
        "short": media_factory.test_video(folder / "short.mp4", seconds=2.0),
        "one_second": media_factory.test_video(folder / "one.mp4", seconds=1.0),
        "long": media_factory.test_video(folder / "long.mp4", seconds=100.0, size="96x72"),
        "longer": media_factory.test_video(folder / "longer.mp4", seconds=200.0, size="64x48", rate=4),
        "large": media_factory.test_video(folder / "large.mp4", seconds=60.0, size="640x480", rate=2),
    }


def _reference_video(reference, path, use_audio_in_video=False, **options):
    conversation = [{"role": "user", "content": [{"type": "video", "video": str(path), **options}]}]
    audios, _, videos, kwargs = reference.process_mm_info(
        conversation, use_audio_in_video=use_audio_in_video, return_video_kwargs=True, return_video_metadata=True)
    frames, metadata = videos[0]
    times = [i / metadata["fps"] for i in metadata["frames_indices"]]
    return frames, times, kwargs["fps"][0] if "fps" in kwargs else None, metadata, audios


def _video_prompt(frames: list, rates: list[float], use_audio_in_video=False, audios=()) -> PromptInputs:
    content = [{"type": "video", "video": f"v{i}.mp4"} for i in range(len(frames))]
    prompt = PromptInputs(messages=[{"role": "user", "content": content}], videos=list(frames), video_fps=list(rates),
                          audios=list(audios), use_audio_in_video=use_audio_in_video)
    return prompt


def _encode(processor, prompt: PromptInputs):
    text = processor.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
    return run_processor(processor, text, prompt, return_tensors="np")


@pytest.mark.parametrize("name", ["short", "long"])
def test_video_frames_times_sizes_and_grid_equal_qwen_omni_utils(name, videos, reference, processor):
    """A 100 s clip is seen whole: 200 frames from its first second to its last (not its first 64 s)."""
    clip = media.load_video(videos[name])
    frames, times, _, metadata, _ = _reference_video(reference, videos[name])
    sample_fps = len(frames) / metadata["total_num_frames"] * metadata["fps"]

    assert clip.frames.shape[0] == frames.shape[0]
    assert clip.times == pytest.approx(times, abs=1e-6)
    assert clip.frames.shape[1:3] == tuple(frames.shape[2:4])
    assert clip.fps == pytest.approx(sample_fps)
    ours = _encode(processor, _video_prompt([clip.frames], [clip.fps]))
    theirs = processor(text="<|vision_start|><|video_pad|><|vision_end|>", videos=[frames],
                       videos_kwargs={"fps": sample_fps, "do_sample_frames": False}, return_tensors="np")
    assert ours["video_grid_thw"].tolist() == theirs["video_grid_thw"].tolist()
    assert ours["video_second_per_grid"].tolist() == pytest.approx(theirs["video_second_per_grid"].tolist())
    if name == "long":
        assert clip.frames.shape[0] == 200 and clip.times[-1] > 99


def test_a_video_over_the_budget_is_spread_over_its_whole_length(videos, reference, processor):
    """qwen-omni-utils would take 400 frames of a 200 s clip (2 per second): we take 256, evenly over all 200 s,
    exactly what it takes when given our budget, and the vision tokens stay within it."""
    limits = media.DEFAULT_LIMITS
    clip = media.load_video(videos["longer"])
    default_frames, *_ = _reference_video(reference, videos["longer"])
    frames, times, _, _, _ = _reference_video(reference, videos["longer"], max_frames=limits.max_video_frames,
                                              total_pixels=limits.video_total_pixels)

    assert default_frames.shape[0] == 400 > clip.frames.shape[0] == limits.max_video_frames
    assert clip.times == pytest.approx(times, abs=1e-6)
    assert clip.frames.shape[1:3] == tuple(frames.shape[2:4])
    assert clip.times[0] == 0 and clip.times[-1] > 199
    steps = np.diff(clip.times)
    assert steps.max() - steps.min() <= 0.25 + 1e-6  # one source frame of rounding at 4 fps
    assert clip.fps == pytest.approx(256 / 200, rel=1e-3)
    # The model's tokens for it: the processor rounds each frame to 32-pixel tiles, one token per tile and pair.
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    height, width = smart_resize(*clip.frames.shape[1:3], factor=32, min_pixels=VIDEO_PIXELS["shortest_edge"],
                                 max_pixels=VIDEO_PIXELS["longest_edge"])
    assert clip.frames.shape[0] // 2 * (height // 32) * (width // 32) <= limits.video_total_pixels // 28**2


def test_large_frames_of_a_long_clip_share_the_budget(videos, reference):
    """A 60 s 640x480 clip: the same 120 frames at the same times as qwen-omni-utils, but each frame smaller than
    the 476x644 it would pick, as it sizes them when given our 16,384-tile budget."""
    limits = media.DEFAULT_LIMITS
    clip = media.load_video(videos["large"])
    default_frames, default_times, *_ = _reference_video(reference, videos["large"])
    frames, *_ = _reference_video(reference, videos["large"], total_pixels=limits.video_total_pixels)

    assert clip.frames.shape[0] == default_frames.shape[0] == 120
    assert clip.times == pytest.approx(default_times, abs=1e-6)
    assert clip.frames.shape[1:3] == tuple(frames.shape[2:4])
    assert clip.frames.shape[1] * clip.frames.shape[2] < default_frames.shape[2] * default_frames.shape[3]
    assert 60 * clip.frames.shape[1] * clip.frames.shape[2] / 28**2 <= limits.video_total_pixels / 28**2


def test_videos_of_different_rates_each_keep_their_own_time_positions(videos, processor):
    """Two videos in one prompt sampled at 2 and 4 frames per second: each is timed by its own rate, and its
    frames interleave with its sound as they would alone (the processor takes one rate per call)."""
    clips = [media.load_video(videos["short"]), media.load_video(videos["one_second"])]
    assert clips[0].fps == pytest.approx(2.0) and clips[1].fps == pytest.approx(4.0)
    both = _encode(processor, _video_prompt([c.frames for c in clips], [c.fps for c in clips], True,
                                            [c.audio for c in clips]))
    assert both["video_second_per_grid"].tolist() == pytest.approx([1.0, 0.5])
    start = processor.tokenizer.convert_tokens_to_ids(processor.vision_bos_token)
    ids = both["input_ids"][0].tolist()
    blocks = [ids[i:ids.index(processor.tokenizer.convert_tokens_to_ids(processor.vision_eos_token), i)]
              for i, token in enumerate(ids) if token == start]
    for clip, block in zip(clips, blocks):
        alone = _encode(processor, _video_prompt([clip.frames], [clip.fps], True, [clip.audio]))["input_ids"]
        alone = alone[0].tolist()
        assert block == alone[alone.index(start):alone.index(
            processor.tokenizer.convert_tokens_to_ids(processor.vision_eos_token))]


@pytest.mark.parametrize("size", [(224, 160), (20, 20), (5000, 3000), (1600, 1000)])
def test_image_size_and_grid_equal_qwen_omni_utils(size, tmp_path, reference, processor):
    """Sizes as qwen-omni-utils picks them: a 15 MP photo keeps 12.8 MP (not 4 MP), a tiny icon grows to 4 tiles."""
    path = media_factory.test_image(tmp_path / "image.png", size=size)
    ours = media.load_image(path)
    theirs = reference.fetch_image({"image": str(path)})
    assert ours.size == theirs.size
    grids = [processor(text="<|vision_start|><|image_pad|><|vision_end|>", images=[image],
                       return_tensors="np")["image_grid_thw"].tolist() for image in (ours, theirs)]
    assert grids[0] == grids[1]


def test_a_transparent_image_is_shown_on_white_like_qwen_omni_utils(tmp_path, reference):
    from PIL import Image

    path = tmp_path / "logo.png"
    pixels = np.zeros((64, 96, 4), np.uint8)
    pixels[16:48, 24:72] = (200, 30, 30, 255)  # an opaque red box on a transparent field
    Image.fromarray(pixels, "RGBA").save(path)
    ours, theirs = np.asarray(media.load_image(path)), np.asarray(reference.fetch_image({"image": str(path)}))
    assert ours.shape == theirs.shape
    assert ours[0, 0].tolist() == theirs[0, 0].tolist() == [255, 255, 255]
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_audio_equals_qwen_omni_utils(tmp_path, reference):
    path = media_factory.speech_wav(tmp_path / "speech.wav")
    ours = media.load_audio(path)
    theirs = reference.process_audio_info(
        [{"role": "user", "content": [{"type": "audio", "audio": str(path)}]}], use_audio_in_video=False)[0]
    assert ours.dtype == np.float32 and ours.ndim == 1
    assert abs(ours.size - theirs.size) <= 1
    n = min(ours.size, theirs.size)
    assert np.abs(ours[:n] - theirs[:n]).max() < 1e-3


def test_a_videos_sound_and_frames_cover_the_same_span(videos, reference):
    """The whole sound track (as qwen-omni-utils reads it with ffmpeg), and frames from its start to its end."""
    clip = media.load_video(videos["long"])
    *_, audios = _reference_video(reference, videos["long"], use_audio_in_video=True)
    seconds = clip.audio.size / media.INPUT_SAMPLE_RATE
    assert seconds == pytest.approx(audios[0].size / media.INPUT_SAMPLE_RATE, abs=0.05)
    assert seconds == pytest.approx(100.0, abs=0.1)
    assert clip.times[-1] == pytest.approx(seconds, abs=0.2)
