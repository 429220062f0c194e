"""`bn.status(dir)`: a Progress snapshot from the state store, readable from any process."""

from __future__ import annotations

from pathlib import Path

from batchnb.errors import JobStateError
from batchnb.lock import driver_gone
from batchnb.progress import Progress
from batchnb.state import JobState, state_path

__all__ = ["status"]


def status(output: str | Path, *, missing_ok: bool = False) -> Progress:
    """The latest snapshot the driver wrote (at most ~1 s old while it runs).

    Until the job has written its state, the answer is `status="pending"` with zero counts.
    Raises JobStateError only when `output` holds no job at all.
    """
    path = state_path(output)
    if not path.exists():
        if missing_ok or Path(output, "_batchnb").exists():
            return Progress(name=Path(output).name)
        raise JobStateError(f"{str(output)!r} holds no batchnb job: check the output directory")
    with JobState.open(output) as state:
        data = state.get("progress")
        status_now = state.get("status", "pending")
    extra = {}
    if status_now in ("planning", "running") and driver_gone(output):
        extra = {"status": "failed", "chunks_running": 0, "eta_s": None,
                 "last_error": "the driver stopped without finishing (killed or crashed): run() again to resume"}  # fmt: skip
    if data is None:
        return Progress.from_dict({"name": Path(output).name, "status": status_now, **extra})
    return Progress.from_dict({**data, "status": status_now, **extra})
