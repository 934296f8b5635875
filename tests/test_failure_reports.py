"""A failure that pytest can't format must not stop the run: every later test still runs and is reported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

FAILING_ON_PURPOSE = '''
import ast

def test_a_failure_whose_traceback_pytest_cannot_format(monkeypatch):
    def broken_parse(*args, **kwargs):  # what Python 3.11.7's ast.parse raised inside pytest's formatting
        raise SystemError("AST constructor recursion depth mismatch (before=129, after=148)")
    monkeypatch.setattr(ast, "parse", broken_parse)
    assert 1 + 1 == 3, "fails on purpose"

def test_a_later_test_still_runs():
    assert True
'''


def run_pytest(tmp_path, *plugins: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_on_purpose.py").write_text(textwrap.dedent(FAILING_ON_PURPOSE))
    args = [arg for plugin in plugins for arg in ("-p", plugin)]
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args,
                           "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_an_unformattable_failure_is_reported_and_the_run_goes_on(tmp_path):
    run = run_pytest(tmp_path, "tests.failure_reports")
    assert "INTERNALERROR" not in run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout.splitlines()[-1]
    assert "AssertionError: fails on purpose" in run.stdout and "test_on_purpose.py" in run.stdout
    assert run.returncode == 1


def test_without_the_plugin_the_same_run_stops_with_an_internal_error(tmp_path):
    """The check above can fail: plain pytest on this Python stops at the first such failure."""
    run = run_pytest(tmp_path)
    assert "INTERNALERROR" in run.stdout + run.stderr and "1 passed" not in run.stdout
