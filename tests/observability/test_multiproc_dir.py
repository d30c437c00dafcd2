"""The multiprocess directory: `mia serve`/`mia worker` start by deleting the files of
processes that are gone (a live worker sharing the directory keeps its own), and each new
process stops counting the live gauges (long-polls, pools) of dead ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.observability import multiproc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_prepare_deletes_only_dead_processes_files(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getpid()
    for name in (f"counter_{dead}.db", f"histogram_{dead}.db", f"gauge_livesum_{dead}.db",
                 f"counter_{alive}.db", f"gauge_livesum_{alive}.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert multiproc.prepare(str(tmp_path)) == str(tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f"counter_{alive}.db", f"gauge_livesum_{alive}.db", "notes.txt"])


def test_prepare_without_a_directory_makes_a_private_one() -> None:
    one, two = multiproc.prepare(None), multiproc.prepare(None)
    assert one != two and Path(one).is_dir() and not any(Path(one).iterdir())


def test_a_new_process_stops_counting_a_dead_ones_live_gauges(tmp_path: Path) -> None:
    dead = _dead_pid()
    for name in (f"gauge_livesum_{dead}.db", f"counter_{dead}.db"):
        (tmp_path / name).write_bytes(b"x")
    assert multiproc.forget_dead(str(tmp_path)) == 1
    # its counters stay (a scrape still adds them up until the next `mia serve` start)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{dead}.db"]
