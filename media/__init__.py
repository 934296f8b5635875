"""All media decoding and validation of the app: every file is checked, decoded and sized here before
it reaches an engine. Callers import the package (``import media; media.load_audio(path)``).

- ``limits``: ``MediaLimits`` and ``MediaError``, what every file is held to and how a refusal reads.
- ``probe``: a file's kind by its extension, and what its container holds, before decoding.
- ``image`` (Pillow), ``audio`` (soundfile, PyAV for compressed formats), ``video`` (PyAV: frames spread
  evenly over the whole clip, plus the sound track). No decord, torchcodec or ffmpeg binary is needed.
- ``samples``: sample arrays between rates and formats (the live microphone in, speech out).

Frame counts and sizes follow qwen-omni-utils, what the official demo prepares media with, so the model
sees what it was shown there (tests/test_media_reference.py compares the two). Every failure is a
``MediaError`` naming the file and the problem, a ``messages.Message`` the UI shows in the user's language.
"""

from media.audio import INPUT_SAMPLE_RATE, load_audio
from media.image import load_image, smart_resize
from media.limits import DEFAULT_LIMITS, MediaError, MediaLimits
from media.probe import EXTENSIONS, MediaKind, kind_of
from media.samples import StreamResampler, pcm16, resample
from media.video import VideoClip, check_video, frame_indices, load_video, video_frame_size, video_sound_track

__all__ = [
    "DEFAULT_LIMITS", "EXTENSIONS", "INPUT_SAMPLE_RATE", "MediaError", "MediaKind", "MediaLimits", "StreamResampler",
    "VideoClip",
    "check_video", "frame_indices", "kind_of", "load_audio", "load_image", "load_video", "pcm16", "resample",
    "smart_resize", "video_frame_size", "video_sound_track",
]
