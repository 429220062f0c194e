"""job.config: a frozen, validated dataclass that round-trips through dict/JSON/TOML/YAML; job identity and resume.

DESIGN.md section 1 ("The thin API", "Job identity, resume and validation").
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import polars as pl
import pytest
import yaml

import batchnb as bn

N_ROWS = 3_000
CHUNK = 1_000


# --- helpers (local to this file) ------------------------------------------------------------------


def write_parquet(path: Path, n: int = N_ROWS) -> Path:
    pl.DataFrame(
        {
            "a": [float(i) for i in range(n)],
            "b": [float((i * 7) % 13) for i in range(n)],
            "label": [f"r{i}" for i in range(n)],
        }
    ).write_parquet(path)
    return path


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string uses the same escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(data: dict) -> str:
    """A minimal TOML writer: scalars and arrays at the top, one table per nested dict (tomli_w is not installed)."""
    assert None not in data.values()
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def write_config(data: dict, path: Path) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(data, indent=2))
    elif path.suffix == ".toml":
        path.write_text(to_toml(data))
    else:
        path.write_text(yaml.safe_dump(data))
    return path


def nones(value, where="config") -> list[str]:
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nones(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nones(v, f"{where}[{i}]")]
    return []


def part_ids(output: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) per part: a recomputed part is written to a temp file and renamed, so its inode changes."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(output.glob("part-*"))}


def run(job: bn.BatchJob, **kwargs) -> bn.JobResult:
    return job.run(progress=None, **kwargs)


def rich_job(tmp_path: Path) -> bn.BatchJob:
    """A job with many non-default options, CSV input with `;` separator."""
    src = tmp_path / "data.csv"
    src.write_text("a;b;label\n" + "".join(f"{i};{(i * 7) % 13};r{i}\n" for i in range(N_ROWS)))
    return bn.BatchJob(
        src,
        tmp_path / "out",
        detector="mad",
        columns=["a", "b"],
        chunk_size=CHUNK,
        engine="sequential",
        keep=["label", "a"],
        threshold=2.5,
        fit_sample=500,
        seed=7,
        retries=1,
        backoff=bn.Backoff(base=0.1, factor=3.0, max=5.0, jitter=False),
        resources=bn.Resources(max_workers=2, memory_limit="2GB", chunk_timeout=30.0),
        read_options={"separator": ";"},
        name="nightly-scores",
    )


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A directory on sys.path for small detector modules; the modules are forgotten afterwards."""
    root = tmp_path / "mods"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        if Path(getattr(sys.modules[name], "__file__", "") or "").parent == root:
            del sys.modules[name]


DETECTOR_MODULE = """
import polars as pl


def double_a(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(doubled=pl.col("a") * 2)


class Scorers:
    @staticmethod
    def plus_one(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(plus=pl.col("a") + 1)
"""


# --- the frozen dataclass -------------------------------------------------------------------------------


def test_config_is_a_frozen_dataclass(tmp_path):
    job = bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out")
    config = job.config
    assert dataclasses.is_dataclass(config)
    assert isinstance(config, bn.JobConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.chunk_size = 5_000
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.resources.max_workers = 3
    assert config.chunk_size == 100_000
    assert config.detector == "zscore"
    assert config.engine == "threads"
    assert config.format == "parquet"  # from the suffix
    assert config.output_format == "parquet"
    assert config.name == "out"  # the output dir name
    assert config.backoff == bn.Backoff()
    assert config.resources == bn.Resources()
    assert job.output == str(tmp_path / "out")


def test_lists_become_tuples_and_paths_strings(tmp_path):
    config = bn.BatchJob(
        [tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "out", columns=["a"], keep=["a"]
    ).config
    assert config.source == (str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"))
    assert config.columns == ("a",)
    assert config.keep == ("a",)
    assert isinstance(config.output, str)
    hash(config.columns)


def test_to_dict_omits_none_and_is_plain_data(tmp_path):
    data = bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out").config.to_dict()
    assert nones(data) == []
    for omitted in ("columns", "keep", "threshold", "contamination"):
        assert omitted not in data
    assert "max_workers" not in data["resources"]
    assert "chunk_timeout" not in data["resources"]
    assert data["source"] == str(tmp_path / "d.parquet")
    assert data["detector"] == "zscore"
    assert data["engine"] == "threads"
    assert json.loads(json.dumps(data)) == data  # plain JSON data, nothing else
    assert tomllib.loads(to_toml(data)) == data


# --- round trips -----------------------------------------------------------------------------------------


def test_from_config_dict_round_trip(tmp_path):
    job = rich_job(tmp_path)
    data = job.config.to_dict()
    assert nones(data) == []
    again = bn.BatchJob.from_config(data)
    assert again.config == job.config
    assert again.config.to_dict() == data
    # from_config does not mutate the caller's dict
    assert data == job.config.to_dict()


@pytest.mark.parametrize("suffix", [".json", ".toml", ".yaml", ".yml"])
def test_from_config_file_round_trip(tmp_path, suffix):
    job = rich_job(tmp_path)
    path = write_config(job.config.to_dict(), tmp_path / f"job{suffix}")
    for as_given in (path, str(path)):
        again = bn.BatchJob.from_config(as_given)
        assert again.config == job.config
        assert again.config.backoff == bn.Backoff(base=0.1, factor=3.0, max=5.0, jitter=False)
        assert again.config.resources == bn.Resources(max_workers=2, memory_limit="2GB", chunk_timeout=30.0)
        assert again.config.read_options == {"separator": ";"}


@pytest.mark.parametrize("suffix", [".json", ".toml", ".yaml"])
def test_engine_address_and_options_survive_the_config_file(tmp_path, suffix):
    """Resuming from another machine: the saved config reconnects to the same cluster (nothing connects yet)."""
    from batchnb.engines import DaskEngine, RayEngine

    src = tmp_path / "d.parquet"
    pl.DataFrame({"a": [1.0, 2.0]}).write_parquet(src)
    for engine in (DaskEngine("tcp://10.0.0.5:8786"), DaskEngine(n_workers=3, adapt=(1, 4)), RayEngine("auto")):
        job = bn.BatchJob(str(src), tmp_path / "out", engine=engine)
        path = write_config(job.config.to_dict(), tmp_path / f"job{suffix}")
        again = bn.BatchJob.from_config(path).config.engine
        assert type(again) is type(engine) and again == engine
    assert bn.BatchJob(str(src), tmp_path / "out", engine="dask").config.to_dict()["engine"] == "dask"
    with pytest.raises(bn.ConfigError, match="need a `name`"):
        bn.BatchJob.from_config({"source": str(src), "output": str(tmp_path / "o"), "engine": {"address": "x"}})
    with pytest.raises(bn.ConfigError, match="engine 'dask'"):
        bn.BatchJob.from_config(
            {"source": str(src), "output": str(tmp_path / "o"), "engine": {"name": "dask", "adress": "x"}}
        )


def test_job_from_config_file_is_the_same_job(tmp_path):
    """A job re-created from its TOML resumes the first run's output (nothing recomputed)."""
    job = rich_job(tmp_path)
    first = run(job)
    assert first.status == "succeeded"
    assert first.read().collect().columns == ["label", "a", "anomaly_score", "is_anomaly"]
    before = part_ids(tmp_path / "out")
    assert len(before) == 3
    again = bn.BatchJob.from_config(write_config(job.config.to_dict(), tmp_path / "job.toml"))
    second = run(again)
    assert second.status == "succeeded"
    assert part_ids(tmp_path / "out") == before
    assert second.read().collect().equals(first.read().collect())


def test_from_config_errors(tmp_path):
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob.from_config({"output": str(tmp_path / "out")})
    assert "source" in str(err.value)
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob.from_config({"source": "x.parquet", "output": "out", "chunksize": 1000})
    assert "chunksize" in str(err.value) and "chunk_size" in str(err.value)
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob.from_config(tmp_path / "missing.toml")
    assert "missing.toml" in str(err.value)
    broken = tmp_path / "broken.toml"
    broken.write_text('source = "x.parquet"\noutput = \n')
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob.from_config(broken)
    assert "broken.toml" in str(err.value) and "TOML" in str(err.value)
    ini = tmp_path / "job.ini"
    ini.write_text("[job]\nsource = x.parquet\n")
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob.from_config(ini)
    assert "job.ini" in str(err.value) and ".toml" in str(err.value)
    with pytest.raises(bn.ConfigError) as err:  # a value in the file is validated like a keyword
        bn.BatchJob.from_config({"source": "x.parquet", "output": "out", "chunk_size": 10})
    assert "chunk_size" in str(err.value)


# --- callable detectors in configs -------------------------------------------------------------------------


def test_module_function_detector_round_trips(tmp_path, module_dir):
    (module_dir / "cfg_dets_a.py").write_text(DETECTOR_MODULE)
    import cfg_dets_a

    src = write_parquet(tmp_path / "d.parquet")
    for fn, ref in (
        (cfg_dets_a.double_a, "cfg_dets_a:double_a"),
        (cfg_dets_a.Scorers.plus_one, "cfg_dets_a:Scorers.plus_one"),
    ):
        job = bn.BatchJob(src, tmp_path / "out", detector=fn, chunk_size=CHUNK, engine="sequential")
        data = job.config.to_dict()
        assert data["detector"] == ref
        for suffix in (".json", ".toml", ".yaml"):
            again = bn.BatchJob.from_config(write_config(data, tmp_path / f"job{suffix}"))
            assert again.config.detector is fn
            assert again.config == job.config

    # the job runs from the file and resumes from it
    job = bn.BatchJob(src, tmp_path / "out2", detector=cfg_dets_a.double_a, chunk_size=CHUNK, engine="sequential")
    assert run(job).status == "succeeded"
    before = part_ids(tmp_path / "out2")
    again = bn.BatchJob.from_config(write_config(job.config.to_dict(), tmp_path / "job2.json"))
    result = run(again)
    assert result.status == "succeeded"
    assert part_ids(tmp_path / "out2") == before
    assert result.read().collect()["doubled"].to_list() == [2.0 * i for i in range(N_ROWS)]


def test_detector_reference_string_is_imported(tmp_path, module_dir):
    (module_dir / "cfg_dets_b.py").write_text(DETECTOR_MODULE)
    config = bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", detector="cfg_dets_b:double_a").config
    import cfg_dets_b

    assert config.detector is cfg_dets_b.double_a


@pytest.mark.parametrize("ref", ["cfg_no_such_module:f", "cfg_dets_c:no_such_function", "cfg_dets_c:Scorers.nope"])
def test_detector_reference_that_does_not_import(tmp_path, module_dir, ref):
    (module_dir / "cfg_dets_c.py").write_text(DETECTOR_MODULE)
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", detector=ref)
    assert ref in str(err.value)


def _local_function():
    def score(df):
        return df

    return score


def _main_function():
    namespace = {"__name__": "__main__"}  # what a notebook cell or a script defines
    exec("def score(df):\n    return df\n", namespace)
    return namespace["score"]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: lambda df: df, "lambda"),
        (_local_function, "score"),
        (_main_function, "notebook"),
    ],
    ids=["lambda", "local", "notebook"],
)
def test_unimportable_detector_cannot_be_written(tmp_path, make, says):
    fn = make()
    job = bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", detector=fn, engine="threads")  # fine to run
    with pytest.raises(bn.ConfigError) as err:
        job.config.to_dict()
    msg = str(err.value)
    assert says in msg
    assert "module" in msg  # says why, and what to do


def test_unimportable_detector_still_runs(tmp_path):
    src = write_parquet(tmp_path / "d.parquet")
    result = run(
        bn.BatchJob(src, tmp_path / "out", detector=lambda df: df.head(10), engine="sequential", chunk_size=CHUNK)
    )
    assert result.status == "succeeded"
    assert result.rows_out == 30


# --- Resources and Backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8GB", 8 * 10**9),
        ("512MiB", 512 * 2**20),
        ("1.5 GB", 1_500_000_000),
        ("2gib", 2 * 2**30),
        (2**30, 2**30),
        (123_456_789, 123_456_789),
    ],
)
def test_memory_limit_sizes(value, expected):
    assert bn.Resources(memory_limit=value).memory_bytes() == expected


@pytest.mark.parametrize("fraction", [0.8, 0.25, 1, 1.0])
def test_memory_limit_fraction_of_ram(fraction):
    import psutil

    total = psutil.virtual_memory().total
    got = bn.Resources(memory_limit=fraction).memory_bytes()
    assert got == pytest.approx(total * fraction, rel=0.01)


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, -1, "lots", "8XB", "GB", "", True, None, [1]])
def test_memory_limit_bad_values(bad):
    with pytest.raises(bn.ConfigError) as err:
        bn.Resources(memory_limit=bad)
    assert "memory_limit" in str(err.value)


@pytest.mark.parametrize(
    ("field", "bad"),
    [("max_workers", 0), ("max_workers", -2), ("max_workers", 1.5), ("max_workers", True), ("max_workers", "4"),
     ("chunk_timeout", 0), ("chunk_timeout", -1.0), ("chunk_timeout", "10s"), ("job_timeout", 0), ("job_timeout", False)],
)  # fmt: skip
def test_resources_bad_values(field, bad):
    with pytest.raises(bn.ConfigError) as err:
        bn.Resources(**{field: bad})
    assert field in str(err.value)


def test_resources_workers():
    assert bn.Resources(max_workers=3).workers(bn.engines.create("threads")) == 3
    assert bn.Resources(max_workers=3).workers(bn.engines.create("processes")) == 3
    assert bn.Resources().workers(bn.engines.create("threads")) == (os.cpu_count() or 1)
    assert bn.Resources().workers(bn.engines.create("processes")) == (os.cpu_count() or 1)
    assert bn.Resources().workers(bn.engines.create("sequential")) == 1


@pytest.mark.parametrize(("field", "bad"), [("base", -0.1), ("max", -1.0), ("factor", 0.5)])
def test_backoff_bad_values(field, bad):
    with pytest.raises(bn.ConfigError) as err:
        bn.Backoff(**{field: bad})
    assert field in str(err.value)


@pytest.mark.parametrize(("field", "bad"), [("base", "fast"), ("factor", None), ("max", "1m")])
def test_backoff_wrong_types_are_config_errors(field, bad):
    """A string where a number belongs (easy in YAML) is a user error: ConfigError naming the field, not a TypeError."""
    with pytest.raises(bn.ConfigError) as err:
        bn.Backoff(**{field: bad})
    assert field in str(err.value)


def test_backoff_delays():
    backoff = bn.Backoff(base=0.5, factor=2.0, max=3.0, jitter=False)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = bn.Backoff(base=0.5, factor=2.0, max=3.0, jitter=True)
    for n in range(1, 6):
        assert 0.0 <= jittered.delay(n) <= backoff.delay(n)
    assert jittered.delay(3, rng=lambda: 0.5) == 1.0


def test_resources_and_backoff_given_as_dicts(tmp_path):
    config = bn.BatchJob(
        tmp_path / "d.parquet", tmp_path / "out",
        resources={"max_workers": 2, "memory_limit": "1GB"}, backoff={"base": 0.0, "jitter": False},
    ).config  # fmt: skip
    assert config.resources == bn.Resources(max_workers=2, memory_limit="1GB")
    assert config.backoff == bn.Backoff(base=0.0, jitter=False)
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", resources=4)
    assert "resources" in str(err.value)


@pytest.mark.parametrize(("option", "typo"), [("resources", "max_worker"), ("backoff", "bsae")])
def test_unknown_key_in_resources_or_backoff_dict(tmp_path, option, typo):
    """A typo inside [resources] / [backoff] of a config file is a ConfigError naming it, not a TypeError."""
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob.from_config({"source": "d.parquet", "output": str(tmp_path / "out"), option: {typo: 2}})
    assert typo in str(err.value)


# --- identity: what makes two runs the same job --------------------------------------------------------


BASE = dict(detector="zscore", columns=None, chunk_size=CHUNK, engine="sequential", seed=0)


@pytest.mark.parametrize(
    "changes",
    [
        {"engine": "threads"},
        {"resources": bn.Resources(max_workers=1, memory_limit="1GB", chunk_timeout=60.0)},
        {"retries": 0},
        {"backoff": bn.Backoff(base=0.0, jitter=False)},
        {"name": "renamed"},
        {"engine": "threads", "retries": 7, "name": "all-at-once", "resources": bn.Resources(max_workers=2)},
    ],
    ids=["engine", "resources", "retries", "backoff", "name", "all"],
)
def test_operational_options_may_change_and_the_job_resumes(tmp_path, changes):
    src = write_parquet(tmp_path / "d.parquet")
    out = tmp_path / "out"
    first = run(bn.BatchJob(src, out, **BASE))
    assert first.status == "succeeded"
    before = part_ids(out)
    assert len(before) == 3
    second = run(bn.BatchJob(src, out, **{**BASE, **changes}))
    assert second.status == "succeeded"
    assert second.chunks_done == 3
    assert part_ids(out) == before, "parts were recomputed"
    assert second.read().collect().equals(first.read().collect())


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"chunk_size": 1_500}, "chunk_size"),
        ({"detector": "mad"}, "detector"),
        ({"columns": ["a"]}, "columns"),
        ({"seed": 1}, "seed"),
        ({"threshold": 1.0}, "threshold"),
        ({"keep": ["a"]}, "keep"),
        ({"output_format": "csv"}, "output_format"),
    ],
)
def test_identity_options_make_another_job(tmp_path, changes, option):
    src = write_parquet(tmp_path / "d.parquet")
    out = tmp_path / "out"
    assert run(bn.BatchJob(src, out, **BASE)).status == "succeeded"
    before = part_ids(out)
    other = bn.BatchJob(src, out, **{**BASE, **changes})
    with pytest.raises(bn.JobStateError) as err:
        run(other)
    msg = str(err.value)
    assert option in msg
    assert "restart=True" in msg
    assert str(out) in msg
    assert part_ids(out) == before, "the refused run touched the old parts"
    # the original job still resumes untouched
    assert run(bn.BatchJob(src, out, **BASE)).status == "succeeded"
    assert part_ids(out) == before
    # restart=True discards the old state and parts and runs the new job
    result = run(other, restart=True)
    assert result.status == "succeeded"
    assert result.rows_out == N_ROWS
    expected_chunks = -(-N_ROWS // other.config.chunk_size)
    assert result.chunks_total == expected_chunks
    assert len(list(out.glob("part-*"))) == expected_chunks
    assert result.read().collect().height == N_ROWS


def test_changed_source_is_job_state_error(tmp_path):
    src = write_parquet(tmp_path / "d.parquet")
    out = tmp_path / "out"
    assert run(bn.BatchJob(src, out, **BASE)).status == "succeeded"
    write_parquet(src, n=N_ROWS + 500)
    with pytest.raises(bn.JobStateError) as err:
        run(bn.BatchJob(src, out, **BASE))
    assert "changed" in str(err.value) and "restart=True" in str(err.value)
    result = run(bn.BatchJob(src, out, **BASE), restart=True)
    assert result.rows_out == N_ROWS + 500


SOURCE_V1 = """
import polars as pl

def enrich(df):
    return df.with_columns(score=pl.col("a") * 2)
"""
SOURCE_V1_AGAIN = SOURCE_V1.replace("\n", "\n\n")  # the same code in a different cell layout
SOURCE_V2 = SOURCE_V1.replace("* 2", "* 3")


def _define(source: str):
    namespace = {"__name__": "user_notebook"}
    exec(textwrap.dedent(source), namespace)
    return namespace["enrich"]


def test_callable_detector_identity(tmp_path):
    src = write_parquet(tmp_path / "d.parquet")
    out = tmp_path / "out"
    first = _define(SOURCE_V1)
    result = run(bn.BatchJob(src, out, detector=first, chunk_size=CHUNK, engine="sequential"))
    assert result.status == "succeeded"
    before = part_ids(out)

    # defined again identically (a re-executed notebook cell): the same job, nothing recomputed
    again = _define(SOURCE_V1_AGAIN)
    assert again is not first
    result = run(bn.BatchJob(src, out, detector=again, chunk_size=CHUNK, engine="threads"))
    assert result.status == "succeeded"
    assert part_ids(out) == before

    # its body edited: another job
    edited = _define(SOURCE_V2)
    with pytest.raises(bn.JobStateError) as err:
        run(bn.BatchJob(src, out, detector=edited, chunk_size=CHUNK, engine="sequential"))
    assert "detector" in str(err.value) and "restart=True" in str(err.value)
    result = run(bn.BatchJob(src, out, detector=edited, chunk_size=CHUNK, engine="sequential"), restart=True)
    assert result.read().collect()["score"].to_list() == [3.0 * i for i in range(N_ROWS)]


PLAIN_MODULE = """
import polars as pl


def score(df: pl.DataFrame) -> pl.DataFrame:
    features = [c for c in df.columns if c != "label"]
    return df.select(features).with_columns(total=pl.sum_horizontal(features))
"""

# A set literal compiles to a frozenset constant, whose repr order depends on the process's hash seed.
SET_LITERAL_MODULE = """
import polars as pl


def score(df: pl.DataFrame) -> pl.DataFrame:
    features = [c for c in df.columns if c not in {"id", "ts", "label", "comment"}]
    return df.select(features).with_columns(total=pl.sum_horizontal(features))
"""

RUNNER = """
import sys
sys.path.insert(0, sys.argv[1])
import batchnb as bn
from new_process_dets import score
result = bn.BatchJob(sys.argv[2], sys.argv[3], detector=score, chunk_size=1000, engine="sequential").run(progress=None)
print(result.status)
"""


@pytest.mark.parametrize("module", [PLAIN_MODULE, SET_LITERAL_MODULE], ids=["plain", "set-literal"])
def test_callable_detector_is_the_same_job_in_a_new_process(tmp_path, module):
    """The same function imported in a new interpreter (with another hash seed, as every new process has) resumes."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "new_process_dets.py").write_text(module)
    src = write_parquet(tmp_path / "d.parquet")
    out = tmp_path / "out"
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    before = None
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, str(script), str(mods), str(src), str(out)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1] == "succeeded"
        if before is None:
            before = part_ids(out)
            assert len(before) == 3
        else:
            assert part_ids(out) == before, "the second process recomputed the parts"


def test_resources_workers_capped_by_the_engine_not_its_name():
    """An engine that is registered nowhere still caps the workers it is given."""

    class OneAtATime(bn.engines.Engine):
        name = "one-at-a-time"
        max_workers = 1

        def open(self, workers):
            pass

        def submit(self, fn, arg, *, affinity=None):
            raise NotImplementedError

        def close(self):
            pass

    assert bn.Resources(max_workers=4).workers(OneAtATime()) == 1
