"""A job's driver as its own OS process, in its own session: it outlives the kernel, the notebook server and the
terminal that started it.

The job's configuration (a notebook's detector function included, by value) reaches the new process through a
pipe, as cloudpickle bytes on its standard input: never through a file in the output, which someone else may
have written (DESIGN.md "Untrusted files and outputs"). The driver logs to `_batchnb/driver.log`; any process
may ask it to stop (`driver.cancel`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from batchnb.config import JobConfig
from batchnb.errors import ConfigError, JobStateError

__all__ = ["launch", "main"]

START_TIMEOUT_S = 30.0  # the new driver takes the job's lock (or fails) within this


def launch(config: JobConfig, *, restart: bool = False, only_failed: bool = False) -> int:
    """Start the job's driver as a detached process and return its pid once it holds the job's lock.

    A detector that cannot be pickled, or a job already running, fails here, before anything starts; a driver
    that fails while starting raises with the end of its log.
    """
    import cloudpickle

    from batchnb.driver.lock import JobLock
    from batchnb.files import private_dir

    try:
        payload = cloudpickle.dumps((config, restart, only_failed))
    except Exception as exc:
        msg = (
            f"the job cannot be sent to a detached driver: its configuration does not pickle ({type(exc).__name__}: "
            f"{exc}); define the detector at the top level of a module or cell, or run it with start() instead"
        )
        raise ConfigError(msg) from exc
    with JobLock(config.output):  # free now, or a JobStateError naming the running driver
        pass
    log = private_dir(config.output) / "driver.log"
    try:  # O_NOFOLLOW: a planted link is refused, never appended through
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        msg = f"cannot write the driver log {str(log)!r} ({exc.strerror}): it is not a file batchnb wrote; remove it"
        raise JobStateError(msg) from exc
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchnb.driver.detached"],
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(payload)
    proc.stdin.close()
    threading.Thread(target=proc.wait, name="batchnb-detached-reaper", daemon=True).start()  # no zombie
    _wait_started(proc, config.output, log)
    return proc.pid


def _wait_started(proc: subprocess.Popen, output: str, log: Path) -> None:
    from batchnb.driver.lock import lock_holder

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if lock_holder(output) == proc.pid:
            return
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:].strip()
            raise JobStateError(f"the detached driver of {output!r} stopped while starting: {tail}")
        time.sleep(0.05)
    raise JobStateError(f"the detached driver of {output!r} did not start within {START_TIMEOUT_S:.0f} s: see {log}")


def main() -> int:
    """`python -m batchnb.driver.detached`, given the pickled job on standard input."""
    import cloudpickle

    from batchnb.driver.run import run_job

    config, restart, only_failed = cloudpickle.loads(sys.stdin.buffer.read())
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())  # a polite kill stops between chunks
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} driver {os.getpid()} starts {config.name!r}", flush=True)
    result = run_job(config, cancel=cancel, on_progress=_log_line(), restart=restart,
                     only_failed=only_failed)  # fmt: skip
    print(result.summary(), flush=True)
    return 0 if result.status == "succeeded" else 1


def _log_line(every_s: float = 5.0):
    """Progress as a line in the driver's log every few seconds (the record has it all; this is for a tail -f)."""
    last = [-float("inf")]

    def show(p) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            print(f"{time.strftime('%H:%M:%S')} {p.chunks_done}/{p.chunks_total} chunks, {p.rows_done:,} rows, "
                  f"{p.rows_per_s:,.0f} rows/s, {p.chunks_failed} failed", flush=True)  # fmt: skip

    return show


if __name__ == "__main__":
    sys.exit(main())
