"""One upload must not take the server's memory: files past the limits are refused by name before
(or while) decoding, never after holding all of them.

Memory is measured with tracemalloc, which sees every NumPy array the decoders hand back; the
bounds are far below what decoding the whole file takes (hundreds of MB to GB).
"""

from __future__ import annotations

import contextlib
import subprocess
import tracemalloc

import numpy as np
import pytest
import soundfile

import media
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from tests import media_factory
from tests.streams import collect, errors_of, finish_of
from ui import caption

MB = 2**20


@contextlib.contextmanager
def peak_growth():
    """Yields a list that holds, after the block, the peak bytes allocated within it."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result: list[int] = []
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1] - base)
        tracemalloc.stop()


@pytest.fixture(scope="module")
def hour_of_opus(tmp_path_factory):
    """An hour of Opus (1.4 MB): decoded whole it is 230 MB at 16 kHz, 690 MB at its own 48 kHz."""
    return media_factory.long_opus(tmp_path_factory.mktemp("long") / "an-hour.ogg", 3600)


@pytest.fixture(scope="module")
def one_hertz_wav(tmp_path_factory):
    """16 KB whose header says 1 Hz: resampled to 16 kHz it would be 512 MB."""
    path = tmp_path_factory.mktemp("rate") / "one-hertz.wav"
    soundfile.write(path, np.zeros(8000, np.int16), 1)
    return path


def test_an_hour_of_opus_is_refused_by_name_from_its_header_without_decoding_it(hour_of_opus):
    with peak_growth() as peak, pytest.raises(media.MediaError) as refused:
        media.load_audio(hour_of_opus)
    assert str(refused.value) == "an-hour.ogg: audio is 3600 s long, the limit is 600 s"
    assert peak[0] < 8 * MB, f"{peak[0] / MB:.0f} MB allocated to refuse it"


def test_audio_that_never_says_its_length_is_decoded_only_up_to_the_limit(tmp_path):
    live = media_factory.long_opus(tmp_path / "live-recording.webm", 3600, tell_length=False)
    assert media.kind_of(live) == "audio"
    with peak_growth() as peak, pytest.raises(media.MediaError) as refused:
        media.load_audio(live)
    assert str(refused.value) == "live-recording.webm: audio is longer than the 600 s limit"
    # The 600 s it may hold at 16 kHz are 37 MB; the whole hour would be 230 MB (twice that to join it).
    assert peak[0] < 80 * MB, f"{peak[0] / MB:.0f} MB allocated to refuse it"


def test_a_tiny_wav_whose_header_says_1_hz_is_refused_before_resampling(one_hertz_wav):
    with peak_growth() as peak, pytest.raises(media.MediaError) as refused:
        media.load_audio(one_hertz_wav)
    assert str(refused.value) == "one-hertz.wav: the audio's sample rate is 1 Hz; it takes 1000 to 768000 Hz"
    assert peak[0] < 8 * MB, f"{peak[0] / MB:.0f} MB allocated to refuse it"


def test_the_caption_tab_refuses_them_by_name_with_memory_flat(hour_of_opus, one_hertz_wav, tmp_path):
    for path in (hour_of_opus, one_hertz_wav):
        with peak_growth() as peak, pytest.raises(media.MediaError) as refused:
            caption._segments(str(path), tmp_path)
        assert str(refused.value).startswith(f"{path.name}: ")
        assert peak[0] < 8 * MB, (path.name, f"{peak[0] / MB:.0f} MB")


def test_audio_within_the_limits_still_decodes_whole_and_the_same_in_pieces(tmp_path):
    """Reading block by block must not change what the model hears: a 48 kHz stereo WAV of 70 s
    (more than one block) gives the 16 kHz mono that one-shot resampling gives."""
    t = np.arange(70 * 48000) / 48000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1).astype(np.float32) * 0.5
    path = tmp_path / "tones.wav"
    soundfile.write(path, stereo, 48000, subtype="FLOAT")
    samples = media.load_audio(path)
    expected = media.resample(stereo.mean(axis=1), 48000, media.INPUT_SAMPLE_RATE)
    assert samples.shape == expected.shape
    assert np.abs(samples - expected).max() < 1e-3


def test_the_chat_refuses_a_long_opus_file_by_name_with_memory_flat(instruct_backend, hour_of_opus):
    request = ChatRequest(turns=(Turn.user(MediaPart("audio", str(hour_of_opus)), "What?"),),
                          sampling=Sampling(temperature=0, max_new_tokens=4), return_audio=False)
    with peak_growth() as peak:
        events = collect(instruct_backend, request)
    (error,) = errors_of(events)
    assert error.stage == "input" and error.message == "an-hour.ogg: audio is 3600 s long, the limit is 600 s"
    assert finish_of(events) == "error"
    assert peak[0] < 32 * MB, f"{peak[0] / MB:.0f} MB allocated to refuse it"


def test_an_mp4_holding_only_sound_is_heard_as_audio(tmp_path):
    song = media_factory.sound_only_mp4(tmp_path / "song.mp4", seconds=2.0)
    assert media.kind_of(song) == "audio"
    assert media.load_audio(song).size == pytest.approx(2.0 * media.INPUT_SAMPLE_RATE, rel=0.05)
    assert media.kind_of(media_factory.test_video(tmp_path / "clip.mp4")) == "video"


@pytest.mark.parametrize("size", [(8000, 20), (20, 8000), (4_000_000, 1)])
def test_an_image_too_elongated_for_the_processor_is_padded_within_the_pixel_budget(tmp_path, size):
    from PIL import Image

    path = tmp_path / "strip.png"
    Image.new("RGB", size, (200, 30, 30)).save(path)
    image = media.load_image(path)
    assert max(image.size) / min(image.size) <= 200  # the processor refuses more
    assert image.width * image.height <= media.DEFAULT_LIMITS.max_image_pixels * 1.01
    # Padded, not cropped: the picture runs from end to end across the middle.
    pixels = np.asarray(image) if image.width > image.height else np.asarray(image).transpose(1, 0, 2)
    red = pixels[..., 0].astype(int) - pixels[..., 1] > 100  # red, give or take the resize's blending
    assert red[:, 0].any() and red[:, pixels.shape[1] // 2].any() and red[:, -1].any()
    assert not red[0].any() and not red[-1].any(), "the margins are white"


def test_a_huge_video_is_taken_in_at_the_frame_budget_with_memory_bounded(tmp_path):
    """34 s of 3840×2160 at 2 frames/s kept at full size would be 68 frames, 1.7 GB; frames are shrunk to the
    video's pixel budget as they are decoded, so only the small ones are ever held."""
    video = tmp_path / "uhd.mp4"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:size=3840x2160:rate=1:d=34",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(video)],
                   check=True, capture_output=True)
    with peak_growth() as peak:
        clip = media.load_video(video)
    frames, height, width, _ = clip.frames.shape
    assert frames == 34 and height * width * frames / 2 <= media.DEFAULT_LIMITS.video_total_pixels  # per frame pair
    assert peak[0] < 64 * MB, f"{peak[0] / MB:.0f} MB allocated to take it in"


def test_a_wav_of_nans_is_refused_by_name_before_generation(instruct_backend, tmp_path):
    path = tmp_path / "broken-float.wav"
    soundfile.write(path, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    request = ChatRequest(turns=(Turn.user(MediaPart("audio", str(path)), "What?"),),
                          sampling=Sampling(temperature=1.0, max_new_tokens=4), return_audio=False)
    (error,) = errors_of(collect(instruct_backend, request))
    assert error.stage == "input"
    assert error.message == "broken-float.wav: the audio holds invalid samples (NaN or infinity)"
