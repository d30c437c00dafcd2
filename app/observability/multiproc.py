"""prometheus_client's multiprocess mode for `mia serve --workers N` and `mia worker`: one
directory of mmap files, one set per process, added up by whoever serves /metrics."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from prometheus_client import multiprocess

_FILE = re.compile(r"^(?P<kind>[a-z_]+)_(?P<pid>\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pids(path: str | Path) -> set[int]:
    return {int(m["pid"]) for f in Path(path).glob("*.db") if (m := _FILE.match(f.name))}


def prepare(configured: str | None) -> str:
    """The directory for this command (PROMETHEUS_MULTIPROC_DIR, else a new private one),
    without the files of processes that are gone: their live gauges would count forever, and
    their counters belong to a run that ended. Files of live processes (a worker sharing the
    directory) are kept."""
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="mia-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for f in path.glob("*.db"):
        m = _FILE.match(f.name)
        if m and not _alive(int(m["pid"])):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
    return str(path)


def forget_dead(path: str | None) -> int:
    """Called as each process starts: the live gauges (long-polls open, pool in use) of
    processes that died (a server worker restarted after a crash) stop counting."""
    if not path or not Path(path).is_dir():
        return 0
    dead = [pid for pid in pids(path) if not _alive(pid)]
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return len(dead)
