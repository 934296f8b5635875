"""The Live tab: talk to the model through the microphone (and webcam) and hear it answer.

The microphone streams short chunks (MIC_CHUNK_S) to this session's turn detector (silero-vad, see
``turns.detector``). When a turn ends, a hidden counter changes and the reply event, on
the model queue like every model-bound event, answers it: speech streams into an
autoplaying player, text into the transcript. Talking over a reply stops it (barge-in):
the engine is cancelled and the new turn is heard. Webcam frames (about one a second)
are kept for a few seconds; the latest goes with the turn when the camera is on.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from contextlib import aclosing
from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import soundfile

from backends.base import Backend
from media import INPUT_SAMPLE_RATE, StreamResampler, to_float_mono
from messages import Message
from turns import SpeechStarted, TurnDetector, TurnEnded, TurnSettings
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from ui import examples
from ui.i18n import t
from ui.messages import Say, to_english, translator
from ui.reply import ReplyState
from ui.reply_player import reply_player
from ui.scratch import session_folder
from ui.streaming import MODEL_QUEUE, EventPump, reply_updates, save_reply_audio
from ui.voice import VOICE_ASSISTANT_PROMPT, default_speaker

log = logging.getLogger(__name__)

FRAME_SECONDS = 4.0
"""Webcam frames older than this are dropped."""
FRAME_MAX_SIDE = 448
SESSION_TTL_S = 15 * 60
"""A session silent this long (tab closed, mic off) frees its audio, frames and files."""
POLL_S = 0.1
"""How often a playing reply checks for barge-in."""
MIC_CHUNK_S = 0.25
"""The microphone's chunk length: the end of a turn is noticed up to one chunk late."""
PHASES = {
    "idle": "⏸ Press **Record** on the microphone to start talking.",
    "listening": "🎙 **Listening…** talk, then pause.",
    "hearing": "🗣 **Hearing you…**",
    "thinking": "💭 **Thinking…**",
    "speaking": "🔊 **Speaking…** (talk to interrupt)",
}


class SessionLock:
    """A lock that a deep copy replaces with a fresh one (``gr.State`` deep-copies its initial value)."""

    def __init__(self):
        self._lock = threading.Lock()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)

    def __deepcopy__(self, memo):
        return SessionLock()


@dataclass
class LiveSession:
    """One browser session's live conversation (deep-copyable until first used)."""

    turns: list[Turn] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    phase: str = "idle"
    turn_id: int = 0
    pending: list[Turn] = field(default_factory=list)
    """Finished user turns not answered yet. ``hear`` adds to it on a worker thread while ``answer`` takes
    from it on the event loop: both go through ``_lock`` (``take_pending``)."""
    barge_in: bool = False
    frames: deque = field(default_factory=lambda: deque(maxlen=16))
    detector: TurnDetector | None = None
    resampler: StreamResampler | None = None
    silence_ms: int = 600
    folder: str | None = None
    _lock: SessionLock = field(default_factory=SessionLock, repr=False, compare=False)

    def take_pending(self) -> list[Turn]:
        """The finished turns not answered yet, taken out at once: a turn heard meanwhile waits for the next."""
        with self._lock:
            taken, self.pending = self.pending, []
        return taken

    def drop_pending(self) -> None:
        with self._lock:
            self.pending = []

    def hear(self, rate: int, data: np.ndarray, silence_ms: int) -> None:
        """One microphone chunk: run the turn detector, queue finished turns, flag barge-in. On a worker thread,
        while Stop (``stop_listening``, outside the queue) and the reply (``set_phase``, on the event loop) may
        change the session: all of it under the session's lock."""
        with self._lock:
            if self.detector is None or silence_ms != self.silence_ms:
                self.detector, self.silence_ms = TurnDetector(TurnSettings(silence_ms=int(silence_ms))), int(silence_ms)
            if self.resampler is None or self.resampler.rate != rate:
                self.resampler = StreamResampler(rate)
            if self.phase == "idle":
                self.phase = "listening"
            for event in self.detector.push(self.resampler(to_float_mono(data))):
                if isinstance(event, SpeechStarted) and self.phase in ("thinking", "speaking"):
                    self.barge_in = True  # the reply stops; what the user says now is the next turn
                elif isinstance(event, TurnEnded):
                    index = self.turn_id  # names the turn's files: unique, unlike a count of the turns
                    self.turn_id += 1
                    self.pending.append(self._user_turn(event.audio, index))

    def set_phase(self, phase: str, barge_in: bool | None = None) -> None:
        with self._lock:
            self.phase = phase
            if barge_in is not None:
                self.barge_in = barge_in

    def see(self, frame: np.ndarray) -> None:
        from PIL import Image

        image = Image.fromarray(frame)
        image.thumbnail((FRAME_MAX_SIDE, FRAME_MAX_SIDE))
        now = time.monotonic()
        self.frames.append((now, image))
        while self.frames and now - self.frames[0][0] > FRAME_SECONDS:
            self.frames.popleft()

    def _user_turn(self, audio: np.ndarray, index: int) -> Turn:
        folder = self._folder()
        audio_path = f"{folder}/turn-{index:03d}.wav"
        soundfile.write(audio_path, audio, INPUT_SAMPLE_RATE)
        parts: list = [MediaPart("audio", audio_path)]
        if self.frames:  # the camera is on: what it saw as the user finished
            image_path = f"{folder}/turn-{index:03d}.png"
            self.frames[-1][1].save(image_path)
            parts.insert(0, MediaPart("image", image_path))
        return Turn("user", tuple(parts))

    def _folder(self) -> str:
        if self.folder is None:
            self.folder = session_folder("omni-live-")
        return self.folder

    def indicator(self) -> str:
        phase, detector = self.phase, self.detector  # as they are now: Stop may clear them meanwhile
        if phase == "listening" and detector is not None and detector.in_speech:
            phase = "hearing"
        return t(PHASES[phase])

    def stop_listening(self) -> None:
        with self._lock:
            self.detector, self.resampler, self.phase = None, None, "idle"
            self.frames.clear()

    def close(self) -> None:
        """Free everything the session holds (Gradio calls this when the session expires)."""
        self.stop_listening()
        self.drop_pending()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def build(backend: Backend) -> None:
    info = backend.info
    live = gr.State(LiveSession(), time_to_live=SESSION_TTL_S, delete_callback=LiveSession.close)
    if not info.can_speak:
        gr.Markdown(t("ℹ️ This backend answers in text only: replies appear in the transcript, unspoken."))
    indicator = gr.Markdown(t(PHASES["idle"]), elem_id="live-state")
    gr.Markdown(t(examples.LIVE_TIPS))
    with gr.Row():
        with gr.Column(scale=1):
            mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label=t("Microphone"),
                           elem_id="live-mic")
            camera_on = gr.Checkbox(False, label=t("Camera on"))
            camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label=t("Webcam"), visible=False,
                              elem_id="live-cam")
        with gr.Column(scale=2):
            reply_audio = reply_player(t("Reply"), visible=info.can_speak, elem_id="live-reply")
            transcript = gr.Chatbot(label=t("Transcript"), height=380, elem_id="live-transcript")
            clear = gr.Button(t("🗑 New conversation"), size="sm")
    with gr.Accordion(t("Settings"), open=False):
        with gr.Row():
            speaker = gr.Dropdown(list(info.speakers) or [""], value=default_speaker(info.speakers), label=t("Speaker"),
                                  visible=info.can_speak)
            silence_ms = gr.Slider(200, 2000, 600, step=50, label=t("Pause that ends your turn (ms)"))
        system_prompt = gr.Textbox(VOICE_ASSISTANT_PROMPT, label=t("System prompt"), lines=3)
    turn = gr.Number(0, visible=False, elem_id="live-turn")  # changes when a turn is complete

    def hear(chunk, session: LiveSession, silence):
        if chunk is not None:
            rate, data = chunk
            session.hear(rate, data, int(silence))
        return session, session.indicator(), session.turn_id

    def see(frame, session: LiveSession, on: bool):
        if frame is not None and on:
            session.see(frame)
        return session

    def stopped(session: LiveSession):
        session.stop_listening()
        return session, session.indicator()

    async def respond(_turn, session: LiveSession, speaker_name, prompt, http_request: gr.Request):
        max_tokens = 64 if info.random_weights else 512
        # Closing this generator (a closed tab) closes answer's at once, so its finally stops the engine.
        async with aclosing(answer(backend, session, speaker_name, prompt, max_tokens,
                                   translator(http_request))) as updates:
            async for outputs in updates:
                yield outputs

    def new_conversation(session: LiveSession):
        session.turns.clear()
        session.messages.clear()
        session.drop_pending()
        return session, [], session.indicator()

    mic.stream(hear, [mic, live, silence_ms], [live, indicator, turn], stream_every=MIC_CHUNK_S,
               concurrency_limit=None, show_progress="hidden", api_visibility="private")
    mic.stop_recording(stopped, live, [live, indicator], api_visibility="private", queue=False)
    camera.stream(see, [camera, live, camera_on], live, stream_every=1.0, concurrency_limit=None,
                  show_progress="hidden", api_visibility="private")
    camera_on.change(lambda on: gr.Image(visible=on), camera_on, camera, api_visibility="private", queue=False)
    # always_last: a turn that ends while a reply runs (barge-in) is answered as soon as that reply stops.
    turn.change(respond, [turn, live, speaker, system_prompt], [transcript, indicator, reply_audio],
                concurrency_id=MODEL_QUEUE, concurrency_limit=info.max_concurrency, trigger_mode="always_last",
                show_progress="hidden", api_visibility="private")
    clear.click(new_conversation, live, [live, transcript, indicator], api_visibility="private", queue=False)


async def answer(backend: Backend, session: LiveSession, speaker: str | None, system_prompt: str,
                 max_new_tokens: int, say: Say = to_english):
    """Answer the waiting turn(s); yields (transcript, indicator, player update). Stops early on barge-in."""
    user_turns = session.take_pending()
    if not user_turns:
        return
    for user_turn in user_turns:
        session.turns.append(user_turn)
        session.messages.extend({"role": "user", "content": {"path": p.path}} for p in user_turn.media)
    session.set_phase("thinking", barge_in=False)
    request = ChatRequest(turns=tuple(session.turns), system_prompt=system_prompt or "", speaker=speaker or None,
                          sampling=Sampling(max_new_tokens=max_new_tokens), return_audio=backend.info.can_speak,
                          use_audio_in_video=False)
    reply, shown = ReplyState(), len(session.messages)
    events = None
    try:  # from the engine's start on: closing this generator at any yield must stop the engine
        events = EventPump(backend.stream(request))
        yield session.messages, session.indicator(), gr.skip()
        async for player in reply_updates(events, reply, poll_s=POLL_S):
            if session.barge_in:
                break
            if player is None:  # nothing new: only a chance to notice barge-in
                continue
            if reply.audio_chunks and session.phase != "speaking":
                session.set_phase("speaking")
            session.messages[shown:] = reply.messages(say=say)
            yield session.messages, session.indicator(), player
    finally:
        try:
            if events is not None:
                await events.aclose()  # barge-in, a closed tab or the end: the engine stops
        finally:
            interrupted = session.barge_in
            if reply.text:  # an empty reply (interrupted at once, failed) leaves nothing to remember
                session.turns.append(Turn.assistant(reply.text))
            audio_path = save_reply_audio(reply, session._folder())
            session.messages[shown:] = reply.messages(audio_path, say)
            if interrupted:
                session.messages.append({"role": "assistant", "content": say(Message("live.interrupted"))})
            with session._lock:
                session.phase = "listening" if session.detector is not None else "idle"
            session.barge_in = False
    yield session.messages, session.indicator(), gr.skip()
