"""A pytest plugin: a failure that pytest can't format still becomes a failed test, never an INTERNALERROR.

Python 3.11.7's `ast.parse` can raise `SystemError: AST constructor recursion depth mismatch` when pytest
parses a library's source to show a traceback; pytest then stopped the whole run, and every test after the
failing one went unreported. Here such a failure is reported with a plain traceback made without `ast`
(file, line, code), and the run goes on.
"""

from __future__ import annotations

import linecache
import traceback

import pytest
from _pytest.reports import CollectReport, TestReport


def plain_traceback(excinfo: pytest.ExceptionInfo | None, why: BaseException) -> str:
    """The failure as text, built from frames and lines only (no source parsing, no caret anchors)."""
    lines = [f"(pytest could not format this failure: {type(why).__name__}: {why}; a plain traceback follows)"]
    if excinfo is None:
        return "\n".join(lines)
    tb = excinfo.tb
    while tb is not None:
        code = tb.tb_frame.f_code
        source = linecache.getline(code.co_filename, tb.tb_lineno).strip()
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        if source:
            lines.append(f"    {source}")
        tb = tb.tb_next
    lines.extend(line.rstrip("\n") for line in traceback.format_exception_only(excinfo.type, excinfo.value))
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    try:
        return (yield)
    except Exception as why:  # only formatting a failure can raise here
        return TestReport(
            item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed",
            plain_traceback(call.excinfo, why), call.when, user_properties=item.user_properties,
            duration=call.duration, start=call.start, stop=call.stop,
        )


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    try:
        return (yield)
    except Exception as why:
        return CollectReport(collector.nodeid, "failed", plain_traceback(None, why), [])
