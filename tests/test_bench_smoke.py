"""The benchmark harness runs end to end on the --quick data (never asserts timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
CASES = ("batchnb-threads", "polars-stream")
DATASETS = ("parquet", "parquet-wide", "csv", "csv-wide", "parquet-10g", "csv-10g")  # --quick: a few 100k rows
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402
import bench_data  # noqa: E402
import bench_tables  # noqa: E402
import readme_table  # noqa: E402


def test_quick_benchmark_writes_every_case(tmp_path: Path) -> None:
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    cases = (*CASES, "batchnb-threads-chunk10k", "hand-loop-2t")
    cmd = [python, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--out", str(tmp_path), "--cases", ",".join(cases)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]

    report = json.loads((tmp_path / "latest.json").read_text())
    results = {(r["case"], r["dataset"]): r for r in report["results"]}
    expected = {(c, d) for c in CASES for d in DATASETS} | {("batchnb-threads-chunk10k", "parquet")}
    assert set(results) == expected | {("hand-loop-2t", "parquet"), ("hand-loop-2t", "parquet-wide")}
    for key, r in results.items():
        assert "error" not in r, (key, r.get("error"))
        assert r["rows_per_s"] > 0 and r["peak_rss_mib"] > 0 and r["cpu_s"] > 0, key
        assert r["output_ok"], key  # id + anomaly_score + is_anomaly, every input row
    for dataset in DATASETS:  # same fit sample, same scores: the cases must agree
        assert results[CASES[0], dataset]["anomalies"] == results[CASES[1], dataset]["anomalies"] > 0
        assert results["polars-stream", dataset]["vs_polars_stream"] == 1.0  # the baseline of every ratio
    for fmt in ("parquet", "csv"):  # the wide table has the narrow one's rows: the same anomalies
        assert results[CASES[0], fmt]["anomalies"] == results[CASES[0], f"{fmt}-wide"]["anomalies"]
    assert results["hand-loop-2t", "parquet-wide"]["anomalies"] == results[CASES[1], "parquet-wide"]["anomalies"]
    # batchnb cases carry their own breakdown: preparation, and every step of a chunk.
    threads = results["batchnb-threads", "csv-10g"]
    assert threads["chunks"] > 1 and set(threads["prepare_s"]) == {"inspect", "sample", "fit", "plan"}
    assert set(threads["per_chunk_ms"]) >= {"read", "score", "write", "checksum", "commit", "progress"}
    assert set(report["versions"]) >= {"python", "polars", "pyarrow", "pandas", "batchnb"}

    table = (tmp_path / "latest.md").read_text()
    assert "| case | dataset | wall s | rows/s | peak RSS MiB |" in table
    assert all(case in table for case in CASES)
    assert table.split("\n\n")[1].startswith("**Weakest ratio: `batchnb-threads` on `")  # it leads the report
    for section in ("Side by side", "Targets", "Per-chunk breakdown", "About 10 GB per file",
                    "Peak memory against dataset size", "Planning", "Chunk-size sweep"):  # fmt: skip
        assert section in table, section
    assert "| threads vs the hand-written loop | >= 0.8 |" in table


def test_wide_table_adds_unused_columns_to_the_same_rows(tmp_path: Path) -> None:
    narrow = bench_data.make_batch(1000, 500)
    wide = bench_data.make_batch(1000, 500, wide=True)
    assert wide.select(narrow.columns).equals(narrow)
    assert wide.schema["event_time"] == pl.Datetime("us") and wide.schema["label"] == pl.String
    assert wide.get_column("label").str.len_chars().is_between(10, 20).all()
    path = bench_data.ensure_dataset("parquet-wide", 2000, tmp_path)
    batches = [bench_data.make_batch(start, 100, wide=True) for start in range(0, 2000, 100)]  # 20 row groups
    assert pl.read_parquet(path).equals(pl.concat(batches))
    assert path != bench_data.ensure_dataset("parquet", 2000, tmp_path)  # cached apart from the narrow file


def test_optional_cases_run_only_when_named() -> None:
    default = {case for case, _ in bench.select_runs(None, list(bench_data.DATASETS))}
    assert "ray-data-warm" not in default and "batchnb-threads" in default and "hand-loop-2t" in default
    named = bench.select_runs(["ray-data-warm"], ["parquet"])
    assert named == [("ray-data-warm", "parquet")]


def test_quick_run_leaves_out_cluster_cases_unless_named() -> None:
    quick = {case for case, _ in bench.select_runs(None, list(bench_data.DATASETS), quick=True)}
    assert {"batchnb-threads", "batchnb-processes", "hand-loop-2t", "pandas-loop", "polars-stream"} <= quick
    assert not {c for c in quick if "dask" in c or "ray" in c}
    assert ("batchnb-dask-warm", "parquet") in bench.select_runs(["batchnb-dask-*"], ["parquet"], quick=True)


def test_unknown_dataset_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--datasets", "parquet,parket"])
    assert "parket" in capsys.readouterr().err


def test_report_leads_with_the_weakest_engine_ratio() -> None:
    def record(case: str, dataset: str, rows_per_s: float) -> dict:
        return {"case": case, "dataset": dataset, "rows_per_s": rows_per_s, "wall_s": 1 / rows_per_s,
                "peak_rss_mib": 100, "anomalies": 1, "output_ok": True}  # fmt: skip

    records = [
        record("polars-stream", "parquet", 10.0),
        record("batchnb-threads", "parquet", 9.0),
        record("batchnb-processes", "parquet", 8.0),
        record("polars-stream", "parquet-wide", 10.0),
        record("batchnb-threads", "parquet-wide", 5.0),
        record("pandas-loop", "parquet-wide", 1.0),  # slower, but not one of the engines the headline compares
    ]
    bench_tables.add_ratios(records)
    env = {"quick": True, "repeat": 1, "date": "d", "cores": 2, "ram_gib": 1, "versions": {}, "batchnb_commit": "x"}
    text = bench_tables.markdown(env, records)
    assert text.split("\n\n")[1].startswith("**Weakest ratio: `batchnb-threads` on `parquet-wide` at 0.50x")
    assert "| processes vs threads | >= 0.8 | 0.89 |" in text


def test_readme_takes_the_whole_report_between_its_markers(tmp_path: Path) -> None:
    readme, table = tmp_path / "README.md", tmp_path / "latest.md"
    readme.write_text(
        f"# x\n\n## Benchmarks\n\nintro\n\n{readme_table.BEGIN}\nold table\n{readme_table.END}\n\nnotes\n"
    )
    table.write_text("head\n\n**Weakest ratio: x**\n\n**Per-chunk breakdown**\n\n| a |\n")
    assert readme_table.main(readme, table) == 0
    text = readme.read_text()
    assert "old table" not in text and "**Per-chunk breakdown**\n\n| a |\n<!-- benchmark:end -->" in text
    assert text.startswith("# x\n\n## Benchmarks\n\nintro\n\n") and text.endswith("\n\nnotes\n")
    readme.write_text("no markers\n")
    assert readme_table.main(readme, table) == 1
