"""A third-party source format and sink, defined here as a plugin author would, run end to end.

`bn.sources.register` and `batchnb.sinks.register` make their names usable as `format=` and `output_format=`:
checked at construction, planned, read by the workers (sequential and spawned processes, which never saw the
registration), written as parts, verified, read back and resumed.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pytest
from conftest import run_job

import batchnb as bn
from batchnb import sinks, sources
from batchnb.sources.dataset import ChunkSpec, DatasetInfo, Piece

ROWS = 3_500


class PipeFormat:
    """Pipe-separated text with a header line: one file, chunks are row ranges counted from its lines."""

    name: ClassVar[str] = "pipes"
    options: ClassVar[dict[str, Any]] = {}

    @classmethod
    def check_options(cls, read_options: Mapping[str, Any]) -> None:
        if read_options:
            raise bn.ConfigError(f"`read_options` {sorted(read_options)} are not supported for pipes sources")

    def inspect(self, paths: tuple[str, ...], read_options: dict[str, Any], **_: Any) -> DatasetInfo:
        (path,) = paths
        frame = pl.read_csv(path, separator="|")
        return DatasetInfo(
            format=self.name,
            paths=paths,
            schema={k: str(v) for k, v in frame.schema.items()},
            read_options=dict(read_options),
            total_rows=frame.height,
            total_bytes=os.path.getsize(path),
        )

    def plan(self, info: DatasetInfo, chunk_size: int) -> tuple[ChunkSpec, ...]:
        starts = range(0, info.total_rows, chunk_size)
        return tuple(
            ChunkSpec(
                index=i,
                pieces=(Piece(path=info.paths[0], start=start, stop=min(start + chunk_size, info.total_rows)),),
                rows=(start, min(start + chunk_size, info.total_rows)),
                nbytes=0,
            )
            for i, start in enumerate(starts)
        )

    def read(self, info: DatasetInfo, spec: ChunkSpec) -> pl.DataFrame:
        (piece,) = spec.pieces
        return pl.read_csv(piece.path, separator="|").slice(piece.start, piece.stop - piece.start)

    def sample(self, info: DatasetInfo, n: int, seed: int, columns: Sequence[str] | None = None) -> pl.DataFrame:
        frame = pl.read_csv(info.paths[0], separator="|").head(n)
        return frame if columns is None else frame.select(columns)

    def locality(self, info: DatasetInfo, spec: ChunkSpec) -> Hashable | None:
        return None


def write_pipes(frame: pl.DataFrame, path: str) -> None:
    frame.write_csv(path, separator="|")


def scan_pipes(paths: list[str], schema: pl.Schema | None) -> pl.LazyFrame:
    return pl.scan_csv(paths, separator="|", schema=schema)


PIPE_SINK = sinks.Sink("pipes", ".psv", write_pipes, scan_pipes)


@pytest.fixture
def plugins(monkeypatch):
    """The two plugins registered for one test (the registries are restored afterwards)."""
    monkeypatch.setattr(sources.REGISTRY, "_entries", dict(sources.REGISTRY._entries))
    monkeypatch.setattr(sinks.REGISTRY, "_entries", dict(sinks.REGISTRY._entries))
    sources.register(PipeFormat())
    sinks.register(PIPE_SINK)


@pytest.fixture
def data(tmp_path) -> tuple[Path, pl.DataFrame]:
    frame = pl.DataFrame({"id": range(ROWS), "x": [float(i % 97) for i in range(ROWS)]})
    frame = frame.with_columns(pl.when(pl.col("id") == 1_234).then(1e6).otherwise(pl.col("x")).alias("x"))
    path = tmp_path / "data.txt"
    write_pipes(frame, str(path))
    return path, frame


@pytest.mark.parametrize("engine", ["sequential", "processes"])
def test_plugin_format_and_sink_run_verify_and_resume(plugins, data, tmp_path, engine):
    path, frame = data
    out = tmp_path / "out"
    options: dict[str, Any] = dict(format="pipes", output_format="pipes", chunk_size=1_000, engine=engine)
    result = run_job(path, out, **options)
    assert (result.status, result.chunks_done, result.rows_out) == ("succeeded", 4, ROWS)
    parts = sorted(p.name for p in out.glob("part-*"))
    assert parts == [f"part-{i:06d}.psv" for i in range(4)]
    assert pl.read_csv(out / parts[0], separator="|").columns == ["id", "x", "anomaly_score", "is_anomaly"]

    got = result.read().collect()
    assert got["id"].to_list() == frame["id"].to_list()
    assert got.schema["anomaly_score"] == pl.Float64 and got.schema["is_anomaly"] == pl.Boolean
    assert got.filter(pl.col("is_anomaly"))["id"].to_list() == [1_234]

    job = bn.BatchJob(path, out, **options)
    assert job.verify().ok
    (out / "part-000002.psv").unlink()
    resumed = run_job(path, out, **options)  # the same job: only the missing part is written again
    assert (resumed.status, resumed.rows_out) == ("succeeded", ROWS)
    assert sorted(p.name for p in out.glob("part-*")) == parts
    assert resumed.read().collect().equals(got)
    assert job.verify().ok


def test_unknown_format_names_list_the_registered_plugins(plugins, tmp_path):
    with pytest.raises(bn.ConfigError, match=r"`format` 'pipez'.*'parquet'.*'pipes'.*bn.sources.register"):
        bn.BatchJob(tmp_path / "d.txt", tmp_path / "out", format="pipez")
    with pytest.raises(bn.ConfigError, match=r"`output_format` 'xls'.*'parquet'.*'pipes'.*batchnb.sinks"):
        bn.BatchJob(tmp_path / "d.txt", tmp_path / "out", format="pipes", output_format="xls")
    config = bn.BatchJob(tmp_path / "d.txt", tmp_path / "out", format="pipes", output_format="pipes").config
    assert (config.format, config.output_format) == ("pipes", "pipes")


def test_a_sink_extension_must_be_a_plain_suffix():
    with pytest.raises(bn.ConfigError, match=r"`extension` '/../x' must be a dot and 1 to 16 letters or digits"):
        sinks.Sink("bad", "/../x", write_pipes, scan_pipes)
    with pytest.raises(bn.ConfigError, match=r"must be a batchnb\.sinks\.Sink"):
        sinks.REGISTRY.register("bad", object())


def test_entry_point_format_and_sink_are_accepted_and_run(tmp_path, monkeypatch, data):
    """Installed plugins: entry points in "batchnb.sources" and "batchnb.sinks", read on the first unknown name."""
    (tmp_path / "pipes_plugin.py").write_text(
        "from test_plugin_formats import PIPE_SINK, PipeFormat\n\nfmt = PipeFormat()\nsink = PIPE_SINK\n"
    )
    dist = tmp_path / "batchnb_pipes-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: batchnb-pipes\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[batchnb.sources]\npipes = pipes_plugin:fmt\n\n[batchnb.sinks]\npipes = pipes_plugin:sink\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for registry in (sources.REGISTRY, sinks.REGISTRY):  # read the groups again, as a new process would
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_plugins_read", False)
    path, frame = data
    result = run_job(path, tmp_path / "out", format="pipes", output_format="pipes", engine="sequential")
    assert (result.status, result.rows_out) == ("succeeded", ROWS)
    assert (tmp_path / "out" / "part-000000.psv").exists()
    assert result.read().collect()["id"].to_list() == frame["id"].to_list()


def test_form_and_cli_offer_the_plugin_names(plugins, data, tmp_path):
    from batchnb import cli
    from batchnb.views.form import JobForm

    path, _ = data
    job = bn.BatchJob(path, tmp_path / "out", format="pipes", output_format="pipes", engine="sequential")
    form = JobForm(job, background=False)
    for name in ("format", "output_format"):
        dropdown = form.controls[name].input
        assert "pipes" in [v for _, v in dropdown.options] and dropdown.value == "pipes", name
    assert form.valid and form.job.config.format == "pipes"
    args = cli._parser().parse_args(
        ["run", str(path), str(tmp_path / "o"), "--format", "pipes", "--output-format", "pipes"]
    )
    assert (args.format, args.output_format) == ("pipes", "pipes")
