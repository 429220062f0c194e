"""Every `read_options` key is honoured or refused by name, for every format (DESIGN.md section 1, "Format
details"): Parquet, Feather and pickle honour none and HDF5 only `key`, so any other key is a ConfigError
naming it, not an option silently ignored."""

from __future__ import annotations

import pytest
from conftest import make_frame, write_source

import batchnb as bn


@pytest.mark.parametrize("fmt", ["parquet", "feather", "pickle", "hdf5"])
def test_unknown_key_is_refused_by_name(tmp_path, fmt):
    suffix = {"parquet": "parquet", "feather": "feather", "pickle": "pkl", "hdf5": "h5"}[fmt]
    src = write_source(make_frame(100), fmt, tmp_path / f"data.{suffix}")
    with pytest.raises(bn.ConfigError, match=r"`read_options` key 'separator' is not supported for .* accepted keys"):
        bn.BatchJob(src, tmp_path / "out", engine="sequential", allow_pickle=True, read_options={"separator": ";"})


def test_unknown_key_is_refused_when_the_format_is_known_only_from_the_files(tmp_path):
    """A job's output directory as the source: its format is known once its parts are found, at plan()."""
    first = tmp_path / "first"
    bn.BatchJob(write_source(make_frame(2_000), "parquet", tmp_path / "data.parquet"), first,
                engine="sequential", chunk_size=1_000).run(progress=None)  # fmt: skip
    job = bn.BatchJob(str(first), tmp_path / "second", engine="sequential", read_options={"has_header": False})
    with pytest.raises(bn.ConfigError, match=r"'has_header' is not supported for parquet"):
        job.plan()


def test_hdf5_key_is_checked_and_honoured(tmp_path):
    src = write_source(make_frame(2_000), "hdf5", tmp_path / "data.h5")
    with pytest.raises(bn.ConfigError, match=r"`read_options\['key'\]` must be the key of a pandas table"):
        bn.BatchJob(src, tmp_path / "out", allow_pickle=True, read_options={"key": 3})
    job = bn.BatchJob(src, tmp_path / "out", engine="sequential", allow_pickle=True, read_options={"key": "/nope"})
    with pytest.raises(bn.SourceError, match="no pandas table '/nope'"):
        job.plan()
    plan = bn.BatchJob(src, tmp_path / "out2", allow_pickle=True, read_options={"key": "data"}).plan()
    assert plan.dataset.total_rows == 2_000
