"""The benchmark harness runs end to end on the --quick data (never asserts timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
CASES = ("batchnb-threads", "polars-stream")
DATASETS = ("parquet", "csv", "parquet-10g", "csv-10g")  # --quick: every one of them a few 100k rows


def test_quick_benchmark_writes_every_case(tmp_path: Path) -> None:
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    cases = (*CASES, "batchnb-threads-chunk10k")
    cmd = [python, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--out", str(tmp_path), "--cases", ",".join(cases)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]

    report = json.loads((tmp_path / "latest.json").read_text())
    results = {(r["case"], r["dataset"]): r for r in report["results"]}
    assert set(results) == {(c, d) for c in CASES for d in DATASETS} | {("batchnb-threads-chunk10k", "parquet")}
    for key, r in results.items():
        assert "error" not in r, (key, r.get("error"))
        assert r["rows_per_s"] > 0 and r["peak_rss_mib"] > 0, key
        assert r["output_ok"], key
    for dataset in DATASETS:  # same fit sample, same scores: the cases must agree
        assert results[CASES[0], dataset]["anomalies"] == results[CASES[1], dataset]["anomalies"] > 0
    # batchnb cases carry their own breakdown: preparation, and every step of a chunk.
    threads = results["batchnb-threads", "csv-10g"]
    assert threads["chunks"] > 1 and set(threads["prepare_s"]) == {"inspect", "sample", "fit", "plan"}
    assert set(threads["per_chunk_ms"]) >= {"read", "score", "write", "checksum", "commit", "progress"}
    assert set(report["versions"]) >= {"python", "polars", "pyarrow", "pandas", "batchnb"}

    table = (tmp_path / "latest.md").read_text()
    assert "| case | dataset | wall s | rows/s | peak RSS MiB |" in table
    assert all(case in table for case in CASES)
    for section in ("About 10 GB per file", "Peak memory against dataset size", "Planning", "Chunk-size sweep"):
        assert section in table, section
