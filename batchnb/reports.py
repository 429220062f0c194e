"""Reports: papermill runs the packaged `batchnb/templates/report.ipynb` over a job's record, nbconvert turns it into HTML.

The template reads only the job's state (`output/_batchnb/state.sqlite`) and its part files, through the
loaders below, so a report can be made from any process: while the job runs, after it failed, or long
after it ended. Nothing here writes to the state.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from batchnb.errors import ConfigError, JobStateError
from batchnb.place import absolute, home, output_name
from batchnb.record.snapshot import Progress
from batchnb.record.status import JobStatus
from batchnb.record.store import JobState, state_path
from batchnb.result import JobResult, VerifyReport, read_output

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

__all__ = [
    "ReportData",
    "load",
    "make_report",
    "score_histogram",
    "template_path",
    "top_anomalies",
]

_TEMPLATE = Path(__file__).resolve().parent / "templates" / "report.ipynb"  # package data, in every install
_TERMINAL = {s.value for s in JobStatus if s.is_terminal}


def template_path() -> Path:
    """The report template shipped inside the package (`batchnb/templates/report.ipynb`)."""
    if not _TEMPLATE.is_file():
        msg = (
            f"the report template {_TEMPLATE} is missing from this installation of batchnb: reinstall it "
            "(`pip install --force-reinstall batchnb`), or pass `template=` the path of a copy of the template"
        )
        raise ConfigError(msg)
    return _TEMPLATE


# --------------------------------------------------------------------------------------------------
# Running the template
# --------------------------------------------------------------------------------------------------
def make_report(
    output: str | Path,
    path: str | Path | None = None,
    *,
    html: bool = True,
    kernel_name: str | None = None,
    parameters: dict[str, Any] | None = None,
    template: str | Path | None = None,
    timeout: float | None = 900,
    allow_pickle: bool = False,
) -> Path:
    """Execute the report template over the job in `output`; return the executed notebook's path.

    `path` defaults to `output/report.ipynb` (an object-store output's: in its local home, `place.home`); with
    `html=True` the HTML export lies beside it with the same name. `kernel_name` is the Jupyter kernel that runs the template (the notebook's own, "python3", when
    None: it must have batchnb installed). `parameters` override the template's parameter cell.
    Pickle and HDF5 parts are read (scores, top rows, row counts) only with `allow_pickle=True`.
    Raises JobStateError when `output` holds no job, and papermill's PapermillExecutionError when a cell fails
    (the partly executed notebook is at `path` then).
    """
    url, output = os.fspath(output), Path(home(output))  # a report of an object-store output lies in its home
    if not state_path(url).exists():
        msg = f"{url!r} holds no batchnb job (no {state_path(url)}): check the output directory"
        raise JobStateError(msg)
    path = Path(path) if path is not None else output / "report.ipynb"
    if path.suffix != ".ipynb":
        raise ConfigError(f"`path` {str(path)!r} must end in .ipynb (the HTML is written beside it)")
    _check_parts_readable(url, allow_pickle)
    template = Path(template) if template is not None else template_path()
    try:
        import papermill
    except ImportError as exc:
        raise ConfigError("reports need papermill and nbconvert, which batchnb depends on: reinstall batchnb") from exc
    _check_kernel(kernel_name or "python3")
    failed = None
    with _fresh_file(path, where="into the output" if path == output / "report.ipynb" else "to `path`") as tmp:
        try:
            papermill.execute_notebook(
                str(template),
                str(tmp),
                parameters={"output_dir": absolute(url), "allow_pickle": allow_pickle, **(parameters or {})},
                kernel_name=kernel_name,
                progress_bar=False,
                cwd=str(path.parent),
                execution_timeout=timeout,
                # The kernel's own start-up warnings (ipykernel 7 warns about unencrypted local TCP) are noise in a
                # report run; errors still show, and a failing cell still raises.
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        except BaseException as exc:
            if not tmp.stat().st_size:
                raise
            failed = exc  # a failed cell is kept and exported too: the HTML then shows where and why
    if html:
        export_html(path)
    if failed is not None:
        raise failed
    return path


@contextlib.contextmanager
def _fresh_file(path: Path, *, where: str) -> Iterator[Path]:
    """A new empty file beside `path`, renamed onto it when the block ends without error."""
    from batchnb.files import atomic_file

    with contextlib.ExitStack() as stack:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = stack.enter_context(atomic_file(path, prefix=f".{path.stem}.tmp-", suffix=path.suffix))
        except OSError as exc:
            msg = (
                f"cannot write the report {where} {str(path)!r} ({type(exc).__name__}: {exc}): pass `path=` "
                "(batchnb report --path) a place you can write to, such as a notebook in your home directory"
            )
            raise ConfigError(msg) from exc
        yield tmp


def _check_parts_readable(output: str, allow_pickle: bool) -> None:
    """Before any file is written: a report of pickle/HDF5 parts needs the reader's allow_pickle."""
    from batchnb import sinks

    with JobState.open(output) as state:
        output_format = (state.get("config", {}) or {}).get("output_format", "parquet")
    sinks.check_readable(sinks.get(output_format), allow_pickle=allow_pickle, output=output)


def _check_kernel(name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    installed = sorted(KernelSpecManager().find_kernel_specs())
    if name not in installed:
        msg = (
            f"Jupyter kernel {name!r} is not installed (installed: {installed}): pick one of them (`kernel_name=`, "
            "`batchnb report --kernel`), or install one with `python -m ipykernel install --sys-prefix --name NAME` "
            "run by the Python that has batchnb"
        )
        raise ConfigError(msg)


def export_html(notebook: str | Path) -> Path:
    """Write `notebook` as standalone HTML beside it (code hidden: a report shows results) and return its path."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    body, _ = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    ).from_notebook_node(nb)
    target = notebook.with_suffix(".html")
    with _fresh_file(target, where="to") as tmp:
        tmp.write_text(body, encoding="utf-8")
    return target


# --------------------------------------------------------------------------------------------------
# What the template reads
# --------------------------------------------------------------------------------------------------
_CHUNK_COLUMNS = {
    "chunk": pl.Int64, "status": pl.String, "attempts": pl.Int64, "row_start": pl.Int64, "row_stop": pl.Int64,
    "rows_in": pl.Int64, "rows_out": pl.Int64, "anomalies": pl.Int64, "started": pl.Float64,
    "finished": pl.Float64, "seconds": pl.Float64, "timings": pl.String, "worker": pl.String,
}  # fmt: skip
_TIMELINE_COLUMNS = {
    "at": pl.Float64, "rows_done": pl.Int64, "chunks_done": pl.Int64, "rows_per_s": pl.Float64,
    "cpu_percent": pl.Float64, "rss_bytes": pl.Int64,
}  # fmt: skip
_ATTEMPT_COLUMNS = {
    "chunk": pl.Int64, "attempt": pl.Int64, "at": pl.Float64, "type": pl.String, "message": pl.String,
    "traceback": pl.String, "delay": pl.Float64,
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ReportData:
    """One consistent read of a job's record, as the report shows it."""

    output: str
    status: str  # from the live snapshot: a killed driver reads "interrupted"
    progress: Progress
    result: JobResult
    config: dict[str, Any]
    chunks: pl.DataFrame  # one row per planned chunk, timings split into columns
    timeline: pl.DataFrame  # the driver's samples: rows done, rows/s, CPU %, RSS
    attempts: pl.DataFrame  # every failed attempt, retried or not
    cutoff: float | None  # scores strictly above it are anomalies; None for a callable detector
    made_at: float

    @property
    def finished(self) -> bool:
        return self.status in _TERMINAL

    @property
    def elapsed_s(self) -> float:
        """Run time over every run of the job; so far, while it runs."""
        return self.result.elapsed_s if self.result.status in _TERMINAL else self.progress.elapsed_s

    @property
    def rows_per_s(self) -> float:
        return self.result.rows_in / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> list[tuple[str, str]]:
        """(label, value) rows of the summary table, numbers with thousands separators."""
        r, p = self.result, self.progress
        rows = [
            ("job", self.config.get("name") or output_name(self.output)),
            ("status", self.status + ("" if self.finished else f" (report made while the job runs: {p.percent:.1f}% done)")),
            ("rows in", f"{r.rows_in:,}" + (f" of {p.rows_total:,}" if p.rows_total else "")),
            ("rows out", f"{r.rows_out:,}"),
            ("anomalies", f"{r.anomalies:,}" + (f" ({r.anomalies / r.rows_out:.3%} of rows out)" if r.rows_out else "")),
            ("chunks", f"{r.chunks_done:,} done, {r.chunks_failed:,} failed, {r.chunks_skipped:,} skipped "
                       f"of {r.chunks_total:,}"),
            ("retries", f"{r.retries:,}"),
            ("elapsed", f"{self.elapsed_s:,.2f} s"),
            ("throughput", f"{self.rows_per_s:,.0f} rows/s"),
            ("engine", str(self.config.get("engine", "not recorded"))),
            ("detector", str(self.config.get("detector", "a function"))
             + (f", flags score > {self.cutoff:.4g}" if self.cutoff is not None else "")),
            ("source", str(self.config.get("source", "?"))),
            ("output", absolute(self.output)),
        ]  # fmt: skip
        if r.reason:
            rows.append(("reason", r.reason))
        if p.last_error and not self.finished:
            rows.append(("last error", p.last_error))
        return rows


def _rows(state: JobState, table: str, columns: Mapping[str, PolarsDataType]) -> pl.DataFrame:
    """A table of the record; empty while a job that is just starting has not created it."""
    rows = state.report_table(table)
    try:
        return pl.DataFrame(rows, schema=columns, orient="row")
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:  # bytes or text where numbers belong
        msg = (
            f"the job state {str(state.path)!r} holds values batchnb does not write ({type(exc).__name__}): it was "
            "damaged or not written by batchnb; use another output directory"
        )
        raise JobStateError(msg) from exc


def _split_timings(chunks: pl.DataFrame) -> pl.DataFrame:
    """The `timings` JSON of each chunk as float columns (read, score, write, checksum, ...)."""
    parsed = [json.loads(t) if t else {} for t in chunks["timings"].to_list()]
    keys = list(dict.fromkeys(k for d in parsed for k in d))
    extra = pl.DataFrame({k: [d.get(k) for d in parsed] for k in keys}, schema={k: pl.Float64 for k in keys})
    return pl.concat([chunks.drop("timings"), extra], how="horizontal")


def _cutoff(state: JobState) -> float | None:
    """The stored JSON number; None for a callable detector, or a state without one (nothing is unpickled)."""
    from batchnb.scoring import stored_cutoff

    return stored_cutoff(state.get("detector_fit"))


def load(output: str | Path) -> ReportData:
    """Read the job's record in `output` (read-only; safe while the driver writes)."""
    from batchnb.record.snapshot import status

    output = str(output)
    progress = status(output)
    result = JobResult.from_state(output)
    with JobState.open(output) as state:
        config = state.get("config", {}) or {}
        cutoff = _cutoff(state)
        chunks = _rows(state, "chunks", _CHUNK_COLUMNS)
        timeline = _rows(state, "timeline", _TIMELINE_COLUMNS)
        attempts = _rows(state, "attempts", _ATTEMPT_COLUMNS)
    return ReportData(
        output=output, status=progress.status, progress=progress,
        result=result, config=config, chunks=_split_timings(chunks), timeline=timeline, attempts=attempts,
        cutoff=cutoff, made_at=time.time(),
    )  # fmt: skip


def _scores(output: str | Path, allow_pickle: bool) -> pl.LazyFrame | None:
    frame = read_output(output, allow_pickle=allow_pickle)
    if "anomaly_score" not in frame.collect_schema().names():
        return None
    score = pl.col("score")
    return frame.select(pl.col("anomaly_score").cast(pl.Float64).alias("score")).filter(
        score.is_not_null() & score.is_finite()
    )


def score_histogram(
    output: str | Path, *, bins: int = 60, cutoff: float | None = None, allow_pickle: bool = False
) -> tuple[list[float], list[int], int] | None:
    """(bin edges, counts, rows above the last edge) of `anomaly_score` over every done part, or None.

    Computed in a streaming pass, so it works on outputs larger than memory. The range stops at the 99.9th
    percentile (or just past the cutoff) so the bulk of the scores is not squeezed into one bin by a few
    extreme ones; the rest is counted as overflow.
    """
    scores = _scores(output, allow_pickle)
    if scores is None:
        return None
    stats = scores.select(
        pl.len().alias("n"), pl.col("score").min().alias("lo"), pl.col("score").max().alias("hi"),
        pl.col("score").quantile(0.999).alias("q"),
    ).collect(engine="streaming").row(0, named=True)  # fmt: skip
    if not stats["n"]:
        return [], [], 0
    lo, hi = stats["lo"], stats["hi"]
    top = max(stats["q"], (cutoff * 1.25 if cutoff is not None and cutoff > 0 else lo))
    top = min(hi, top) if top > lo else hi
    if top <= lo:
        return [lo, lo + 1.0], [stats["n"]], 0
    width = (top - lo) / bins
    counts = (
        scores.filter(pl.col("score") <= top)
        .select(((pl.col("score") - lo) / width).floor().clip(0, bins - 1).cast(pl.Int64).alias("bin"))
        .group_by("bin")
        .len()
        .collect(engine="streaming")
    )
    dense = [0] * bins
    for b, n in counts.iter_rows():
        dense[b] = n
    edges = [lo + i * width for i in range(bins + 1)]
    return edges, dense, int(stats["n"] - sum(dense))


def top_anomalies(
    output: str | Path, n: int = 20, chunks: pl.DataFrame | None = None, *, allow_pickle: bool = False
) -> pl.DataFrame | None:
    """The `n` rows with the highest `anomaly_score`, or None when the output has no scores.

    With `chunks` (ReportData.chunks) each row is named by its chunk and, when the detector writes one
    output row per input row, its input row number.
    """
    frame = read_output(output, allow_pickle=allow_pickle)
    if "anomaly_score" not in frame.collect_schema().names():
        return None
    top = (
        frame.with_row_index("_pos")
        .drop_nulls("anomaly_score")
        .top_k(n, by="anomaly_score")
        .sort("anomaly_score", descending=True)
        .collect()
    )
    if chunks is None or chunks.is_empty():
        return top.drop("_pos")
    done = chunks.filter(pl.col("status") == "done").sort("chunk")
    ends = done["rows_out"].cum_sum().to_list()
    starts = [0, *ends[:-1]]
    located = []
    for pos in top["_pos"].to_list():
        i = bisect.bisect_right(ends, pos)
        if i >= len(ends):
            located.append((None, None))
            continue
        row = done.row(i, named=True)
        same_rows = row["rows_in"] == row["rows_out"]
        located.append((row["chunk"], row["row_start"] + pos - starts[i] if same_rows else None))
    names = pl.DataFrame(located, schema={"chunk": pl.Int64, "input_row": pl.Int64}, orient="row")
    names = names.select([c for c in names.columns if c not in top.columns])
    return pl.concat([names, top.drop("_pos")], how="horizontal")


def verify_report(output: str | Path, *, allow_pickle: bool = False) -> VerifyReport:
    from batchnb.verify import verify

    return verify(output, allow_pickle=allow_pickle)
