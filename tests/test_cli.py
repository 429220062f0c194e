"""The `batchnb` command: run, status, verify, report, demo, detectors.

DESIGN.md section 1: exit 0 ok, 1 job failed, 2 usage or input error, and never a Python traceback for a
user error. Most cases call `main()` in this process (fast); a few run the real command in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from jupyter_kernel import venv_kernel

from batchnb.cli import main
from batchnb.demo import make_transactions

ROWS = 12_000
TESTS = Path(__file__).resolve().parent


def fails_on_second_chunk(frame: pl.DataFrame) -> pl.DataFrame:
    """A detector the CLI imports as `test_cli:fails_on_second_chunk`."""
    if frame["id"][0] >= 3_000:
        raise ValueError("second chunk is bad")
    return frame.with_columns(pl.lit(0.0).alias("anomaly_score"), pl.lit(False).alias("is_anomaly"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_transactions(tmp_path_factory.mktemp("cli") / "tx.parquet", rows=ROWS)


@pytest.fixture(scope="module")
def done_job(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-done") / "scores"
    assert main(["run", str(data), str(out), "--detector", "mad", "--chunk-size", "3000", "--no-progress"]) == 0
    return out


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]  # a progress bar may have drawn before the error
    assert message.startswith("batchnb ") and "error:" in message, err
    for word in words:
        assert word in err, (word, err)


# --------------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------------
def test_run_from_flags(data, tmp_path, capsys) -> None:
    out = tmp_path / "flags"
    code, stdout, _ = cli(capsys, "run", data, out, "--detector", "iqr", "--chunk-size", 4000, "--engine",
                          "sequential", "--columns", "amount,distance_km", "--keep", "id,amount", "--seed", 3,
                          "--name", "nightly", "--max-workers", 1, "--memory-limit", "2GB", "--no-progress")  # fmt: skip
    assert code == 0
    assert "status     succeeded" in stdout and f"{ROWS:,} in" in stdout
    frame = pl.read_parquet(sorted(out.glob("part-*")))
    assert frame.columns == ["id", "amount", "anomaly_score", "is_anomaly"]


def test_run_from_a_config_file_with_flags_overriding(data, tmp_path, capsys) -> None:
    config = tmp_path / "job.toml"
    config.write_text(
        f'source = "{data}"\noutput = "{tmp_path / "from-config"}"\ndetector = "zscore"\nchunk_size = 6000\n'
        "[resources]\nmax_workers = 2\n"
    )
    code, stdout, _ = cli(capsys, "run", "--config", config, "--chunk-size", 3000, "--no-progress")
    assert code == 0, stdout
    assert "chunks     4/4 done" in stdout  # --chunk-size 3000 won over the file's 6000


def test_run_that_fails_exits_1_and_names_the_chunk(data, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    code, stdout, err = cli(capsys, "run", data, tmp_path / "fails", "--detector", "test_cli:fails_on_second_chunk",
                            "--chunk-size", 3000, "--retries", 0, "--no-progress")  # fmt: skip
    assert code == 1
    assert "status     failed" in stdout
    assert "chunk 1 failed after 1 attempt(s): ValueError: second chunk is bad" in stdout
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run"], ["give SOURCE and OUTPUT"]),
        (["run", "{data}", "{tmp}/o", "--chunk-size", "5"], ["`chunk_size`", "1_000"]),
        (["run", "{data}", "{tmp}/o", "--engine", "spark"], ["unknown engine 'spark'", "threads"]),
        (["run", "{data}", "{tmp}/o", "--detector", "nope"], ["unknown detector 'nope'", "zscore"]),
        (["run", "{data}", "{tmp}/o", "--detector", "nowhere_module:f"], ["cannot be imported"]),
        (["run", "{data}", "{tmp}/o", "--threshold", "3", "--contamination", "0.1"], ["at most one"]),
        (["run", "{data}", "{tmp}/o", "--columns", "amount,nope"], ["nope"]),
        (["run", "{data}", "{tmp}/o", "--memory-limit", "lots"], ["`memory_limit`"]),
        (["run", "{tmp}/missing.parquet", "{tmp}/o"], ["missing.parquet"]),
        (["run", "{tmp}/data.xlsx", "{tmp}/o"], ["data.xlsx", "`format=`"]),
        (["run", "--config", "{tmp}/none.toml"], ["none.toml", "does not exist"]),
        (["run", "--config", "{tmp}/bad.toml"], ["bad.toml", "not valid TOML"]),
        (["status", "{tmp}/nothing"], ["holds no batchnb job"]),
        (["verify", "{tmp}/nothing"], ["holds no batchnb job"]),
        (["report", "{tmp}/nothing"], ["holds no batchnb job"]),
    ],
)
def test_user_errors_exit_2_with_a_message(argv, words, data, tmp_path, capsys) -> None:
    (tmp_path / "bad.toml").write_text("source = [unclosed\n")
    argv = [a.format(data=data, tmp=tmp_path) for a in argv]
    code, _, err = cli(capsys, *argv)
    assert_user_error(code, err, *words)


def test_a_second_run_of_a_finished_job_resumes_and_another_job_is_refused(data, done_job, capsys) -> None:
    code, stdout, _ = cli(capsys, "run", data, done_job, "--detector", "mad", "--chunk-size", 3000, "--no-progress")
    assert code == 0 and "chunks     4/4 done" in stdout
    code, _, err = cli(capsys, "run", data, done_job, "--detector", "zscore", "--no-progress")
    assert_user_error(code, err, "holds the state of another job", "--restart")


def test_usage_errors_exit_2(capsys) -> None:
    for argv in ([], ["frobnicate"], ["run", "a", "b", "--chunk-size", "many"], ["status"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "usage: batchnb" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# status, verify, detectors
# --------------------------------------------------------------------------------------------------
def test_status_one_shot_json_and_watch(done_job, capsys) -> None:
    code, stdout, _ = cli(capsys, "status", done_job)
    assert code == 0 and stdout.startswith("succeeded: 100.0%") and f"{ROWS:,}/{ROWS:,} rows" in stdout
    code, stdout, _ = cli(capsys, "status", done_job, "--json")
    snapshot = json.loads(stdout)
    assert code == 0 and snapshot["status"] == "succeeded" and snapshot["chunks_done"] == 4
    code, stdout, _ = cli(capsys, "status", done_job, "--watch", "--interval", 0.1)  # ended: returns at once
    assert code == 0 and stdout.count("\n") == 1


def test_status_of_a_failed_job_exits_1(data, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "failed"
    cli(capsys, "run", data, out, "--detector", "test_cli:fails_on_second_chunk", "--chunk-size", 3000, "--retries",
        0, "--no-progress")  # fmt: skip
    code, stdout, _ = cli(capsys, "status", out)
    assert code == 1 and stdout.startswith("failed:")


def test_verify_ok_and_a_damaged_part(data, tmp_path, capsys) -> None:
    out = tmp_path / "v"
    assert cli(capsys, "run", data, out, "--chunk-size", 3000, "--no-progress")[0] == 0
    code, stdout, _ = cli(capsys, "verify", out)
    assert code == 0 and "verify: ok, 4 parts" in stdout
    part = sorted(out.glob("part-*"))[1]
    part.write_bytes(part.read_bytes()[:-4] + b"oops")
    code, stdout, _ = cli(capsys, "verify", out)
    assert code == 1 and str(part) in stdout and "checksum" in stdout


def test_detectors(capsys) -> None:
    code, stdout, _ = cli(capsys, "detectors")
    assert code == 0
    assert [line.split()[0] for line in stdout.splitlines()] == ["zscore", "mad", "iqr", "isolation_forest"]


# --------------------------------------------------------------------------------------------------
# report and demo (execute a notebook)
# --------------------------------------------------------------------------------------------------
def test_report(done_job, tmp_path, capsys) -> None:
    target = tmp_path / "r" / "nightly.ipynb"
    code, stdout, err = cli(capsys, "report", done_job, "--path", target, "--kernel", venv_kernel())
    assert code == 0, err
    assert f"report: {target.with_suffix('.html').resolve()}" in stdout
    assert f"{ROWS:,}" in target.with_suffix(".html").read_text()


def test_report_with_an_unknown_kernel_is_an_error_without_traceback(done_job, tmp_path, capsys) -> None:
    kernel = venv_kernel()
    code, _, err = cli(capsys, "report", done_job, "--path", tmp_path / "r.ipynb", "--kernel", "no-such-kernel")
    assert_user_error(code, err, "'no-such-kernel' is not installed", kernel)  # and lists the installed ones


def test_demo_prints_summary_and_report(tmp_path, capsys) -> None:
    code, stdout, err = cli(capsys, "demo", "--rows", 20_000, "--dir", tmp_path / "demo")
    assert code == 0, err
    assert "status     succeeded" in stdout
    # a result a data scientist believes: about the injected share flagged, nearly all of them the injected rows
    hits = re.search(r"flagged ([\d,]+) of ([\d,]+) rows .*precision ([\d.]+)%, recall ([\d.]+)%", stdout)
    assert hits, stdout
    flagged, rows, precision, recall = (float(g.replace(",", "")) for g in hits.groups())
    assert rows == 20_000 and flagged <= 0.005 * rows and precision >= 80 and recall >= 80
    top = pl.scan_parquet(tmp_path / "demo" / "scores" / "part-*.parquet").sort("anomaly_score", descending=True)
    assert top.head(10).collect().get_column("injected").all()  # the report's top anomalies are the injected ones
    report_line = next(line for line in stdout.splitlines() if line.startswith("report: "))
    html = Path(report_line.removeprefix("report: "))
    assert html.suffix == ".html" and html.exists()


# --------------------------------------------------------------------------------------------------
# The real command, in a subprocess
# --------------------------------------------------------------------------------------------------
def command(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batchnb", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip


def test_python_m_batchnb_exit_codes_and_no_traceback(data, tmp_path) -> None:
    ok = command("run", data, tmp_path / "sub", "--chunk-size", 6000, "--no-progress")
    assert ok.returncode == 0 and "status     succeeded" in ok.stdout
    bad = command("run", tmp_path / "missing.csv", tmp_path / "sub2")
    assert bad.returncode == 2 and "missing.csv" in bad.stderr and "Traceback" not in bad.stderr
    failed = command("run", data, tmp_path / "sub3", "--detector", "test_cli:fails_on_second_chunk", "--chunk-size",
                     3000, "--retries", 0, "--no-progress", env={**os.environ, "PYTHONPATH": str(TESTS)})  # fmt: skip
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    usage = command("run", "--chunk-size")
    assert usage.returncode == 2 and "usage:" in usage.stderr and "Traceback" not in usage.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "batchnb"
    if not script.exists():
        pytest.skip("no console script beside this interpreter (not a venv install)")
    run = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    for name in ("run", "status", "verify", "report", "demo", "detectors"):
        assert name in run.stdout
