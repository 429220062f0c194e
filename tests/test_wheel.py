"""A plain `pip install` of the built wheel, in a fresh venv away from this checkout, does everything a user
starts with: a job, the CLI (status, verify, report), the notebook widgets and a report with its HTML.

The fast test reads the wheel's file list; the slow one installs it with its dependencies from the package
index (pip's cache makes a second run quick; bytecode is not written ahead) and prints the figures a user would
meet: the wheel's size, the installed size and the time from `pip install` to a first result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

import batchnb

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout (a build writes build/ and *.egg-info beside its sources)."""
    dist, source = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("source") / "batchnb"
    skip = (
        ".*",
        "build",
        "dist",
        "*.egg-info",
        "__pycache__",
        "benchmarks",
        "tests",
        "test-artifacts",
        "out",
        "data",
        "demo",
    )
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*skip))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = dist.glob("batchnb-*.whl")
    return built


def test_the_wheel_ships_the_report_template_license_and_one_version(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "batchnb/templates/report.ipynb" in names
    assert "batchnb/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert f"Version: {batchnb.__version__}" in metadata  # written once, in batchnb/_version.py
    assert "License-Expression: MIT" in metadata and "Classifier: Framework :: Jupyter" in metadata
    requires = {
        line.split(" ", 1)[1].split(";")[0] for line in metadata.splitlines() if line.startswith("Requires-Dist")
    }
    for name in ("ipywidgets", "tqdm", "papermill", "nbconvert", "ipykernel"):  # the notebook experience, no extra
        assert any(r.startswith(name) and "extra" not in r for r in requires), name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert set(project["optional-dependencies"]) >= {"dask", "ray", "s3", "gcs"}


USER_SCRIPT = r"""
import sys
import numpy as np, polars as pl
import batchnb as bn

rng = np.random.default_rng(0)
pl.DataFrame({"id": np.arange(20_000), "x": rng.normal(size=20_000), "y": rng.normal(size=20_000)}).write_parquet("tx.parquet")
result = bn.BatchJob("tx.parquet", "out", detector="mad", chunk_size=5_000, engine="threads").run(progress=None)
assert result.status == "succeeded", result
assert result.read().collect().height == 20_000
job = bn.BatchJob("tx.parquet", "out", detector="mad", chunk_size=5_000, engine="threads")
form = job.widget()  # the ipywidgets form: built, with its controls
assert type(form).__name__ == "JobForm"
from batchnb.views.live import LiveView
LiveView(name="check", output="out")
print("FIRST-RESULT-OK", bn.__file__)
"""


@pytest.mark.slow
def test_a_plain_install_runs_a_job_the_cli_the_widgets_and_a_report(wheel: Path, tmp_path: Path) -> None:
    venv, home = tmp_path / "venv", tmp_path / "user"
    home.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    env.pop("JUPYTER_PATH", None)

    def run(*argv: str, timeout: float = 300) -> str:
        done = subprocess.run(list(argv), env=env, cwd=home, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{argv}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    t0 = time.monotonic()
    # --no-compile: writing every dependency's bytecode took half the install and changes nothing a user runs.
    run(str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-compile", str(wheel), timeout=900)
    installed = time.monotonic() - t0
    first = run(str(bin_dir / "python"), "-c", USER_SCRIPT)
    first_result = time.monotonic() - t0
    assert "FIRST-RESULT-OK" in first and str(venv) in first  # the installed package, not this checkout

    batchnb_cli = str(bin_dir / "batchnb")
    assert "succeeded" in run(batchnb_cli, "status", "out")
    run(batchnb_cli, "verify", "out")
    run(batchnb_cli, "report", "out", timeout=600)
    assert (home / "out" / "report.ipynb").is_file() and (home / "out" / "report.html").stat().st_size > 10_000

    site = next((venv / "lib").glob("python3*/site-packages"))
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    print(
        f"\nwheel {wheel.name}: {wheel.stat().st_size / 1e3:.0f} kB; installed with dependencies "
        f"{size / 1e6:.0f} MB; pip install {installed:.0f} s; first result {first_result:.0f} s after it started"
    )
