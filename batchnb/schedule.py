"""Cron scheduling of pipelines with APScheduler: never two runs at once, missed runs coalesced into one."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from batchnb.errors import ConfigError

if TYPE_CHECKING:
    from batchnb.pipeline import Pipeline, PipelineResult

__all__ = ["Schedule", "cron_trigger"]

log = logging.getLogger("batchnb")

MISFIRE_GRACE_S = 3600  # a run missed (machine asleep, process busy) by up to an hour still runs, once


def cron_trigger(cron: str):
    """APScheduler trigger from a 5-field cron line, or 6 fields with seconds first ("*/2 * * * * *")."""
    from apscheduler.triggers.cron import CronTrigger

    fields = cron.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(cron)
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow)
    except ValueError as exc:
        raise ConfigError(f"cron {cron!r} is not valid: {exc}") from exc
    raise ConfigError(f"cron {cron!r} needs 5 fields (minute hour day month weekday) or 6 with seconds first")


class Schedule:
    """A pipeline on a cron schedule, in a background thread (`block=False`) or in the foreground."""

    def __init__(self, pipeline: Pipeline, cron: str) -> None:
        self.pipeline = pipeline
        self.trigger = cron_trigger(cron)
        self.results: list[PipelineResult] = []
        self.skipped_overlaps = 0
        self._scheduler = None
        self._ran = threading.Condition()

    def _fire(self) -> None:
        try:
            result = self.pipeline.run()
        except ConfigError as exc:  # the previous run is still going: this one is dropped
            self.skipped_overlaps += 1
            log.warning("%s", exc)
            return
        log.info("scheduled run of %s: %s", self.pipeline.name, result.status)
        with self._ran:
            self.results.append(result)
            self._ran.notify_all()

    def start(self, *, block: bool = False) -> Schedule:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.schedulers.blocking import BlockingScheduler

        scheduler = (BlockingScheduler if block else BackgroundScheduler)(daemon=True)

        def overlapped(event) -> None:
            self.skipped_overlaps += 1

        scheduler.add_listener(overlapped, EVENT_JOB_MAX_INSTANCES)
        scheduler.add_job(self._fire, self.trigger, id=self.pipeline.name, max_instances=1, coalesce=True,
                          misfire_grace_time=MISFIRE_GRACE_S)  # fmt: skip
        self._scheduler = scheduler
        scheduler.start()
        return self

    @property
    def next_run_time(self):
        job = self._scheduler.get_job(self.pipeline.name) if self._scheduler else None
        return job.next_run_time if job else None

    def wait_for_runs(self, n: int, timeout: float) -> list[PipelineResult]:
        with self._ran:
            self._ran.wait_for(lambda: len(self.results) >= n, timeout)
            return list(self.results)

    def stop(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=True)
