"""The import rules docs/architecture.md states, checked on the source (every import, lazy ones too).

A broken rule fails here with the module and the import that breaks it, rather than growing unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_PACKAGES = ("backends", "ui", "api", "turns", "studies", "media", "messages", "cli")
ENGINES = ("transformers", "vllm", "openai", "hybrid")
TABS = ("chat", "live", "evaluate")


def app_imports() -> dict[str, set[str]]:
    """{module: the app modules it imports}, for every module of the app's packages."""
    found: dict[str, set[str]] = {}
    for package in APP_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            targets = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    targets.add(node.module)
                    targets.update(f"{node.module}.{alias.name}" for alias in node.names)
                elif isinstance(node, ast.Import):
                    targets.update(alias.name for alias in node.names)
            found[module] = {t for t in targets if t.split(".")[0] in APP_PACKAGES}
    return found


def broken(rule) -> list[str]:
    return sorted(f"{module} imports {target}" for module, targets in app_imports().items()
                  for target in targets if rule(module, target))


def test_media_and_messages_sit_below_everything():
    """``messages`` imports nothing of the app's; ``media`` only ``messages``."""
    assert not broken(lambda m, t: m.startswith("messages") and not t.startswith("messages"))
    assert not broken(lambda m, t: m.startswith("media") and t.split(".")[0] not in ("media", "messages"))


CONTRACT = ("backends.base", "backends.events", "backends.request")


def test_the_ui_knows_only_the_contract_and_no_engine_knows_the_ui():
    def ui_rule(module, target):
        return module.startswith("ui") and target.startswith("backends") and not target.startswith(CONTRACT)

    assert not broken(ui_rule)
    assert not broken(lambda m, t: m.startswith("backends") and t.startswith("ui"))


def test_the_api_sits_beside_the_ui_on_the_contract():
    """``api`` (the realtime WebSocket) and ``ui`` both serve the engine through the contract; neither imports the
    other, and no engine imports ``api``."""
    def api_rule(module, target):
        return module.startswith("api") and (target.startswith("ui") or (target.startswith("backends")
                                                                          and not target.startswith(CONTRACT)))

    assert not broken(api_rule)
    assert not broken(lambda m, t: m.startswith(("ui", "backends")) and t.split(".")[0] == "api")


def test_turn_taking_sits_below_the_ui_and_the_api():
    """``turns`` (who is talking) takes only ``media`` and ``messages``; engines don't use it."""
    assert not broken(lambda m, t: m.startswith("turns") and t.split(".")[0] not in ("turns", "media", "messages"))
    assert not broken(lambda m, t: m.startswith("backends") and t.startswith("turns"))


def test_no_engine_imports_another_but_the_hybrid_which_combines_them():
    """The hybrid speaks vLLM's (or a server's) text with a Transformers talker: it may import all three."""
    def engine_of(name: str) -> str | None:
        parts = name.split(".")
        return parts[1] if len(parts) > 1 and parts[0] == "backends" and parts[1] in ENGINES else None

    assert not broken(lambda m, t: engine_of(m) not in (None, "hybrid") and engine_of(t) not in (None, engine_of(m)))


def test_nothing_in_the_transformers_engine_imports_its_top():
    """Arrows run engine (backend.py) → model holder → the parts; only ``build_backend`` picks the engine."""
    top = "backends.transformers.backend"
    assert not broken(lambda m, t: m.startswith("backends.transformers") and m != top and t.startswith(top))


def test_no_tab_imports_another():
    def tab_of(name: str) -> str | None:
        parts = name.split(".")
        return parts[1] if len(parts) > 1 and parts[0] == "ui" and parts[1] in TABS else None

    assert not broken(lambda m, t: tab_of(m) is not None and tab_of(t) not in (None, tab_of(m)))


def test_team_studies_sit_on_the_contract_below_the_ui():
    """``studies`` (the team studies' store, schedule, ranking and generation) takes only the backend contract,
    ``media`` and ``messages``; the UI builds on it, no engine and not the realtime API imports it."""
    def studies_rule(module, target):
        allowed = target.startswith(CONTRACT) or target.split(".")[0] in ("studies", "media", "messages")
        return module.startswith("studies") and not allowed

    assert not broken(studies_rule)
    assert not broken(lambda m, t: m.startswith(("backends", "api", "turns", "media", "messages"))
                      and t.split(".")[0] == "studies")


def test_the_command_line_sits_above_everything():
    """``cli`` (app.py's and app_captioner.py's flags and what they become) may use every package; none uses it, so
    the parts run the same under another front end (tests, a Space's own script)."""
    assert not broken(lambda m, t: not m.startswith("cli") and t.split(".")[0] == "cli")
