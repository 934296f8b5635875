"""Compare: the last user message answered twice, side by side, each side with its own engine, speaker and
seed. The conversation is left as it is.

``panel`` lays out the two sides (a ``CompareSide`` each) and the button; ``Compare.compare`` is the
handler that ``ui.chat.tab`` wires to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from backends.base import Backend, BackendInfo
from media import pcm16
from messages import Message
from ui.chat.session import ChatSession, make_request
from ui.i18n import t
from ui.messages import translator
from ui.reply import ReplyState
from turns.voice import default_speaker


@dataclass(frozen=True)
class CompareSide:
    """One column of Compare: the engine, speaker and seed it answers with, and the reply it got."""

    engine: gr.Dropdown
    speaker: gr.Dropdown
    seed: gr.Number
    text: gr.Textbox
    audio: gr.Audio


@dataclass(frozen=True)
class CompareParts:
    a: CompareSide
    b: CompareSide
    button: gr.Button


def engine_label(info: BackendInfo) -> str:
    """How Compare names an engine: its backend and model."""
    return f"{info.backend} · {info.model}"


def compare_engines(backend: Backend, compare_with: Backend | None) -> dict[str, Backend]:
    """Label → engine: the app's own, then the second one (app.py --compare-api-base) if there is one."""
    engines = {engine_label(backend.info): backend}
    if compare_with is not None:
        label = engine_label(compare_with.info)
        engines[label if label not in engines else f"{label} (2)"] = compare_with
    return engines


def panel(engines: dict[str, Backend]) -> CompareParts:
    """The Compare accordion: side A starts on the app's engine, side B on the last one."""
    labels = list(engines)
    infos = [engine.info for engine in engines.values()]
    with gr.Accordion(t("Compare replies"), open=False):
        gr.Markdown(t("Replays your last message twice, side by side, without changing the conversation."))
        with gr.Row():
            a = _side("A", infos, labels, labels[0])
            b = _side("B", infos, labels, labels[-1])
        button = gr.Button(t("Replay both"), size="sm")
    return CompareParts(a=a, b=b, button=button)


def _side(name: str, infos: list[BackendInfo], engine_labels: list[str], engine_choice: str) -> CompareSide:
    speakers = list(dict.fromkeys(speaker for info in infos for speaker in info.speakers))
    can_speak = any(info.can_speak for info in infos)
    with gr.Column():
        engine = gr.Dropdown(engine_labels, value=engine_choice, label=t(f"Engine {name}"),
                             visible=len(engine_labels) > 1, elem_id=f"compare-engine-{name.lower()}")
        with gr.Row():
            speaker = gr.Dropdown(speakers or [""], value=default_speaker(tuple(speakers)),
                                  label=t(f"Speaker {name}"), visible=can_speak)
            seed = gr.Number(7 if name == "A" else 8, label=t(f"Seed {name}"), precision=0)
        text = gr.Textbox(label=t(f"Reply {name}"), lines=3, elem_id=f"compare-{name.lower()}")
        audio = gr.Audio(label=t(f"Reply {name}"), visible=can_speak)
    return CompareSide(engine=engine, speaker=speaker, seed=seed, text=text, audio=audio)


class Compare:
    """The handler of Compare's button, over the engines that ``compare_engines`` names."""

    def __init__(self, engines: dict[str, Backend]):
        self.engines = engines
        self.default_engine = next(iter(engines))

    async def compare(self, chat_session: ChatSession, system_prompt, speak, temperature, top_p, top_k, max_tokens,
                      speaker_a, seed_a, speaker_b, seed_b, backend_a, backend_b, http_request: gr.Request):
        """The last user message answered twice, with each side's engine, speaker and seed; the chat is left
        as it is."""
        say = translator(http_request)
        users = [i for i, turn in enumerate(chat_session.turns) if turn.role == "user"]
        if not users:
            raise gr.Error(say(Message("chat.compare_needs_message")))
        history = ChatSession(turns=chat_session.turns[: users[-1] + 1], use_audio_in_video=chat_session.use_audio_in_video)
        outputs = []
        for side_engine, side_speaker, side_seed in ((backend_a, speaker_a, seed_a), (backend_b, speaker_b, seed_b)):
            engine = self.engines[side_engine or self.default_engine]  # Gradio refuses names not in the dropdown
            request = make_request(history, engine.info.can_speak, system_prompt, side_speaker, speak, temperature,
                                   top_p, top_k, max_tokens, side_seed)
            reply = ReplyState()
            async for event in engine.stream(request):
                reply.handle(event)
            audio = reply.audio()
            text = reply.text or "; ".join(say(e) for e in reply.errors)
            outputs += [text, (reply.sample_rate, pcm16(audio)) if audio is not None and audio.size else None]
        return outputs
