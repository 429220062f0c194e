"""A throttled plain-text progress line, for kernels that no widget front end watches (papermill, nbconvert).

One line every `every_s` seconds at most, plus the first and the last: a papermill log (`--log-output`) gets a
readable history instead of one tqdm line per refresh (papermill#765), and the saved notebook a short one.
When the run ends, the static HTML summary goes into a display slot reserved when the view was made, so it
lands in the right cell even when the job ran on a background thread.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from batchnb.record.snapshot import ChunkMonitor, Progress
from batchnb.record.status import JobStatus
from batchnb.views.detect import in_kernel
from batchnb.views.panels import text_line

__all__ = ["LogView", "SummarySlot"]


class SummarySlot:
    """An empty display output reserved in the calling cell, filled with the result's HTML at the end.

    `update_display_data` is routed by display id, so it works from any thread (ipywidgets#4020 is about
    outputs from threads that land in the wrong cell or nowhere).
    """

    def __init__(self) -> None:
        from IPython.display import display

        self._handle = display({"text/plain": ""}, raw=True, display_id=True)

    def show(self, result) -> None:
        if self._handle is None or result is None:
            return
        self._handle.update({"text/html": result._repr_html_(), "text/plain": result.summary()}, raw=True)


class LogView:
    def __init__(
        self,
        *,
        name: str,
        output: str | None = None,
        every_s: float = 10.0,
        stream: TextIO | None = None,
        summary: bool = True,
    ) -> None:
        self.name = name
        self.output = output
        self._monitor: ChunkMonitor | None = None
        self.every_s = every_s
        self._stream = stream
        self._last_line_at: float | None = None
        self._last: Progress | None = None
        self._slot = SummarySlot() if summary and in_kernel() else None
        self.lines = 0

    def update(self, progress: Progress) -> None:
        self._last = progress
        now = time.monotonic()
        if self._last_line_at is None or now - self._last_line_at >= self.every_s:
            self._write(progress)
            self._last_line_at = now

    def _write(self, progress: Progress) -> None:
        board = None
        if self.output is not None and progress.status == JobStatus.RUNNING:
            self._monitor = self._monitor or ChunkMonitor(self.output)
            board = self._monitor.board()  # a few aggregate queries, once per line: the heartbeat
        stream = self._stream or sys.stderr
        stream.write(text_line(progress, board) + "\n")
        stream.flush()
        self.lines += 1

    def close(self) -> None:
        if self._last is not None and self._last_line_at is not None:
            self._write(self._last)  # the final state, whatever the throttle says
            self._last_line_at = None
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    def finish(self, result, error: BaseException | None = None) -> None:
        stream = self._stream or sys.stderr
        if error is not None:
            stream.write(f"{self.name}: stopped by {type(error).__name__}: {error}\n")
            return
        if self._slot is not None:
            try:
                self._slot.show(result)
            except Exception:  # noqa: BLE001 - a display failure never fails the job
                pass
