"""What Hugging Face Spaces and ModelScope studios read from the repository, and how the app binds there."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import gradio
import yaml

import cli
from backends.checkpoints import resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_front_matter_is_what_spaces_requires():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__  # the version we test with
    assert (ROOT / meta["app_file"]).is_file() and meta["python_version"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert meta["suggested_hardware"] and "Qwen/Qwen3-Omni-30B-A3B-Instruct" in meta["models"]
    assert {"title", "emoji", "colorFrom", "colorTo"} <= set(meta)
    assert (ROOT / "packages.txt").read_text().split() == ["ffmpeg"]


def test_ms_deploy_json_names_the_gradio_sdk_we_test():
    deploy = json.loads((ROOT / "ms_deploy.json").read_text())
    assert deploy["sdk_type"] == "gradio" and deploy["sdk_version"] == gradio.__version__
    assert {"key": "QWEN_OMNI_HUB", "value": "modelscope"} in deploy["environment_variables"]


def test_the_app_listens_on_all_interfaces_only_where_a_platform_routes_to_it(monkeypatch):
    for name in ("GRADIO_SERVER_NAME", "SYSTEM", "MODELSCOPE_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    assert cli.parse_args([]).server_name == "127.0.0.1"
    monkeypatch.setenv("SYSTEM", "spaces")
    assert cli.parse_args([]).server_name == "0.0.0.0"
    monkeypatch.delenv("SYSTEM")
    monkeypatch.setenv("MODELSCOPE_ENVIRONMENT", "studio")
    assert cli.parse_args([]).server_name == "0.0.0.0"
    monkeypatch.setenv("GRADIO_SERVER_NAME", "10.0.0.5")
    assert cli.parse_args([]).server_name == "10.0.0.5"


def test_on_modelscope_hub_ids_are_fetched_from_modelscope(monkeypatch, tmp_path):
    fetched = []
    fake = types.ModuleType("modelscope")
    fake.snapshot_download = lambda model_id: fetched.append(model_id) or str(tmp_path)
    monkeypatch.setitem(sys.modules, "modelscope", fake)
    monkeypatch.setenv("QWEN_OMNI_HUB", "modelscope")
    checkpoint = resolve_checkpoint("Qwen/Qwen3-Omni-30B-A3B-Instruct")
    assert fetched == ["Qwen/Qwen3-Omni-30B-A3B-Instruct"] and checkpoint.path == str(tmp_path)
    monkeypatch.delenv("QWEN_OMNI_HUB")
    assert resolve_checkpoint("Qwen/Qwen3-Omni-30B-A3B-Instruct").path == "Qwen/Qwen3-Omni-30B-A3B-Instruct"
