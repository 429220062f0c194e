"""The live progress widget: one composite widget, updated by trait changes from one throttled updater.

The driver calls `update(progress)` as often as it likes (every ~0.5 s and on finished chunks); that only stores
the snapshot. A single updater thread renders the newest snapshot at most every `refresh_s` seconds, so a
100_000-chunk job sends a bounded number of widget messages. Nothing is ever printed into an Output widget from
a thread (ipywidgets#4020), and there is only ever one bar per job (tqdm#375/#1287, distributed#3324).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from batchnb.errors import JobStateError
from batchnb.record.snapshot import ChunkBoard, ChunkMonitor, Progress
from batchnb.record.status import JobStatus
from batchnb.views.html import chunk_map_html, errors_html, stats_html, status_html
from batchnb.views.logline import SummarySlot

__all__ = ["LiveView"]

BAR_STYLES: dict[str, str] = {
    JobStatus.SUCCEEDED: "success",
    JobStatus.FAILED: "danger",
    JobStatus.CANCELLED: "warning",
    JobStatus.INTERRUPTED: "warning",
}


class LiveView:
    """Progress bar, numbers, chunk map, latest errors, Cancel and Retry failed, in one VBox.

    Parameters
    ----------
    on_cancel, on_retry
        What the buttons do; `on_retry(view)` runs the failed chunks again showing progress in this view.
    refresh_s
        Least time between two renders; the updater wakes this often.
    board_every_s
        Least time between two reads of the chunk table (the chunk map, the heartbeat, the errors).
    updater
        False: no thread; tests call `tick()` themselves with their own clock.
    """

    interactive = True  # a live front end: job.run() keeps the kernel interruptible around this view

    def __init__(
        self,
        *,
        name: str,
        output: str | None = None,
        on_cancel: Callable[[], None] | None = None,
        on_retry: Callable[[LiveView], Any] | None = None,
        refresh_s: float = 0.5,
        board_every_s: float = 1.0,
        display: bool = True,
        slot: SummarySlot | None = None,
        updater: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import ipywidgets as w

        self.name = name
        self.output = output
        self.refresh_s = refresh_s
        self.board_every_s = board_every_s
        self._on_cancel = on_cancel
        self._on_retry = on_retry
        self._use_thread = updater
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: Progress | None = None
        self._shown: Progress | None = None
        self._rendered_at = -float("inf")
        self._board: ChunkBoard | None = None
        self._board_at = -float("inf")
        self._monitor: ChunkMonitor | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._retry_queued = False
        self._cancelling = False
        self._open = False
        self.renders = 0
        self.on_render: Callable[[Progress], None] | None = None

        parts = _widgets(name)
        self.header, self.bar, self.stats, self.chunk_map, self.errors = parts[:5]
        self.cancel_button, self.retry_button, self.message = parts[5:]
        self.cancel_button.on_click(lambda _: self.cancel())
        self.retry_button.on_click(lambda _: self.retry())
        buttons = w.HBox([self.cancel_button, self.retry_button, self.message])
        self.widget = w.VBox([self.header, self.bar, self.stats, self.chunk_map, self.errors, buttons])
        self.widget.add_class("batchnb-live")
        self._slot = slot
        if display:
            from IPython.display import display as show

            show(self.widget)
            self._slot = SummarySlot()

    def bind(self, *, on_cancel: Callable[[], None] | None, on_retry: Callable[[LiveView], Any] | None) -> None:
        """Connect the buttons to a job (the factory does this when a job is given this view)."""
        self._on_cancel = on_cancel
        self._on_retry = on_retry

    # --- the driver side: cheap -------------------------------------------------------------------
    def update(self, progress: Progress) -> None:
        with self._lock:
            self._latest = progress
            if not self._open:
                self._begin()

    def _begin(self) -> None:
        """A run starts (the first one, or a retry shown in the same view)."""
        self._open = True
        self._cancelling = False
        self._board, self._board_at = None, -float("inf")
        self._rendered_at = -float("inf")
        if self._use_thread:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"batchnb-view-{self.name}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the updater and render the final snapshot."""
        thread = self._thread
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None
        self._open = False
        self.tick(force=True)
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    def finish(self, result, error: BaseException | None = None) -> None:
        if error is not None:
            self.header.value = status_html(self.name, JobStatus.FAILED)
            self.message.value = f"<span style='color:#de2d26'>{_escape(type(error).__name__)}: {_escape(error)}</span>"
            self.cancel_button.disabled = True
            return
        if result is not None:
            self.message.value = ""
            self.header.value = status_html(self.name, result.status)
            self.bar.bar_style = BAR_STYLES.get(result.status, "")
            self.cancel_button.disabled = True
            self.retry_button.disabled = result.chunks_failed == 0 or self._on_retry is None
            if self._slot is not None:
                self._slot.show(result)
            if self._retry_queued and result.chunks_failed and self._on_retry is not None:
                self._retry_queued = False
                self.retry()

    # --- the buttons (run on the kernel's main thread) ----------------------------------------------
    def cancel(self) -> None:
        if self._on_cancel is not None:
            self._on_cancel()
            self._cancelling = True
            self.message.value = "cancelling: running chunks finish, then the job stops"
            self.cancel_button.disabled = True

    def retry(self) -> None:
        if self._on_retry is None:
            return
        latest = self._latest
        if latest is not None and not JobStatus(latest.status).is_terminal and self._open:
            self._retry_queued = True
            self.message.value = "retry queued: the failed chunks run again when this pass ends"
            self.retry_button.disabled = True
            return
        self.message.value = ""
        self.retry_button.disabled = True
        try:
            self._on_retry(self)
        except Exception as exc:  # noqa: BLE001 - shown in the view, never a traceback in a callback
            self.message.value = f"<span style='color:#de2d26'>{_escape(exc)}</span>"

    # --- the updater ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s / 2):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a view never kills anything; try again next time
                pass

    def tick(self, *, force: bool = False) -> bool:
        """Render the newest snapshot when it is due; True when something was rendered."""
        now = self._clock()
        latest = self._latest
        if latest is None or (not force and now - self._rendered_at < self.refresh_s):
            return False
        board = self._read_board(now, force=force)
        if latest is self._shown and not force and board is None:
            return False
        self._render(latest, self._board)
        self._shown = latest
        self._rendered_at = now
        self.renders += 1
        return True

    def _read_board(self, now: float, *, force: bool) -> ChunkBoard | None:
        if self.output is None or (not force and now - self._board_at < self.board_every_s):
            return None
        if self._monitor is None:
            self._monitor = ChunkMonitor(self.output)
        try:
            self._board = self._monitor.board()
        except JobStateError:  # a view never fails the job it shows: keep the last board until the next read
            pass
        self._board_at = now
        return self._board

    def _render(self, p: Progress, board: ChunkBoard | None) -> None:
        _set(self.header, value=status_html(self.name, p.status))
        _set(self.bar, value=round(min(100.0, p.percent), 1), bar_style=BAR_STYLES.get(p.status, ""))
        _set(self.stats, value=stats_html(p, board))
        _set(self.chunk_map, value=chunk_map_html(board))
        _set(self.errors, value=errors_html(board))
        running = not JobStatus(p.status).is_terminal
        _set(self.cancel_button, disabled=not running or self._on_cancel is None or self._cancelling)
        _set(self.retry_button, disabled=(p.chunks_failed == 0 or self._on_retry is None or self._retry_queued))
        if self.on_render is not None:
            self.on_render(p)


def _set(widget, **values: Any) -> None:
    """Change only what differs, in one message per widget."""
    changed = {k: v for k, v in values.items() if getattr(widget, k) != v}
    if not changed:
        return
    with widget.hold_sync():
        for key, value in changed.items():
            setattr(widget, key, value)


def _escape(value: object) -> str:
    import html

    return html.escape(str(value))


def _widgets(name: str) -> tuple:
    """The view's widgets, each with the CSS class tests and themes find it by: header, bar, stats, chunk map,
    errors, the Cancel and Retry buttons, and the message beside them."""
    import ipywidgets as w

    cancel = w.Button(description="Cancel", icon="stop", button_style="warning", disabled=True)
    cancel.tooltip = (
        "Stop submitting chunks; finished parts stay and run() resumes. The kernel handles this click only "
        "when it is free (job.start(), the form's Run): during a blocking run(), interrupt the kernel instead."
    )
    retry = w.Button(description="Retry failed", icon="redo", disabled=True)
    retry.tooltip = "Run the failed chunks again (queued until the current pass ends)"
    parts = (
        w.HTML(status_html(name, JobStatus.PENDING)),
        w.FloatProgress(value=0.0, min=0.0, max=100.0, layout=w.Layout(width="100%", max_width="640px")),
        w.HTML(stats_html(Progress(name=name))),
        w.HTML(""),
        w.HTML(""),
        cancel,
        retry,
        w.HTML(""),
    )
    classes = ("status", "progress", "stats", "chunkmap", "errors", "cancel", "retry", "message")
    for widget, cls in zip(parts, classes, strict=True):
        widget.add_class(f"batchnb-{cls}")
    return parts
