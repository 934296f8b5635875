"""The Live tab: talk to the model through the microphone (and webcam) and hear it answer.

The page does the talking itself: its script (``realtime.js``, with ``view.js``, ``audio.js`` and the worklets in
``worklets.js``) opens the app's own ``/v1/realtime`` WebSocket, the OpenAI Realtime protocol that ``api/realtime``
serves on the same port, and streams the microphone to it in 32 ms frames. The server's VAD ends the turn and
answers at once; the reply's PCM plays from an AudioWorklet as it arrives, and talking over it silences it and
cancels it. Nothing here runs per turn on the server's side of Gradio: this module only builds the page, and the
Settings reach the script through client-side events (``session.update`` on the socket).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from backends.base import Backend
from backends.events import OUTPUT_SAMPLE_RATE
from media import INPUT_SAMPLE_RATE
from ui import examples
from ui.i18n import LIVE_PAGE_TEXTS, t
from turns.voice import VOICE_ASSISTANT_PROMPT, default_speaker

HERE = Path(__file__).parent
SCRIPTS = ("audio.js", "view.js", "realtime.js")
"""Loaded in this order into one ``js_on_load``; ``realtime.js`` uses what the others define."""
DEFAULT_PAUSE_MS = 600
MIC_FRAME_MS = 32
"""The microphone goes up in frames this long: one silero-vad window at 16 kHz (512 samples), so the server's turn
detector has a whole window to read as each frame lands, and a turn's end is heard at most one frame late."""

PAGE = """
<div class="live-page">
  <div class="live-controls">
    <button class="live-start" type="button"></button>
    <label class="live-camera"><input type="checkbox"> <span data-text="camera"></span></label>
    <button class="live-new" type="button" data-text="new"></button>
  </div>
  <div id="live-state" class="live-state" role="status"></div>
  <div id="live-error" class="live-error" role="alert" hidden></div>
  <div class="live-body">
    <video class="live-video" muted playsinline hidden></video>
    <div id="live-transcript" class="live-transcript" aria-live="polite"></div>
  </div>
</div>
"""

CSS = """
.live-controls { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin-bottom: 8px; }
.live-controls button { border-radius: var(--button-large-radius); padding: 8px 18px; font-weight: 600;
  border: 1px solid var(--button-secondary-border-color); background: var(--button-secondary-background-fill);
  color: var(--button-secondary-text-color); cursor: pointer; }
.live-controls .live-start { background: var(--button-primary-background-fill);
  color: var(--button-primary-text-color); border-color: var(--button-primary-border-color); min-width: 180px; }
.live-controls .live-start.live-running { background: var(--button-cancel-background-fill, #ef4444);
  color: var(--button-cancel-text-color, white); }
.live-controls .live-new { font-weight: normal; padding: 4px 12px; font-size: var(--text-sm); }
.live-camera { display: flex; gap: 6px; align-items: center; color: var(--body-text-color); }
.live-state { font-size: 1.05em; font-weight: 600; padding: 6px 0; color: var(--body-text-color); }
.live-error { padding: 8px 12px; border-radius: var(--radius-md); background: var(--error-background-fill, #fee2e2);
  color: var(--error-text-color, #b91c1c); border: 1px solid var(--error-border-color, #fca5a5); margin: 4px 0; }
.live-error[hidden], .live-video[hidden] { display: none; }
.live-body { display: flex; gap: 12px; align-items: flex-start; }
.live-video { width: 240px; border-radius: var(--radius-lg); background: black; flex: none; }
.live-transcript { flex: 1; height: 460px; overflow-y: auto; display: flex; flex-direction: column; gap: 8px;
  padding: 10px; border: 1px solid var(--block-border-color); border-radius: var(--radius-lg);
  background: var(--background-fill-secondary); }
.live-msg { max-width: 80%; padding: 8px 12px; border-radius: var(--radius-lg); color: var(--body-text-color);
  white-space: pre-wrap; overflow-wrap: anywhere; }
.live-user { align-self: flex-end; background: var(--color-accent-soft); }
.live-assistant { align-self: flex-start; background: var(--background-fill-primary);
  border: 1px solid var(--border-color-primary); }
.live-msg img { display: block; max-width: 112px; border-radius: var(--radius-md); margin-bottom: 6px; }
.live-note { display: block; opacity: 0.7; margin-top: 4px; }
"""

SETTINGS_JS = """(voice, instructions, silence_ms) => {
  if (window.qwenLive) window.qwenLive.configure({ voice, instructions, silence_ms });
}"""
"""The Settings go to the page's script, not to the server: the script sends them as ``session.update``."""


def page_script() -> str:
    """The page's JavaScript as one ``js_on_load`` body (Gradio runs it with ``element`` and ``props``)."""
    return "\n".join((HERE / name).read_text(encoding="utf-8") for name in SCRIPTS) + "\nqwenLive(element, props);\n"


def build(backend: Backend) -> None:
    info = backend.info
    speaker_name = default_speaker(info.speakers)
    if not info.can_speak:
        gr.Markdown(t("ℹ️ This backend answers in text only: replies appear in the transcript, unspoken."))
    gr.Markdown(t(examples.LIVE_TIPS))
    gr.HTML(
        html_template=PAGE, css_template=CSS, js_on_load=page_script(), elem_id="live", apply_default_css=True,
        # props, read by the script: its texts, the worklets' source and the session's starting settings
        texts={"en": {key: en for key, (en, _) in LIVE_PAGE_TEXTS.items()},
               "zh": {key: zh for key, (_, zh) in LIVE_PAGE_TEXTS.items()}},
        worklets=(HERE / "worklets.js").read_text(encoding="utf-8"),
        input_rate=INPUT_SAMPLE_RATE, output_rate=OUTPUT_SAMPLE_RATE, frame_ms=MIC_FRAME_MS,
        settings={"speaks": info.can_speak, "voice": speaker_name or None, "instructions": VOICE_ASSISTANT_PROMPT,
                  "silence_ms": DEFAULT_PAUSE_MS},
    )
    with gr.Accordion(t("Settings"), open=False, elem_id="live-settings"):
        with gr.Row():
            speaker = gr.Dropdown(list(info.speakers) or [""], value=speaker_name, label=t("Speaker"),
                                  visible=info.can_speak, elem_id="live-speaker")
            silence_ms = gr.Slider(200, 2000, DEFAULT_PAUSE_MS, step=50, label=t("Pause that ends your turn (ms)"),
                                   elem_id="live-pause")
        system_prompt = gr.Textbox(VOICE_ASSISTANT_PROMPT, label=t("System prompt"), lines=3, elem_id="live-prompt")
    gr.on([speaker.change, silence_ms.change, system_prompt.change], None, [speaker, system_prompt, silence_ms],
          js=SETTINGS_JS, api_visibility="private", queue=False)
