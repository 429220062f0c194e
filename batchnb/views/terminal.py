"""A tqdm bar over Progress: rows, rows/s, ETA and failures, with a bounded refresh rate for logs."""

from __future__ import annotations

import sys

from batchnb.record.snapshot import Progress

__all__ = ["TerminalView"]


class TerminalView:
    def __init__(self, *, name: str, mininterval: float = 1.0) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=0, desc=name, unit=" rows", unit_scale=True, mininterval=mininterval, file=sys.stderr,
            dynamic_ncols=True, leave=True,
        )  # fmt: skip
        self._last: Progress | None = None

    def update(self, progress: Progress) -> None:
        bar = self._bar
        if bar.total != progress.rows_total:
            bar.total = progress.rows_total
        delta = progress.rows_done - bar.n
        postfix = f"chunks {progress.chunks_done}/{progress.chunks_total}"
        if progress.chunks_failed or progress.retries:
            postfix += f", failed {progress.chunks_failed}, retries {progress.retries}"
        bar.set_postfix_str(postfix, refresh=False)
        if delta > 0:
            bar.update(delta)
        self._last = progress

    def close(self) -> None:
        self._bar.refresh()
        self._bar.close()

    def finish(self, result, error: BaseException | None = None) -> None:
        if result is None:
            return
        print(f"{result.status}: {result.rows_in:,} rows, {result.anomalies:,} anomalies, "
              f"{result.chunks_failed} failed chunk(s) in {result.elapsed_s:.1f}s", file=sys.stderr)  # fmt: skip
