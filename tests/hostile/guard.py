"""The three checks of every hostile case: the payload did not run, nothing outside the output changed, and the
user got a clear answer (a success, or a `bn.BatchError`; a raw library error or a traceback is not one)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hostile import CliResult, Outcome, outcome, snapshot

__all__ = ["Guard", "check_cli"]

_RAW_ERROR = re.compile(r"error: [A-Za-z_.]*(Error|Exception|Panic\w*|Interrupt)\b:")


@dataclass
class Guard:
    """Watches `roots` (all but `out` and `allowed`) and a marker; `check()` after every reader call."""

    roots: tuple[Path, ...]
    out: Path
    marker: Path
    allowed: tuple[Path, ...] = ()
    before: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.before = self._take()

    def _take(self) -> dict:
        exclude = (self.out, *self.allowed)
        return {str(root): snapshot(root, exclude=exclude) for root in self.roots}

    def changes(self) -> list[str]:
        after, found = self._take(), []
        for root, entries in self.before.items():
            now = after[root]
            found += [f"{root}/{k}: removed" for k in entries.keys() - now.keys()]
            found += [f"{root}/{k}: created" for k in now.keys() - entries.keys()]
            found += [f"{root}/{k}: changed" for k in entries.keys() & now.keys() if entries[k] != now[k]]
        return sorted(found)

    def problems(self, what: str) -> list[str]:
        """Empty when `what` left no trace; else one line per trace (the marker, each file changed)."""
        found = []
        if self.marker.exists():
            found.append(f"{what}: the payload ran (marker {self.marker.name} exists)")
            self.marker.unlink()
        changed = [c for c in self.changes() if not c.endswith(f"/{self.marker.name}: created")]
        if changed:
            found.append(f"{what}: files outside the output changed: {changed[:6]}")
            self.before = self._take()  # report each reader's own changes
        return found

    def check(self, what: str) -> None:
        found = self.problems(what)
        assert not found, "\n".join(found)


def check_cli(result: CliResult, what: str) -> list[str]:
    """A CLI answer is clear when it exits 0, 1 or 2 without a traceback or a raw library exception name."""
    found = []
    if result.rc not in (0, 1, 2):
        found.append(f"{what}: exit code {result.rc}")
    if "Traceback" in result.err or "Traceback" in result.out:
        found.append(f"{what}: printed a traceback: {result.err[-300:]}")
    if result.rc == 2 and _RAW_ERROR.search(result.err):
        found.append(f"{what}: not a batchnb error: {result.err.strip()[:300]}")
    return found


def clear(call, what: str) -> tuple[Outcome | None, list[str]]:
    """`outcome(call)`, turning an unclear error into a problem line instead of stopping the case."""
    try:
        return outcome(call), []
    except AssertionError as exc:
        return None, [f"{what}: {exc}"]


def skip_unless(condition: bool, reason: str) -> None:
    if not condition:
        pytest.skip(reason)
