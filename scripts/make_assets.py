"""Make the example media in assets/examples/ (committed; run again to rebuild them).

    .venv/bin/python scripts/make_assets.py [folder]

Everything is generated here, so it is license-clean: speech by espeak-ng (English and
Mandarin), a chord synthesized with numpy, a test-pattern video with a tone by ffmpeg, a
picture drawn with Pillow.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
RATE = 16_000


def speech(path: Path, text: str, voice: str) -> None:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
    samples, rate = soundfile.read(raw, dtype="float32")
    raw.unlink()
    sys.path.insert(0, str(ROOT))
    from media import resample

    soundfile.write(path, resample(samples, rate, RATE), RATE, subtype="PCM_16")


def chord(path: Path) -> None:
    """C major, arpeggiated then held, with a soft attack: something to describe as music."""
    t = np.arange(int(4 * RATE)) / RATE
    notes = [261.63, 329.63, 392.0, 523.25]
    out = np.zeros_like(t)
    for i, freq in enumerate(notes):
        start = i * 0.4
        envelope = np.clip((t - start) * 20, 0, 1) * np.exp(-np.clip(t - start, 0, None) * 0.8)
        out += envelope * (np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(4 * np.pi * freq * t))
    soundfile.write(path, (0.2 * out / np.abs(out).max()).astype(np.float32), RATE, subtype="PCM_16")


def video(path: Path) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=192x144:rate=8:duration=3",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-crf", "32", "-c:a", "aac", "-b:a", "48k", "-shortest", str(path)], check=True, capture_output=True)


def picture(path: Path) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (245, 240, 230))
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 40, 130, 140), fill=(220, 60, 50))
    draw.rectangle((170, 50, 270, 150), fill=(40, 110, 200))
    draw.polygon([(90, 220), (150, 160), (210, 220)], fill=(250, 190, 40))
    draw.text((230, 200), "Qwen", fill=(20, 20, 20))
    image.save(path, optimize=True)


EVALUATION_SET = [
    # (id, prompt, media, reference answer)
    ("asr-en", "Transcribe this recording.", "question-en.wav",
     "What is the tallest mountain in the world, and how high is it?"),
    ("spoken-question", "Answer the question in the recording in one sentence.", "question-en.wav",
     "Mount Everest, about 8,849 metres high."),
    ("translate-zh", "Translate what is said into English.", "question-zh.wav",
     "The weather is nice today; let's go for a walk in the park."),
    ("music", "Describe this music: instruments, key and mood.", "chord.wav",
     "A C major chord, arpeggiated then held; calm."),
    ("image", "What shapes and colours are in this picture?", "shapes.png",
     "A red circle, a blue square and a yellow triangle, with the word Qwen."),
    ("video", "What sound plays while the pattern is on screen?", "pattern-with-tone.mp4", "A steady 440 Hz tone."),
    ("text", "Tell me a short joke.", "", ""),
]


def evaluation_sheet(path: Path) -> None:
    """The Evaluate tab's example set: prompts over the files above, with reference answers."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "prompt", "media", "reference"])
        writer.writerows(EVALUATION_SET)


def main(folder: Path = EXAMPLES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    speech(folder / "question-en.wav", "What is the tallest mountain in the world, and how high is it?", "en")
    speech(folder / "question-zh.wav", "今天天气很好，我们去公园散步吧。", "cmn")
    chord(folder / "chord.wav")
    video(folder / "pattern-with-tone.mp4")
    picture(folder / "shapes.png")
    evaluation_sheet(folder / "evaluation-set.csv")
    for file in sorted(folder.iterdir()):
        print(f"{file.name}: {file.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else EXAMPLES)
