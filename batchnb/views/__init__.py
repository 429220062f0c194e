"""Views over Progress: the only package that imports tqdm or ipywidgets. One factory picks the view.

- "widget": `LiveView`, the composite ipywidget (a notebook with a live front end)
- "log": `LogView`, a throttled plain-text line (papermill, nbconvert, a kernel nobody watches)
- "text": `TerminalView`, a tqdm bar on stderr (a terminal)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from batchnb.record.snapshot import Progress
from batchnb.views.detect import frontend, in_kernel

__all__ = ["View", "frontend", "in_kernel", "make_view"]

log = logging.getLogger("batchnb")

MODES = ("auto", "widget", "log", "text")


@runtime_checkable
class View(Protocol):
    def update(self, progress: Progress) -> None: ...

    def close(self) -> None: ...

    def finish(self, result, error: BaseException | None = None) -> None: ...


def make_view(
    mode: Any,
    *,
    name: str | None = None,
    output: str | None = None,
    on_cancel: Callable[[], None] | None = None,
    on_retry: Callable[[Any], Any] | None = None,
) -> View | None:
    """None -> no view; a View -> itself; "auto" -> widget, text or terminal as `frontend()` says.

    Building a widget view can fail (no ipywidgets, no display): the factory then falls back to plain text,
    and never fails the job because of a view.
    """
    if mode is None:
        return None
    if not isinstance(mode, str) and isinstance(mode, View):
        bind = getattr(mode, "bind", None)
        if bind is not None:
            bind(on_cancel=on_cancel, on_retry=on_retry)
        return mode
    if mode not in MODES:
        from batchnb.errors import ConfigError

        raise ConfigError(f"`progress` must be one of {list(MODES)}, None or a view object, got {mode!r}")
    name = name or "batchnb"
    kind = frontend() if mode == "auto" else mode
    if kind == "widget":
        try:
            from batchnb.views.live import LiveView

            return LiveView(name=name, output=output, on_cancel=on_cancel, on_retry=on_retry)
        except Exception:  # fail safe: a text line always works
            log.debug("widget view unavailable, using plain text", exc_info=True)
            kind = "log"
    if kind == "log":
        from batchnb.views.logline import LogView

        return LogView(name=name, output=output)
    from batchnb.views.terminal import TerminalView

    return TerminalView(name=name)
