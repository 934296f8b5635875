"""Clickable examples built from assets/examples/ (made by scripts/make_assets.py): Qwen3-Omni cookbook tasks."""

from __future__ import annotations

from pathlib import Path

from messages import Message

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"

CHAT = [
    # (label, prompt, files): the label is shown in the user's language, the prompt as it is
    (Message("example.speech_recognition"), "Transcribe this recording.", ["question-en.wav"]),
    (Message("example.translation"), "Translate what is said into English.", ["question-zh.wav"]),
    (Message("example.music"), "Describe this music: instruments, key and mood.", ["chord.wav"]),
    (Message("example.image_question"), "What shapes and colours are in this picture?", ["shapes.png"]),
    (Message("example.video_description"), "Describe what happens in this video.", ["pattern-with-tone.mp4"]),
    (Message("example.audio_visual_question"), "What sound plays while the pattern is on screen?",
     ["pattern-with-tone.mp4"]),
]
CAPTION = ["chord.wav", "question-en.wav", "question-zh.wav", "pattern-with-tone.mp4"]
LIVE_TIPS = ("Try: *“What do you see?”* with the camera on · *“Tell me a short joke.”* · ask in Chinese: "
             "*“今天天气怎么样？”* · talk over the answer to interrupt it.")


def chat_examples() -> list[dict]:
    return [{"text": prompt, "files": [str(EXAMPLES_DIR / name) for name in files]} for _, prompt, files in CHAT]


def chat_labels() -> list[Message]:
    return [label for label, _, _ in CHAT]


def caption_examples() -> list[list[str]]:
    return [[str(EXAMPLES_DIR / name)] for name in CAPTION]


def available() -> bool:
    """False in a checkout without the assets (the tabs then show no examples)."""
    return all((EXAMPLES_DIR / name).is_file() for _, _, files in CHAT for name in files)


EVALUATION_SET = "evaluation-set.csv"


def evaluation_files() -> list[str]:
    """The Evaluate tab's example set: its sheet and every file it names."""
    import csv

    sheet = EXAMPLES_DIR / EVALUATION_SET
    with sheet.open(encoding="utf-8") as rows:
        names = sorted({row["media"] for row in csv.DictReader(rows) if row["media"]})
    return [str(sheet), *(str(EXAMPLES_DIR / name) for name in names)]
