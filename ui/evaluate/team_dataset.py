"""A team study as a folder that ``datasets.load_dataset`` reads: Parquet, with the speech in an audio column.

``<study-name>-dataset/`` holds

- ``answers.parquet``: the rows of the zip's ``answers.jsonl`` (one per answer: prompt, media names and SHA-256,
  set-up and every setting, model, backend, text, timings), the speech as ``audio``, a ``datasets.Audio`` column
  (null for an answer without speech);
- ``votes.parquet``: the rows of ``votes.jsonl`` (one per vote), ``voted_at`` as a UTC timestamp;
- ``README.md``, a dataset card whose YAML header declares the two as configs, so ``load_dataset(folder, "votes")``
  reads one, and the Hub shows both once the folder is pushed there.

Settings are JSON text: set-ups set different keys, and one struct column would give each row every key.

A vote holds its answers' texts and speech SHA-256 but not their speech: an answer is judged in up to (set-ups − 1)
× raters votes, and copying its speech into each would store it that many times. ``prompt_id`` with ``setup_a`` or
``setup_b`` finds it in ``answers`` (``prompt_id`` and ``setup``; both are unique within a study).

Written with pyarrow alone, since the app doesn't install ``datasets``. Plain Parquet would load the speech as a
struct of bytes and a path; ``datasets`` types a column ``Audio`` when the schema's metadata says so, under the key
``huggingface`` as ``{"info": {"features": …}}`` (``Features.arrow_schema`` writes it and
``Features.from_arrow_schema`` reads it, taking a feature only where its Arrow type is exactly the column's), so
that is what is written here, for every column.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from studies import Study

AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
"""``datasets.Audio``'s Arrow type: the WAV file's bytes and its name."""
TIME = pa.timestamp("ms", tz="UTC")
"""Milliseconds: Parquet has no seconds, and a column read back as another type than its feature's loses the feature."""
TYPES = {"vote": pa.int64(), "voted_at": TIME, "media": pa.list_(pa.string()),
         "media_sha256": pa.list_(pa.string()), "audio": AUDIO, "first_token_s": pa.float64(),
         "first_audio_s": pa.float64(), "tokens_per_s": pa.float64()}
"""The columns that aren't text."""
DTYPES = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64",
          TIME: "timestamp[ms, tz=UTC]"}
"""``datasets.Value``'s names for those Arrow types (pyarrow calls float64 "double")."""
ROWS_PER_GROUP = 100
"""Answers read and written at a time: a big study's speech never has to fit in memory at once (``datasets`` writes
audio in row groups of 100 as well)."""


def write_dataset(folder: Path, study: Study, answers: list[dict], answer_columns: list[str],
                  speech: dict[str, Path], votes: list[dict], vote_columns: list[str]) -> list[Path]:
    """The dataset folder: ``answers`` and ``votes`` are the export's records (``ui.evaluate.team_export``), whose
    ``audio`` names an answer's speech in the zip; ``speech`` maps those names to the WAV files. A table without
    rows is left out, and so is its config: ``datasets`` refuses to load an empty split. Returns the files
    written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, records, columns in (("answers", answers, answer_columns), ("votes", votes, vote_columns)):
        if records:
            written.append(folder / f"{name}.parquet")
            _write_parquet(written[-1], columns, records, speech)
    (readme := folder / "README.md").write_text(card(study, [path.stem for path in written], len(answers),
                                                     len(votes), len({v["rater"] for v in votes})), encoding="utf-8")
    return [*written, readme]


def schema(columns: list[str]) -> pa.Schema:
    """The Arrow schema, with the features ``datasets`` reads from its metadata."""
    types = {name: TYPES.get(name, pa.string()) for name in columns}
    features = {name: _feature(kind) for name, kind in types.items()}
    return pa.schema(list(types.items()), metadata={"huggingface": json.dumps({"info": {"features": features}})})


def _feature(kind: pa.DataType) -> dict:
    """A column's feature as ``datasets.Features.to_dict`` writes it."""
    if kind == AUDIO:
        return {"_type": "Audio"}  # decoded at the file's own rate (24 kHz)
    if pa.types.is_list(kind):
        return {"feature": _feature(kind.value_type), "_type": "List"}
    return {"dtype": DTYPES[kind], "_type": "Value"}


def _write_parquet(path: Path, columns: list[str], records: list[dict], speech: dict[str, Path]) -> None:
    layout = schema(columns)
    with pq.ParquetWriter(path, layout) as out:
        for start in range(0, len(records), ROWS_PER_GROUP):
            rows = [{name: _value(name, record.get(name), speech) for name in columns}
                    for record in records[start:start + ROWS_PER_GROUP]]
            out.write_table(pa.Table.from_pylist(rows, schema=layout), row_group_size=ROWS_PER_GROUP)


def _value(name: str, value, speech: dict[str, Path]):
    if name == "audio":
        file = speech.get(value) if value else None
        return {"bytes": file.read_bytes(), "path": Path(value).name} if file and file.is_file() else None
    if name == "voted_at" and value:
        return datetime.fromisoformat(value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def card(study: Study, configs: list[str], answers: int, votes: int, raters: int) -> str:
    """README.md: the YAML header ``datasets`` and the Hub read the configs from, then what the columns are."""
    declared = "".join(f"\n- config_name: {name}\n  data_files: {name}.parquet" for name in configs)
    missing = "".join(f" No {name} yet, so no `{name}` config (`datasets` can't load an empty split)."
                      for name in ("answers", "votes") if name not in configs)
    setups = "\n".join(f"| {_cell(s.label)} | {_cell(s.engine.get('model') or '')} | "
                       f"{_cell(s.engine.get('backend') or '')} |" for s in study.setups)
    return f"""---
pretty_name: {json.dumps(study.name, ensure_ascii=False)}
configs:{declared or " []"}
---

# {study.name}

A team study of the Qwen3-Omni web app: blind pairwise votes between the answers of {len(study.setups)} set-ups to
{len(study.prompts)} prompts; {_count(answers, "answer")}, {_count(votes, "vote")} by {_count(raters, "rater")}.
Study `{study.id}`, answered by app version `{study.app_version or "unknown"}`.{missing}

This dataset names the set-up behind every answer: whoever holds it can tell the sides of every pair. Don't hand
it to raters while the study runs.

| set-up | model | backend |
|---|---|---|
{setups}

## Configs

- `answers`: one row per prompt and set-up: `prompt_id`, `prompt`, `media` and `media_sha256` (the prompt's files by
  name and SHA-256; the files are in the study's zip), `system_prompt`, `reference`, `setup`, `settings` (every
  setting, JSON), `model`, `backend`, `text`, `audio` (the spoken answer, a 24 kHz WAV; null without speech),
  `audio_sha256`, `error`, `finish_reason`, `first_token_s`, `first_audio_s`, `tokens_per_s`.
- `votes`: one row per vote, in the order stored: `vote`, `pair_id`, `voted_at` (UTC), `rater`, the prompt as above,
  `setup_a` and `setup_b` (the labels shown as A and B), `choice` (`A`, `B`, `tie`, `both_bad`), `winner` (a label,
  or `tie` / `both_bad`), `comment`, both answers' text, speech SHA-256, settings, model and backend, and the
  study's id, name and app version. A vote's speech is in `answers`: join on `prompt_id` and `setup_a` (or
  `setup_b`) = `setup`.

```python
from datasets import load_dataset

votes = load_dataset("path/to/this/folder", "votes")["train"]
answers = load_dataset("path/to/this/folder", "answers")["train"]
```
"""


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
