"""Every option of `JobConfig` is a documented keyword of `BatchJob` and a flag of `batchnb run`.

The config's fields are the one list of options: these tests fail when a field is added without reaching the
signature, the docstring or the CLI, or when a default is written somewhere with another value.
"""

from __future__ import annotations

import dataclasses
import inspect

import polars as pl
import psutil
import pytest

import batchnb as bn
from batchnb import cli
from batchnb.config import Backoff, JobConfig, Resources

OPTIONS = [f.name for f in dataclasses.fields(JobConfig) if f.name not in ("source", "output")]


def test_every_option_is_a_keyword_with_the_config_default(tmp_path) -> None:
    params = inspect.signature(bn.BatchJob).parameters
    keywords = [p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keywords == OPTIONS
    for f in dataclasses.fields(JobConfig):
        if f.name in OPTIONS and f.name != "read_options":  # None in the signature: no shared mutable dict
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            assert params[f.name].default == default, f.name
    source, out = str(tmp_path / "data"), str(tmp_path / "out")  # no suffix: the format stays unknown
    assert bn.BatchJob(source, out).config == JobConfig(source=source, output=out)


def test_every_option_is_documented() -> None:
    doc = inspect.getdoc(bn.BatchJob)
    for name in ("source", "output", *OPTIONS):
        assert f"\n{name}\n    " in doc, name


def test_options_after_output_are_keyword_only(tmp_path) -> None:
    with pytest.raises(TypeError, match="positional"):
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", "mad")  # type: ignore[misc]


def test_a_misspelt_option_is_a_config_error_naming_the_valid_ones(tmp_path) -> None:
    with pytest.raises(bn.ConfigError, match=r"unknown option\(s\) \['fit_samples'\].*'fit_sample'"):
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", fit_samples=10)


# --------------------------------------------------------------------------------------------------
# batchnb run: one flag per option
# --------------------------------------------------------------------------------------------------
def job_from(*argv: str) -> bn.BatchJob:
    return cli._job_from_args(cli._parser().parse_args(["run", *argv]))


def test_every_option_has_a_run_flag_with_help() -> None:
    run = next(a for a in cli._parser()._actions if a.dest == "command").choices["run"]
    flags = {s: a for a in run._actions for s in a.option_strings}
    expected = [f"--{n}" for n in OPTIONS if n not in ("backoff", "resources")]
    expected += [f"--{f.name}" for f in dataclasses.fields(Resources)]
    expected += [f"--backoff-{f.name}" for f in dataclasses.fields(Backoff)]
    for flag in expected:
        flag = flag.replace("_", "-")
        assert flag in flags, flag
        assert flags[flag].help, flag


def test_flags_reach_the_config(tmp_path) -> None:
    job = job_from(
        str(tmp_path / "d.csv"), str(tmp_path / "out"), "--columns", "a,b", "--keep", "id", "--threshold", "2.5",
        "--format", "csv", "--output-format", "feather", "--backoff-base", "0", "--no-backoff-jitter",
        "--max-workers", "2", "--job-timeout", "30", "--allow-pickle",
    )  # fmt: skip
    c = job.config
    assert (c.columns, c.keep, c.threshold, c.format, c.output_format) == (("a", "b"), ("id",), 2.5, "csv", "feather")
    assert c.backoff == Backoff(base=0, jitter=False)
    assert (c.resources.max_workers, c.resources.job_timeout, c.allow_pickle) == (2, 30.0, True)


def test_memory_limit_flag_is_a_fraction_of_ram_or_a_size(tmp_path) -> None:
    half = job_from("d.parquet", str(tmp_path / "out"), "--memory-limit", "0.5").config.resources
    assert half.memory_limit == 0.5  # not the string "0.5", which reads as 0 bytes
    assert half.memory_bytes() == int(psutil.virtual_memory().total * 0.5)
    sized = job_from("d.parquet", str(tmp_path / "out"), "--memory-limit", "2GB").config.resources
    assert sized.memory_bytes() == 2 * 10**9


def test_a_flag_overrides_one_field_of_the_config_files_table(tmp_path) -> None:
    config = tmp_path / "job.toml"
    config.write_text('source = "d.parquet"\noutput = "out"\n[resources]\nmax_workers = 2\n')
    resources = job_from("--config", str(config), "--memory-limit", "1GB").config.resources
    assert (resources.max_workers, resources.memory_limit) == (2, "1GB")


def test_bad_choice_or_json_is_a_usage_error(tmp_path, capsys) -> None:
    for flag, value, words in (("--format", "xlsx", "invalid choice"), ("--read-options", "{sep", "not JSON")):
        with pytest.raises(SystemExit) as exc:
            cli.main(["run", "d.csv", str(tmp_path / "o"), flag, value])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert words in err and flag in err


def test_read_options_flag_reads_a_semicolon_csv(tmp_path, capsys) -> None:
    source = tmp_path / "d.csv"
    pl.DataFrame({"id": range(2000), "x": [float(i % 7) for i in range(2000)]}).write_csv(source, separator=";")
    out = tmp_path / "out"
    code = cli.main(["run", str(source), str(out), "--read-options", '{"separator": ";"}', "--chunk-size", "1000",
                     "--engine", "sequential", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    frame = bn.BatchJob(source, out, read_options={"separator": ";"}, chunk_size=1000).read().collect()
    assert frame.height == 2000 and frame["x"].to_list()[:8] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]
