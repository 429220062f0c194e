"""Views over Progress: the only package that imports tqdm or ipywidgets. One factory picks the view."""

from __future__ import annotations

import sys
from typing import Protocol

from batchnb.progress import Progress

__all__ = ["View", "make_view"]


class View(Protocol):
    def update(self, progress: Progress) -> None: ...

    def close(self) -> None: ...

    def finish(self, result) -> None: ...


def in_notebook() -> bool:
    """True inside a Jupyter kernel (detected without importing IPython)."""
    try:
        shell = sys.modules["IPython"].get_ipython()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - detection fails safe: no IPython, or an unusual shell
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def make_view(mode: str | None, *, name: str | None = None) -> View | None:
    """None -> no view; "auto" -> terminal bar outside Jupyter; any failure falls back to the text bar."""
    if mode is None:
        return None
    if mode not in ("auto", "text", "widget"):
        from batchnb.errors import ConfigError

        raise ConfigError(f"`progress` must be 'auto', 'text', 'widget' or None, got {mode!r}")
    from batchnb.views.terminal import TerminalView

    return TerminalView(name=name or "batchnb")
