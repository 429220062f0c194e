"""Frozen job configuration: every option is validated here, once, at construction."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from batchnb.errors import ConfigError
from batchnb.formats import format_from_suffix
from batchnb.identity import callable_reference, import_callable, job_identity

if TYPE_CHECKING:
    from batchnb.engines.base import Engine

__all__ = ["Backoff", "InputFormat", "JobConfig", "OutputFormat", "Resources", "parse_memory"]

# The built-in formats, for type hints and documentation; plugins add names (bn.sources.register, the
# "batchnb.sources" and "batchnb.sinks" entry point groups), which `format=` and `output_format=` accept as well.
InputFormat = Literal["csv", "parquet", "json", "pickle", "hdf5", "feather"]
OutputFormat = Literal["parquet", "csv", "json", "feather", "hdf5", "pickle"]


CHUNK_SIZE_RANGE = (1_000, 1_000_000)
_PLUGIN_HINTS = {
    "format": "a plugin format is added with bn.sources.register(...) or the 'batchnb.sources' entry point group",
    "output_format": "a plugin output format is added with batchnb.sinks.register(...) or the 'batchnb.sinks' "
    "entry point group",
}


def _input_formats() -> list[str]:
    """The `format` choices the CLI and the form offer: built-ins, registrations and installed plugins."""
    from batchnb import sources

    return sources.names()


def _output_formats() -> list[str]:
    from batchnb import sinks

    return sinks.names()


LOCAL_ENGINES = ("sequential", "threads", "processes", "dask", "ray")

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def parse_memory(value: float | int | str, *, total: int | None = None) -> int:
    """Bytes from a fraction of RAM (0 < x <= 1), a byte count, or a string such as "8GB"."""
    if isinstance(value, bool):
        msg = f"`memory_limit` must be a fraction, a byte count or a string like '8GB', got {value!r}"
        raise ConfigError(msg)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        unit = match.group(2).upper() if match else ""
        if not match or unit not in _UNITS:
            msg = f"`memory_limit` {value!r} is not a size: write it like '8GB', '512MiB' or 0.5"
            raise ConfigError(msg)
        return int(float(match.group(1)) * _UNITS[unit])
    if isinstance(value, float) or (isinstance(value, int) and value == 1):
        if not 0 < value <= 1:
            msg = f"`memory_limit` as a fraction of RAM must be in (0, 1], got {value}"
            raise ConfigError(msg)
        if total is None:
            import psutil

            total = psutil.virtual_memory().total
        return int(total * value)
    if isinstance(value, int) and value > 1:
        return value
    msg = f"`memory_limit` must be a fraction in (0, 1], a byte count or a string like '8GB', got {value!r}"
    raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential retry delays, capped, with optional full jitter."""

    base: float = field(default=0.5, metadata={"help": "seconds before the first retry"})
    factor: float = field(default=2.0, metadata={"help": "each retry waits this many times longer"})
    max: float = field(default=60.0, metadata={"help": "longest wait between retries, seconds"})
    jitter: bool = field(default=True, metadata={"help": "wait a random part of the delay (full jitter)"})

    def __post_init__(self) -> None:
        for name in ("base", "factor", "max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"`backoff.{name}` must be a number of seconds, got {value!r}")
        if not isinstance(self.jitter, bool):
            raise ConfigError(f"`backoff.jitter` must be True or False, got {self.jitter!r}")
        if self.base < 0 or self.max < 0:
            raise ConfigError("`backoff` base and max must be >= 0 seconds")
        if self.factor < 1:
            raise ConfigError("`backoff.factor` must be >= 1 so that delays never shrink")

    def ceiling(self, attempt: int) -> float:
        """Largest delay before retry number `attempt` (1-based)."""
        return min(self.max, self.base * self.factor ** max(0, attempt - 1))

    def delay(self, attempt: int, rng: Callable[[], float] | None = None) -> float:
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        import random

        return ceiling * (rng or random.random)()


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Worker, memory and time budget of a job."""

    max_workers: int | None = field(default=None, metadata={"help": "workers (default: CPU count; 1 for sequential)"})
    memory_limit: float | int | str = field(default=0.8, metadata={"help": "fraction of RAM (0.8) or a size (8GB)"})
    chunk_timeout: float | None = field(default=None, metadata={"help": "seconds one chunk may take"})
    job_timeout: float | None = field(default=None, metadata={"help": "seconds the whole job may take"})

    def __post_init__(self) -> None:
        if self.max_workers is not None and (
            isinstance(self.max_workers, bool) or not isinstance(self.max_workers, int) or self.max_workers < 1
        ):
            msg = f"`max_workers` must be a positive integer or None, got {self.max_workers!r}"
            raise ConfigError(msg)
        parse_memory(self.memory_limit)
        for name in ("chunk_timeout", "job_timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                msg = f"`{name}` must be a positive number of seconds or None, got {value!r}"
                raise ConfigError(msg)

    def workers(self, engine: Engine) -> int:
        """Workers to start: `max_workers` (default: the CPU count), at most as many as the engine can use."""
        wanted = self.max_workers or os.cpu_count() or 1
        return min(wanted, engine.max_workers) if engine.max_workers is not None else wanted

    def memory_bytes(self) -> int:
        return parse_memory(self.memory_limit)


def _as_source(source: Any) -> str | tuple[str, ...]:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    if isinstance(source, Sequence) and not isinstance(source, bytes) and len(source) > 0:
        if all(isinstance(s, str | os.PathLike) for s in source):
            return tuple(os.fspath(s) for s in source)
    msg = f"`source` must be a path, a glob or a non-empty list of paths, got {source!r}"
    raise ConfigError(msg)


def _column_names(name: str, value: Any) -> tuple[str, ...] | None:
    """`columns`/`keep` as a tuple of names (one name alone is a list of one), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Sequence) or not all(isinstance(c, str) for c in value):
        raise ConfigError(f"`{name}` must be a list of column names or None, got {value!r}")
    if name == "columns" and not value:
        raise ConfigError("`columns` is empty: name at least one feature column, or pass None for all numeric")
    return tuple(value)


_Nested = TypeVar("_Nested", Backoff, Resources)


def _nested(name: str, kind: type[_Nested], value: Any) -> _Nested:
    """`backoff`/`resources` from an instance or a dict of its fields (a config file's table)."""
    if isinstance(value, Mapping):
        allowed = [f.name for f in dataclasses.fields(kind)]
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ConfigError(f"`{name}` has unknown option(s) {unknown}: expected some of {allowed}")
        return kind(**value)
    if not isinstance(value, kind):
        raise ConfigError(f"`{name}` must be a bn.{kind.__name__}, got {value!r}")
    return value


def _check_flag_rule(threshold: Any, contamination: Any) -> None:
    if threshold is not None and contamination is not None:
        raise ConfigError("give at most one of `threshold` and `contamination`")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        raise ConfigError(f"`threshold` must be a number, got {threshold!r}")
    if contamination is not None and (
        isinstance(contamination, bool) or not isinstance(contamination, int | float) or not 0 < contamination < 0.5
    ):
        raise ConfigError(f"`contamination` must be a fraction in (0, 0.5), got {contamination!r}")


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """Everything that defines a job; the widget form, the CLI and TOML files are generated from these fields."""

    source: str | tuple[str, ...] = field(
        metadata={"help": "input file, glob, list of files or a job's output directory"}
    )
    output: str = field(metadata={"help": "output directory: result parts and job state"})
    detector: Any = field(default="zscore", metadata={"help": "detector name or module:function"})
    columns: tuple[str, ...] | None = field(default=None, metadata={"help": "feature columns (default: every numeric)"})
    chunk_size: int = field(default=100_000, metadata={"help": "rows per chunk, 1_000 to 1_000_000"})
    engine: Any = field(default="threads", metadata={"help": "sequential, threads, processes, dask or ray"})
    format: str | None = field(
        default=None, metadata={"help": "input format when the suffix does not tell", "choices": _input_formats}
    )
    output_format: str = field(
        default="parquet", metadata={"help": "format of the result parts", "choices": _output_formats}
    )
    keep: tuple[str, ...] | None = field(
        default=None, metadata={"help": "input columns copied to the output (default: all)"}
    )
    threshold: float | None = field(default=None, metadata={"help": "flag rows scoring above this"})
    contamination: float | None = field(default=None, metadata={"help": "flag this fraction of rows, in (0, 0.5)"})
    fit_sample: int = field(default=100_000, metadata={"help": "rows used to fit the detector"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and randomized detectors"})
    retries: int = field(default=3, metadata={"help": "attempts after the first for a failing chunk"})
    backoff: Backoff = field(default_factory=Backoff, metadata={"help": "delays between retries"})
    resources: Resources = field(default_factory=Resources, metadata={"help": "worker, memory and time budget"})
    read_options: Mapping[str, Any] = field(default_factory=dict, metadata={"help": "options of the format reader"})
    allow_pickle: bool = field(
        default=False, metadata={"help": "read pickle/HDF5 inputs, which can run code: only files you trust"}
    )
    name: str | None = field(default=None, metadata={"help": "label shown in progress and reports"})

    def __post_init__(self) -> None:
        setter = object.__setattr__
        setter(self, "source", _as_source(self.source))
        if not isinstance(self.output, str | os.PathLike) or not os.fspath(self.output):
            raise ConfigError(f"`output` must be a directory path, got {self.output!r}")
        setter(self, "output", os.fspath(self.output))
        self._check_detector()
        setter(self, "columns", _column_names("columns", self.columns))
        setter(self, "keep", _column_names("keep", self.keep))
        self._check_int("chunk_size", *CHUNK_SIZE_RANGE)
        self._check_int("fit_sample", 2, 10**9)
        self._check_int("seed", 0, 2**32 - 1)
        self._check_int("retries", 0, 1000)
        self._check_engine()
        self._check_formats()
        self._check_output()
        _check_flag_rule(self.threshold, self.contamination)
        setter(self, "backoff", _nested("backoff", Backoff, self.backoff))
        setter(self, "resources", _nested("resources", Resources, self.resources))
        if not isinstance(self.read_options, Mapping):
            raise ConfigError(f"`read_options` must be a dict, got {self.read_options!r}")
        setter(self, "read_options", dict(self.read_options))
        self._check_read_options()
        if not isinstance(self.allow_pickle, bool):
            raise ConfigError("`allow_pickle` must be True or False")
        if self.name is None:
            from batchnb.place import output_name

            setter(self, "name", output_name(self.output) or "batchnb-job")

    def _check_output(self) -> None:
        """A local directory apart from the source (an output among the source's files would overwrite, or later
        re-read, what the job reads), or an object-store URL (never a local folder named `s3:`)."""
        url = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", self.output)
        if url:
            from batchnb.place import check_output_url

            check_output_url(self.output, url.group(1).lower(), self.output_format)
            return
        from batchnb import sinks
        from batchnb.driver.lock import check_overlap

        items = (self.source,) if isinstance(self.source, str) else self.source
        check_overlap(self.output, items, part=sinks.part_name(0, sinks.get(self.output_format)))

    def _check_int(self, name: str, low: int, high: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"`{name}` must be an integer, got {value!r}")
        if not low <= value <= high:
            hint = " (rows per chunk)" if name == "chunk_size" else ""
            raise ConfigError(f"`{name}` must be between {low:_} and {high:_}{hint}, got {value:_}")

    def _check_detector(self) -> None:
        from batchnb import detectors

        if isinstance(self.detector, str):
            if ":" in self.detector:
                object.__setattr__(self, "detector", import_callable(self.detector))
            else:
                detectors.get(self.detector)  # raises ConfigError listing the names
        elif not (isinstance(self.detector, detectors.Detector) or callable(self.detector)):
            raise ConfigError(
                f"`detector` must be a name from bn.list_detectors(), a Detector or a callable, got {self.detector!r}"
            )

    def _check_engine(self) -> None:
        from batchnb import engines

        if isinstance(self.engine, str):
            engines.get(self.engine)  # raises ConfigError listing the names
        elif not isinstance(self.engine, engines.EngineLike):
            raise ConfigError(f"`engine` must be one of {list(engines.names())} or an Engine, got {self.engine!r}")

    def _check_formats(self) -> None:
        """Built-in or plugin names, looked up in the registries (a plugin is read on the first unknown name)."""
        from batchnb import sinks, sources

        for name, registry in (("format", sources.REGISTRY), ("output_format", sinks.REGISTRY)):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                if not isinstance(value, str):
                    raise ConfigError(f"expected one of {registry.names()}")
                registry.get(value)
            except ConfigError as exc:
                msg = f"`{name}` {value!r} is not usable: {exc}; {_PLUGIN_HINTS[name]}"
                raise ConfigError(msg) from exc
        if self.format is None:
            paths = (self.source,) if isinstance(self.source, str) else self.source
            found = {format_from_suffix(p) for p in paths if Path(p).suffix}
            if None in found:
                bad = next(p for p in paths if Path(p).suffix and format_from_suffix(p) is None)
                msg = f"cannot tell the format of {bad!r} from its suffix: pass `format=` one of {sources.names()}"
                raise ConfigError(msg)
            if len(found) > 1:
                raise ConfigError(f"`source` mixes formats {sorted(f for f in found if f)}: one job reads one format")
            if found:
                object.__setattr__(self, "format", found.pop())

    def _check_read_options(self) -> None:
        """Each key the format does not honour, or a value of the wrong type, is refused by name now; a format
        known only once the files are opened checks them at plan()/run()."""
        if self.format is None:
            return
        from batchnb import sources

        sources.get(self.format).check_options(self.read_options)

    # --- round trip -------------------------------------------------------------------------
    @property
    def engine_name(self) -> str:
        return self.engine if isinstance(self.engine, str) else self.engine.name

    def detector_reference(self) -> str:
        if isinstance(self.detector, str):
            return self.detector
        name = getattr(self.detector, "name", None)
        from batchnb import detectors

        if isinstance(self.detector, detectors.Detector) and name in detectors.names():
            return name
        return callable_reference(self.detector)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (no None values) that `BatchJob.from_config` turns back into this job."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "detector":
                value = self.detector_reference()
            elif f.name == "engine":
                from batchnb import engines

                value = engines.to_dict(self.engine)
            elif isinstance(value, Backoff | Resources):
                value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
            elif isinstance(value, tuple):
                value = list(value)
            if value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}: expected some of {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("engine"), Mapping):
            from batchnb import engines

            data["engine"] = engines.from_dict(data["engine"])
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same job (see batchnb.identity); the engine, budget and retry policy may change."""
        return job_identity(self)

    def identity_hash(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()
