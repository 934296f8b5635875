"""The Caption tab: detailed captions of audio (or a video's sound), one file or a whole batch.

Shared by ``app.py`` (a tab) and ``app_captioner.py`` (the whole page). With the Captioner
checkpoint the audio alone is the prompt; any other checkpoint is asked to describe it.
Audio longer than the model's window is captioned in consecutive segments, each headed by
its time range.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gradio as gr
import soundfile

from backends.base import Backend
from media import DEFAULT_LIMITS, EXTENSIONS, INPUT_SAMPLE_RATE, MediaError, kind_of, load_audio
from media.archives import ArchiveLimits, Archive, base_name, remove_folder
from backends.request import ChatRequest, MediaPart, Sampling, TextPart, Turn
from ui.streaming import MODEL_QUEUE
from ui import examples
from ui.i18n import t
from messages import Message, joined
from ui.messages import Say, translator
from ui.reply import ReplyState

CAPTION_INSTRUCTION = "Describe this audio in detail: speech (with its words), speakers, sounds, music and setting."
SEGMENT_SECONDS = 30.0
"""Longer audio is split: the Captioner is made for clips of up to about 30 s."""
CAPTION_INTRO = (f"Detailed captions of speech, sounds and music. A video's sound track is captioned; audio longer "
                 f"than {SEGMENT_SECONDS:.0f} s is captioned in {SEGMENT_SECONDS:.0f} s segments.")
RESULT_COLUMNS = ["file", "duration_s", "caption", "seconds_taken", "error"]
CAPTION_ARCHIVES = ArchiveLimits(max_unzipped_bytes=4 * 10**9)
"""A batch of recordings may be larger than a conversation."""
MEDIA_SUFFIXES = EXTENSIONS["audio"] | EXTENSIONS["video"]


@dataclass
class CaptionRow:
    file: str
    duration_s: float | None = None
    caption: str = ""
    seconds_taken: float | None = None
    error: str = ""


def build(backend: Backend) -> None:
    info = backend.info
    gr.Markdown(t(CAPTION_INTRO))
    if info.kind == "captioner":
        gr.Markdown(t("Made by the **Captioner** checkpoint: the audio alone is its prompt."))
    else:
        gr.Markdown(t("This model is not the Captioner, so it is asked:") + f" *{CAPTION_INSTRUCTION}* (`{info.model}`)")
    with gr.Row():
        temperature = gr.Slider(0.0, 2.0, 0.7 if info.kind != "captioner" else 0.6, step=0.05,
                                label=t("Temperature (0 = greedy)"))
        top_p = gr.Slider(0.05, 1.0, 0.95, step=0.05, label=t("Top-p"))
        top_k = gr.Slider(1, 200, 20, step=1, label=t("Top-k"))
        max_tokens = gr.Slider(16, 8192, 64 if info.random_weights else 1024, step=1, label=t("Max new tokens"))
    instruction = gr.Textbox("", label=t("Extra instruction (optional)"),
                             placeholder=t("e.g. Focus on the background sounds. / Answer in Chinese."))
    settings = [instruction, temperature, top_p, top_k, max_tokens]

    with gr.Tab(t("One file")):
        with gr.Row():
            source = gr.File(label=t("Audio or video file"), file_types=["audio", "video"], type="filepath",
                             elem_id="caption-file")
            recording = gr.Audio(sources=["microphone"], type="filepath", label=t("…or record"))
        with gr.Row():
            caption_button = gr.Button(t("Caption"), variant="primary")
            stop_button = gr.Button(t("⏹ Stop"), variant="stop")
        caption = gr.Textbox(label=t("Caption"), lines=10, buttons=["copy"], elem_id="caption-text")
        if examples.available():
            gr.Examples(examples.caption_examples(), inputs=source, label=t("Examples"))
    with gr.Tab(t("Batch")):
        batch_files = gr.File(label=t("Audio / video files, or a .zip of them"), file_count="multiple",
                              file_types=["audio", "video", ".zip"], type="filepath", elem_id="caption-batch")
        with gr.Row():
            batch_button = gr.Button(t("Caption all"), variant="primary")
            batch_stop = gr.Button(t("⏹ Stop"), variant="stop")
        batch_status = gr.Markdown("", label=t("Progress"), elem_id="caption-batch-status")
        table = gr.Dataframe(headers=RESULT_COLUMNS, label=t("Results"), wrap=True, interactive=False,
                             column_widths=["14%", "8%", "52%", "10%", "16%"], elem_id="caption-table")
        downloads = gr.File(label=t("Download (CSV, JSONL)"), file_count="multiple", interactive=False)

    async def caption_file(file: str | None, instruction: str, temperature: float, top_p: float, top_k: int,
                           max_tokens: int, http_request: gr.Request):
        """Caption one audio or video file; streams the caption as it is written."""
        say = translator(http_request)
        if not file:
            raise gr.Error(say(Message("caption.no_file")))
        sampling = Sampling(float(temperature), float(top_p), int(top_k), int(max_tokens))
        try:
            async with _segmented(file) as segments:
                async for text in _caption_stream(backend, file, segments, instruction, sampling):
                    yield text
        except MediaError as err:
            raise gr.Error(say(err)) from err

    async def caption_batch(files: list[str] | None, instruction: str, temperature: float, top_p: float,
                            top_k: int, max_tokens: int, http_request: gr.Request, progress=gr.Progress()):
        """Caption many files (or zips of them) one after another; rows fill in as they finish."""
        say = translator(http_request)
        # Unpacked archives and the result files live only as long as the batch: Gradio copies
        # each yielded result file into its own cache before the batch goes on.
        with tempfile.TemporaryDirectory(prefix="caption-batch-") as work:
            try:
                paths = await asyncio.to_thread(_expand, files or [], Path(work))
            except MediaError as err:
                raise gr.Error(say(Message("caption.cant_open_archive", {"problem": err.msg}))) from err
            if not paths:
                raise gr.Error(say(Message("caption.no_files")))
            sampling = Sampling(float(temperature), float(top_p), int(top_k), int(max_tokens))
            rows: list[CaptionRow] = []
            for index, (path, name) in enumerate(paths):
                progress((index, len(paths)), desc=say(Message("caption.captioning", {"file": name})))
                rows.append(await _caption_row(backend, path, name, instruction, sampling, say))
                done = Message("caption.files_done", {"done": len(rows), "total": len(paths)})
                yield _table(rows), _write_results(rows, Path(work)), say(done)

    def batch_stopped(http_request: gr.Request) -> str:
        return translator(http_request)(Message("caption.stopped"))

    # A recording becomes the file to caption, so /caption has one file input.
    recording.stop_recording(lambda recorded: recorded, recording, source, api_visibility="private", queue=False)
    caption_event = caption_button.click(caption_file, [source, *settings], caption, api_name="caption",
                                         concurrency_id=MODEL_QUEUE, concurrency_limit=info.max_concurrency)
    batch_event = batch_button.click(caption_batch, [batch_files, *settings], [table, downloads, batch_status],
                                     api_name="caption_batch", concurrency_id=MODEL_QUEUE,
                                     concurrency_limit=info.max_concurrency)
    stop_button.click(None, cancels=[caption_event], api_visibility="private")
    batch_stop.click(batch_stopped, None, batch_status, cancels=[batch_event], api_visibility="private", queue=False)


async def _caption_stream(backend: Backend, path: str, segments: list[tuple[float, float, str]],
                          instruction: str, sampling: Sampling):
    """Yields the caption so far; long audio goes segment by segment, each under its time range."""
    done = ""
    for start, end, segment_path in segments:
        header = f"[{_clock(start)}–{_clock(end)}]\n" if len(segments) > 1 else ""
        reply = ReplyState()
        async for event in backend.stream(_request(backend, segment_path, instruction, sampling)):
            reply.handle(event)
            yield done + header + reply.text
        if reply.errors:
            raise MediaError(path, joined(error.msg for error in reply.errors))
        done += header + reply.text.strip() + ("\n\n" if len(segments) > 1 else "")
    yield done.strip()


@contextlib.asynccontextmanager
async def _segmented(path: str):
    """The file's segments (see ``_segments``); the cut pieces are deleted when the caption is done."""
    with tempfile.TemporaryDirectory(prefix="caption-segments-") as folder:
        # Decoding runs in a thread so that it doesn't freeze other sessions.
        yield await asyncio.to_thread(_segments, path, Path(folder))


def _request(backend: Backend, audio_path: str, instruction: str, sampling: Sampling) -> ChatRequest:
    parts: tuple = (MediaPart("audio", audio_path),)
    text = instruction.strip() or ("" if backend.info.kind == "captioner" else CAPTION_INSTRUCTION)
    if text:
        parts += (TextPart(text),)
    return ChatRequest(turns=(Turn("user", parts),), sampling=sampling, return_audio=False)


def _segments(path: str, folder: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, file) pieces of at most SEGMENT_SECONDS, cut into ``folder``; the file itself when short."""
    kind_of(path)  # unsupported types are refused by name before decoding
    samples = load_audio(path)
    seconds = samples.size / INPUT_SAMPLE_RATE
    if seconds <= SEGMENT_SECONDS:
        return [(0.0, seconds, path)]
    step = int(SEGMENT_SECONDS * INPUT_SAMPLE_RATE)
    pieces = []
    for index, begin in enumerate(range(0, samples.size, step)):
        piece = folder / f"{Path(path).stem}-{index:03d}.wav"
        soundfile.write(piece, samples[begin : begin + step], INPUT_SAMPLE_RATE)
        pieces.append((begin / INPUT_SAMPLE_RATE, min(begin + step, samples.size) / INPUT_SAMPLE_RATE, str(piece)))
    return pieces


async def _caption_row(backend: Backend, path: str, name: str, instruction: str, sampling: Sampling,
                       say: Say) -> CaptionRow:
    row = CaptionRow(file=name)
    started = time.perf_counter()
    try:
        async with _segmented(path) as segments:
            row.duration_s = round(segments[-1][1], 2)  # the last segment ends where the audio does
            async for text in _caption_stream(backend, path, segments, instruction, sampling):
                row.caption = text
    except MediaError as err:  # one bad file is reported in its row; the batch goes on
        row.error = say(err.reason)
    row.seconds_taken = round(time.perf_counter() - started, 2)
    return row


def _expand(files: list[str], work: Path, limits=DEFAULT_LIMITS) -> list[tuple[str, str]]:
    """(path, name to show) for each file, every .zip replaced by the audio/video files inside it (unpacked
    into a folder of ``work``)."""
    paths: list[tuple[str, str]] = []
    for file in files:
        if not str(file).lower().endswith(".zip"):
            paths.append((str(file), Path(file).name))
            continue
        folder = Path(tempfile.mkdtemp(prefix="unzipped-", dir=work))
        try:
            with Archive(file, CAPTION_ARCHIVES) as archive:
                for index, member in enumerate(sorted(archive.members(), key=lambda m: m.filename)):
                    name = base_name(member.filename)
                    if name.startswith(".") or Path(name).suffix.lower() not in MEDIA_SUFFIXES:
                        continue  # hidden files (e.g. __MACOSX/._x) and what isn't media
                    # Only the base name is used, so no entry can leave the folder; the index keeps
                    # same-named files from different folders apart.
                    target = archive.extract(member, folder / f"{index:04d}-{name}", int(limits.max_file_mb * 1e6))
                    paths.append((str(target), member.filename))
        except BaseException:
            remove_folder(folder)
            raise
    return paths


def _table(rows: list[CaptionRow]) -> list[list]:
    return [[getattr(row, column) for column in RESULT_COLUMNS] for row in rows]


def _write_results(rows: list[CaptionRow], folder: Path) -> list[str]:
    """captions.csv and captions.jsonl with the same rows, rewritten after every file."""
    csv_path, jsonl_path = folder / "captions.csv", folder / "captions.jsonl"
    with csv_path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    jsonl_path.write_text("".join(json.dumps(asdict(row), ensure_ascii=False) + "\n" for row in rows),
                          encoding="utf-8")
    return [str(csv_path), str(jsonl_path)]


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"
