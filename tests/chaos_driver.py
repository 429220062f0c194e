"""Chaos-test driver: run one batchnb job to the end in this process; tests/test_chaos.py kills it.

usage: python tests/chaos_driver.py SOURCE OUTPUT ENGINE

Runs `bn.BatchJob(SOURCE, OUTPUT, detector="zscore", chunk_size=1_000, engine=ENGINE).run(progress=None)`
and exits 0 when the job succeeded, 1 when it did not (the summary goes to stderr).

The test kills the driver's process group with SIGKILL at random times. Some windows of the commit
protocol are too narrow to hit that way, so with `CHAOS_TRAP=<point>` the process that reaches the named
point SIGKILLs its whole process group there (the driver and its workers, as the test's kill does):

    identity          planning: just after the job identity is committed, before the plan is saved
    plan              planning: inside the transaction that saves the plan, before its COMMIT
    running:K         just after chunk K is marked running
    rename-before:K   part K is written and fsynced under its temp name, not renamed yet
    rename-after:K    part K is renamed into place, not recorded in the state yet
    commit:K          inside the transaction that records chunk K done, before its COMMIT
    committed:K       just after that transaction committed

The traps wrap batchnb functions from the outside (os.replace, JobState methods): batchnb has no test hooks.
A spawned worker re-imports this module as `__mp_main__`, so the traps hold in the processes engine's
workers too. A trap that its point no longer matches (the code moved) simply never fires.
`CHAOS_CHUNK_SIZE` overrides the chunk size (it is part of the job's identity: keep it across runs).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

TRAP = os.environ.get("CHAOS_TRAP", "")
_POINT, _, _ARG = TRAP.partition(":")
_CHUNK = int(_ARG) if _ARG.isdigit() else None


def _die() -> None:
    """SIGKILL the driver's whole process group (only when the driver leads its own group), else this process."""
    group = int(os.environ.get("CHAOS_GROUP", "0") or 0)
    if group and group == os.getpgrp():
        os.killpg(group, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _install_traps() -> None:
    if not TRAP:
        return

    if _POINT in ("rename-before", "rename-after"):
        # Patched before batchnb is imported, so even `from os import replace` would get the wrapper.
        real_replace = os.replace
        target = f"part-{_CHUNK:06d}."

        def replace(src, dst, *args, **kwargs):
            hit = Path(dst).name.startswith(target)
            if hit and _POINT == "rename-before":
                _die()
            real_replace(src, dst, *args, **kwargs)
            if hit:
                _die()

        os.replace = replace
        return

    from batchnb.record.store import JobState

    armed = {"before_commit": False}
    real_tx = JobState._tx

    def _tx(self):
        inner = real_tx(self)

        class _Trapped:
            def __enter__(self_inner):
                return inner.__enter__()

            def __exit__(self_inner, exc_type, *rest):
                if armed["before_commit"] and exc_type is None:
                    _die()
                return inner.__exit__(exc_type, *rest)

        return _Trapped()

    JobState._tx = _tx

    if _POINT == "identity":
        real_set = JobState.set

        def set_(self, **values):
            real_set(self, **values)
            if "identity" in values:
                _die()

        JobState.set = set_
    elif _POINT == "plan":
        real_save_plan = JobState.save_plan

        def save_plan(self, chunks):
            armed["before_commit"] = True
            real_save_plan(self, chunks)
            _die()  # the transaction no longer goes through _tx: die just after it instead

        JobState.save_plan = save_plan
    elif _POINT == "running":
        real_mark_running = JobState.mark_running

        def mark_running(self, index, *args, **kwargs):
            real_mark_running(self, index, *args, **kwargs)
            if index == _CHUNK:
                _die()

        JobState.mark_running = mark_running
    elif _POINT in ("commit", "committed"):
        real_record_done = JobState.record_done

        def record_done(self, outcomes, *args, **kwargs):
            hit = any(getattr(o, "index", None) == _CHUNK for o in outcomes)
            if hit and _POINT == "commit":
                armed["before_commit"] = True
            real_record_done(self, outcomes, *args, **kwargs)
            if hit:
                _die()

        JobState.record_done = record_done
    else:
        raise SystemExit(f"chaos_driver: unknown CHAOS_TRAP {TRAP!r}")


_install_traps()


def main(argv: list[str]) -> int:
    import batchnb as bn

    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    source, output, engine = argv[1:]
    if os.getpgrp() == os.getpid():  # started with start_new_session: the group is this driver and its workers
        os.environ["CHAOS_GROUP"] = str(os.getpid())
    chunk_size = int(os.environ.get("CHAOS_CHUNK_SIZE", "1000"))
    job = bn.BatchJob(source, output, detector="zscore", chunk_size=chunk_size, engine=engine)
    result = job.run(progress=None)
    print(result.summary(), file=sys.stderr)
    return 0 if result.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
