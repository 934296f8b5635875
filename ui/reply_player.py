"""The streaming player for spoken replies: Gradio's ``gr.Audio`` with its AAC encoders started ahead.

In a module of its own because Gradio writes a ``.pyi`` stub next to any module that subclasses one of
its components (git ignores it). It overrides a private method of Gradio's, so it is used only on the Gradio
versions it was written for (``ui.gradio_fixes.GRADIO_VERSIONS``); on others the reply plays from a stock
``gr.Audio``.
"""

from __future__ import annotations

import logging
import threading
import time

import gradio as gr

from backends.events import OUTPUT_SAMPLE_RATE
from ui.gradio_fixes import written_for_this_gradio
from ui.streaming import EMPTY_AUDIO

try:
    import gradio.components.audio as gradio_audio
    from gradio.audio_stream_encoder import AacStreamEncoder, decode_to_pcm, segment_from_frames
except ImportError:  # another Gradio: reply_player() gives the stock player and says why
    gradio_audio = AacStreamEncoder = decode_to_pcm = segment_from_frames = None

FIRST_SEGMENT_WAIT_S = 0.025
"""How long a stream's first chunk waits for the encoder to return most of it in the same update."""

log = logging.getLogger(__name__)


class EncoderPool:
    """Gradio's AAC encoders (one ffmpeg process per streamed reply), started before they are needed.

    Starting one costs 60 ms on idle cores and more on busy ones, and Gradio waits at most 0.1 s
    for it: a slow start pushed a reply's first audio to a later update. A started encoder that
    has not been fed yet costs a sleeping process.
    """

    def __init__(self, size: int = 2):
        self.size = size
        self._idle: dict[tuple[int, int], list[AacStreamEncoder]] = {}
        self._starting: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()

    def prefill(self, sample_rate: int, channels: int) -> None:
        """Start encoders for this format until ``size`` wait idle (in the background)."""
        threading.Thread(target=self._fill, args=(sample_rate, channels), daemon=True).start()

    def _fill(self, sample_rate: int, channels: int) -> None:
        key = (sample_rate, channels)
        while True:
            with self._lock:  # counts encoders still starting, so fills running at once never overshoot
                if len(self._idle.setdefault(key, [])) + self._starting.get(key, 0) >= self.size:
                    return
                self._starting[key] = self._starting.get(key, 0) + 1
            try:
                encoder = AacStreamEncoder(sample_rate, channels)
            except Exception:  # no ffmpeg: Gradio says so when the first reply speaks
                log.debug("audio encoder could not be started ahead", exc_info=True)
                encoder = None
            with self._lock:
                self._starting[key] -= 1
                if encoder is None:
                    return
                self._idle[key].append(encoder)

    def take(self, sample_rate: int, channels: int) -> AacStreamEncoder:
        """A started encoder for this format (a new one if none waits), and another started in its place."""
        with self._lock:
            idle = self._idle.get((sample_rate, channels), [])
            # One that died while idle (killed, out of memory) would fail the stream: skip it.
            while idle and idle[-1].process.poll() is not None:
                idle.pop().close()
            encoder = idle.pop() if idle else None
        self.prefill(sample_rate, channels)
        return encoder or AacStreamEncoder(sample_rate, channels)


ENCODERS = EncoderPool()


class ReplyAudio(gr.Audio):
    """The streaming reply player (made by ``reply_player``): ``gr.Audio`` whose stream takes an already
    started encoder.

    Overrides Gradio 6's private ``_encode_chunk`` (used only on the versions in ``GRADIO_VERSIONS``;
    tests/test_streaming_audio.py fails if it changes): the same steps, with the encoder from ENCODERS, and
    the first chunk waits up to FIRST_SEGMENT_WAIT_S for most of its frames instead of returning the first
    one alone. No ``__init__`` of its own: Gradio reads a component's props from its signature.
    """

    is_template = True  # the browser draws it as a plain Audio

    def _encode_chunk(self, output_id: str, data: bytes):
        slot = gradio_audio._stream_encoders.get(output_id)
        if slot is None:  # ended (disconnect, cancel) while this chunk was on its way
            return None
        encoder = slot.encoder
        first = encoder is None
        nudge = data == EMPTY_AUDIO  # no audio: Gradio would hand a WAV of no frames to ffmpeg, a process a nudge
        if first:
            if nudge:
                return None  # the next chunk starts the stream
            sample_rate, channels, pcm = decode_to_pcm(data)
            encoder = ENCODERS.take(sample_rate, channels)
            if not slot.attach(encoder):
                encoder.close()
                return None
        else:
            pcm = b"" if nudge else decode_to_pcm(data, encoder.sample_rate, encoder.channels)[2]
        encoder.feed(pcm)
        frames = encoder.take()
        if first and frames:
            # AAC holds back about two frames; anything short of that is on its way.
            expected = len(pcm) // (2 * encoder.channels) * encoder.output_rate // encoder.sample_rate // 1024 - 2
            deadline = time.monotonic() + FIRST_SEGMENT_WAIT_S
            while len(frames) < expected and (left := deadline - time.monotonic()) > 0:
                frames += encoder.take(timeout=min(left, 0.005))
        return segment_from_frames(encoder, frames)


def reply_player(label: str, **kwargs) -> gr.Audio:
    """An autoplaying streaming player for spoken replies, with encoders started for it (a stock
    ``gr.Audio`` on a Gradio that ``ReplyAudio`` wasn't written for)."""
    settings = dict(label=label, streaming=True, autoplay=True, interactive=False, **kwargs)
    if not written_for_this_gradio("the reply player's early-started audio encoders (ui/reply_player.py)",
                                   "a reply's first audio may come one update later"):
        return gr.Audio(**settings)
    ENCODERS.prefill(OUTPUT_SAMPLE_RATE, 1)
    return ReplyAudio(**settings)
