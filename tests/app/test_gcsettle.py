"""A serving process freezes what start-up made out of the collector's reach and collects the
young generation ten times less often (app/gcsettle.py); tests' apps leave the collector alone."""

from __future__ import annotations

import gc

from app import gcsettle
from tests.support.harness import running_app


async def test_an_app_that_starts_freezes_its_start_up_objects(settings_factory) -> None:  # type: ignore[no-untyped-def]
    threshold = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    try:
        async with running_app(settings_factory(gc_freeze=True)) as api:
            assert (await api.client.get("/health")).status_code == 200
            frozen = gc.get_freeze_count()
            assert frozen > 10_000  # the modules, routes and models at least
            assert gc.get_threshold()[0] == gcsettle.YOUNG_THRESHOLD
            assert gc.get_threshold()[1:] == threshold[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_an_app_in_tests_leaves_the_collector_alone(settings_factory) -> None:  # type: ignore[no-untyped-def]
    threshold = gc.get_threshold()
    async with running_app(settings_factory()) as api:
        assert (await api.client.get("/health")).status_code == 200
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == threshold
