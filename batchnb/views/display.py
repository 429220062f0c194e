"""How a job shows in a notebook: a bare `job` is the form where a widget front end is live, else its plain repr.

Nothing here is imported until a notebook asks: the methods import IPython and ipywidgets when called.
"""

from __future__ import annotations

from typing import Any

__all__ = ["InNotebook", "cell_number", "display_job", "shown_in"]


class InNotebook:
    """What a `BatchJob` does in a notebook (a mixin: the job's running and reading stay in job.py)."""

    def widget(self):
        """The configuration form: edits `config`, with Run / Cancel / Retry failed and the live view below."""
        from batchnb.views.form import JobForm

        return JobForm(self)

    def _ipython_display_(self) -> None:
        """A bare `job` in a cell: the form where a widget front end is live, else the plain repr."""
        display_job(self)


def cell_number() -> int | None:
    """The running cell's execution count in IPython, else None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "execution_count", None) if shell is not None else None


def shown_in(view: Any) -> int | None:
    """The cell whose output shows `view` (the one running now), or None without a view."""
    return cell_number() if view is not None else None


def display_job(job: Any) -> None:
    from IPython.display import display

    from batchnb.views import frontend

    shown = getattr(job, "_progress_shown_in", None)
    if shown is not None and shown == cell_number() and job.running():
        return  # `job.start()` as the cell's last line: its live view above already shows the job, once
    if frontend() == "widget":
        display(job.widget())
    else:
        display({"text/plain": repr(job)}, raw=True)
