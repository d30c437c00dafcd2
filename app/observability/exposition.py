"""The Prometheus text of this process, or of every process sharing the multiprocess
directory."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess


def render(multiproc_dir: str | None) -> str:
    if multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiproc_dir)
        return generate_latest(registry).decode()
    return generate_latest(REGISTRY).decode()
