"""The app's log handler follows sys.stderr: a swapped and closed stderr (pytest's capture of an
earlier test, a redirect) is never written to, which printed "--- Logging error ---"."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from app.observability import logs


def test_records_go_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.setup("text", "INFO")
    logging.getLogger("mia.test").info("one")
    assert "one" in first.getvalue()

    first.close()  # the stream of setup time is gone, as after the test that called setup
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("mia.test").info("two")
    assert "two" in second.getvalue() and "Logging error" not in second.getvalue()
