"""How a bare `job` shows in a cell: the form where a widget front end is live, else its plain repr."""

from __future__ import annotations

from typing import Any

__all__ = ["display_job"]


def display_job(job: Any) -> None:
    from IPython.display import display

    from batchnb.views import frontend

    if frontend() == "widget":
        display(job.widget())
    else:
        display({"text/plain": repr(job)}, raw=True)
