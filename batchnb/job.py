"""BatchJob: the facade a notebook holds. It validates a `JobConfig` and hands it to the driver, never itself."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Never

from batchnb.attach import Attached, start_detached
from batchnb.config import Backoff, InputFormat, JobConfig, OutputFormat, Resources
from batchnb.driver.background import Passes
from batchnb.driver.lock import lock_holder
from batchnb.driver.prepare import plan as plan_job
from batchnb.driver.run import skip_chunks
from batchnb.errors import ConfigError, JobStateError
from batchnb.plan import Plan
from batchnb.record.snapshot import Progress, status
from batchnb.result import JobResult, VerifyReport
from batchnb.verify import verify
from batchnb.views.display import InNotebook, shown_in

if TYPE_CHECKING:
    from batchnb.detectors import Detector
    from batchnb.engines import Engine

__all__ = ["BatchJob", "load_config_file"]

ProgressMode = Literal["auto", "widget", "log", "text"] | None

_OPTIONS = {f.name: f for f in dataclasses.fields(JobConfig)}
# `JobConfig`'s defaults, read once so that `BatchJob`'s signature shows them without restating them. Those made
# by a factory are frozen dataclasses (Backoff, Resources), safe to share; read_options' dict is not shared.
_DEFAULT: dict[str, Any] = {
    name: field.default_factory() if callable(field.default_factory) else field.default
    for name, field in _OPTIONS.items()
    if name != "read_options" and (field.default is not dataclasses.MISSING or callable(field.default_factory))
}


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The options in a .json, .toml or .yaml file: a table of option names, or a ConfigError saying why not."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    kind = {".json": "JSON", ".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}.get(suffix)
    if kind is None:
        raise ConfigError(f"config file {str(path)!r}: expected a .json, .toml or .yaml file")
    if kind == "YAML":
        try:
            import yaml
        except ImportError as exc:
            raise ConfigError(f"config file {str(path)!r}: reading YAML needs PyYAML (pip install pyyaml)") from exc
    try:
        text = path.read_text(encoding="utf-8")
        if kind == "JSON":
            data = json.loads(text)
        elif kind == "TOML":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as exc:  # OSError, UnicodeDecodeError, each parser's own error
        raise ConfigError(f"config file {str(path)!r} is not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        msg = f"config file {str(path)!r} holds a {type(data).__name__}; it must hold a table of options such as `source` and `output`"
        raise ConfigError(msg)
    return data


class BatchJob(InNotebook):
    """A batch job over a dataset larger than memory: chunked, checkpointed, resumable.

    Only `source` and `output` are required. Construction validates every option at once (`ConfigError`) and
    opens nothing, so a source that a pipeline step has yet to write is fine; `run()`, `start()` and `plan()`
    open it. Every option is keyword-only and has the default of the `JobConfig` field of the same name.

    Parameters
    ----------
    source
        A path, a glob, or a list of paths: one dataset, its files in sorted order. Another `BatchJob` reads
        that job's output.
    output
        Directory of the result parts and the job state; a second run with the same options resumes from it.
    detector
        A name from `bn.list_detectors()`, a `Detector`, a DataFrame -> DataFrame callable, or "module:function".
    columns
        Feature columns; None scores every numeric column.
    chunk_size
        Rows per chunk, 1_000 to 1_000_000.
    engine
        "sequential", "threads", "processes", "dask", "ray", or an `Engine` such as
        `bn.engines.DaskEngine(address=...)`. May change between runs of the same job.
    format
        Input format when the suffix does not tell: "csv", "parquet", "json", "pickle", "hdf5" or "feather".
    output_format
        Format of the result parts: "parquet", "csv", "json", "feather", "hdf5" or "pickle".
    keep
        Input columns copied to the output beside the scores; None keeps them all.
    threshold
        Flag rows whose score is above this. Give at most one of `threshold` and `contamination`; with
        neither, the detector's own rule applies.
    contamination
        Flag this fraction of rows, in (0, 0.5), estimated on the fit sample.
    fit_sample
        Rows sampled (with `seed`) to fit the detector: the same sample whatever the engine and chunk size.
    seed
        Seed for sampling and randomized detectors.
    retries
        Attempts after the first for a failing chunk, waiting `backoff` between them.
    backoff
        `bn.Backoff` or a dict of its fields: exponential delays between retries.
    resources
        `bn.Resources` or a dict of its fields: workers, memory limit, chunk and job timeouts.
    read_options
        Options of the format reader (a CSV `separator`, an HDF5 `key`); None passes none.
    allow_pickle
        Read pickle and HDF5 inputs and parts, which can run code written into the file: only files you trust.
    name
        Label shown in progress and reports; None uses the output directory's name.
    **unknown
        None: a misspelt option is a `ConfigError` naming the valid ones, not Python's `TypeError`.
    """

    def __init__(
        self,
        source: str | os.PathLike | Iterable[str | os.PathLike] | BatchJob,
        output: str | os.PathLike,
        *,
        detector: str | Detector | Callable[..., Any] = _DEFAULT["detector"],
        columns: Iterable[str] | None = _DEFAULT["columns"],
        chunk_size: int = _DEFAULT["chunk_size"],
        engine: str | Engine = _DEFAULT["engine"],
        format: InputFormat | None = _DEFAULT["format"],
        output_format: OutputFormat = _DEFAULT["output_format"],
        keep: Iterable[str] | None = _DEFAULT["keep"],
        threshold: float | None = _DEFAULT["threshold"],
        contamination: float | None = _DEFAULT["contamination"],
        fit_sample: int = _DEFAULT["fit_sample"],
        seed: int = _DEFAULT["seed"],
        retries: int = _DEFAULT["retries"],
        backoff: Backoff | Mapping[str, Any] = _DEFAULT["backoff"],
        resources: Resources | Mapping[str, Any] = _DEFAULT["resources"],
        read_options: Mapping[str, Any] | None = None,
        allow_pickle: bool = _DEFAULT["allow_pickle"],
        name: str | None = _DEFAULT["name"],
        **unknown: Never,
    ) -> None:
        options = {key: value for key, value in locals().items() if key in _OPTIONS}  # every named option
        if read_options is None:
            del options["read_options"]
        if isinstance(source, BatchJob):
            source = source.output
        if not isinstance(source, str | os.PathLike) and isinstance(source, Iterable):
            source = tuple(source)
        self.config = JobConfig.from_dict({**options, "source": source, **unknown})
        self._passes = Passes()
        self._progress_shown_in: int | None = None  # the cell whose output shows a start()ed run's live view
        self._detached: Attached | None = None  # the view following a start(detach=True)ed driver

    @classmethod
    def from_config(cls, config: dict[str, Any] | str | os.PathLike) -> BatchJob:
        data = dict(config) if isinstance(config, dict) else load_config_file(config)
        for key in ("source", "output"):
            if key not in data:
                raise ConfigError(f"config has no `{key}`: it is required")
        return cls(**data)

    @property
    def output(self) -> str:
        return self.config.output

    def __repr__(self) -> str:
        c = self.config
        try:
            detector = c.detector_reference()
        except ConfigError:  # a notebook function has no importable name, but it has a name
            detector = getattr(c.detector, "__qualname__", type(c.detector).__name__)
        return f"BatchJob({c.source!r}, {c.output!r}, detector={detector!r}, chunk_size={c.chunk_size}, engine={c.engine_name!r})"

    def plan(self) -> Plan:
        """The chunk plan, its memory estimates, recommendations and warnings, without running anything."""
        return plan_job(self.config)

    # --- running -----------------------------------------------------------------------------------
    def run(self, progress: ProgressMode = "auto", restart: bool = False) -> JobResult:
        """Run to the end (resuming from the checkpoint when `output` holds this job) and return the result.

        With the live widget, the job runs on a helper thread while this call waits: interrupting the kernel
        (the stop button) then cancels the job cleanly, keeping finished parts, before the interrupt propagates.
        """
        self._passes.cancel.clear()
        view = self._view(progress)
        if not getattr(view, "interactive", False):
            return self._passes.run(self.config, view, restart=restart)
        self._passes.launch(self.config, view, restart=restart)
        return self._passes.wait_interruptibly(self.config.name)

    def start(self, progress: ProgressMode = "auto", restart: bool = False, *, detach: bool = False) -> BatchJob:
        """Run in a background thread so the notebook stays usable; `wait()` returns the result. With `detach`,
        the driver is its own process, which outlives this kernel; `bn.attach(output)` follows it from any other.
        The view is made here, in the caller's thread, so that it shows in the cell that called `start()`."""
        if self._passes.running():
            raise JobStateError(f"job {self.config.name!r} is already running: wait() for it or cancel() it")
        if detach:
            self._detached = start_detached(self.config, progress, restart=restart)
            self._progress_shown_in = shown_in(self._detached.view)
            return self
        self._passes.cancel.clear()
        view = self._view(progress)
        self._passes.launch(self.config, view, restart=restart)
        self._progress_shown_in, self._detached = shown_in(view), None  # wait() and cancel() follow this run
        return self

    def running(self) -> bool:
        """True while a `start()`ed run goes on (in this process, or its detached driver)."""
        return self._passes.running() or (self._detached is not None and lock_holder(self.output) is not None)

    def _view(self, progress: ProgressMode):
        from batchnb.views import make_view

        return make_view(
            progress, name=self.config.name, output=self.output, on_cancel=self.cancel,
            on_retry=lambda view: self._passes.launch(self.config, view, only_failed=True),
        )  # fmt: skip

    def wait(self, timeout: float | None = None) -> JobResult:
        if self._detached is not None and not self._passes.running():
            return self._detached.wait(timeout)
        return self._passes.wait(self.config.name, timeout)

    def cancel(self) -> None:
        """Stop submitting chunks; finished parts stay and a later `run()` resumes."""
        self._passes.cancel.set()
        if self._detached is not None:
            self._detached.cancel()

    def retry_failed(self, progress: ProgressMode = "auto") -> JobResult:
        """Run only the failed chunks again (a fresh retry budget) and return the whole job's result."""
        self._passes.cancel.clear()
        return self._passes.run(self.config, self._view(progress), only_failed=True)

    def skip(self, chunk_ids: Iterable[int]) -> None:
        """Mark chunks skipped so the job can succeed without them."""
        skip_chunks(self.output, chunk_ids)

    # --- looking at it -------------------------------------------------------------------------------
    def status(self) -> Progress:
        return status(self.output, missing_ok=True)

    def result(self) -> JobResult:
        return JobResult.from_state(self.output, allow_pickle=self.config.allow_pickle)

    def read(self):
        return self.result().read()

    def verify(self) -> VerifyReport:
        return verify(self.output, allow_pickle=self.config.allow_pickle)

    def report(
        self, path: str | os.PathLike | None = None, html: bool = True, *, kernel_name: str | None = None
    ) -> Path:
        """Execute the report template (batchnb/templates/report.ipynb) over this job's state with papermill; the HTML lies beside it.

        `path` defaults to `output/report.ipynb`. Works while the job runs (the report shows its state so far).
        """
        from batchnb.reports import make_report

        path = None if path is None else Path(path)
        return make_report(self.output, path, html=html, kernel_name=kernel_name, allow_pickle=self.config.allow_pickle)
