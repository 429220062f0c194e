"""binder/: what Binder installs, so that notebooks/01_quickstart.ipynb opens ready to run.

The fast tests check the files against pyproject.toml and the README badge; the slow one does what Binder
does (requirements into a fresh venv, then postBuild) and runs the quickstart there with papermill.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requirements() -> dict[str, str]:
    lines = [ln.strip() for ln in (BINDER / "requirements.txt").read_text().splitlines()]
    return {_name(ln): ln for ln in lines if ln and not ln.startswith("#")}


def test_requirements_cover_the_package_the_notebooks_and_every_engine() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needed = [*project["dependencies"], *extras["dask"], *extras["ray"]]
    have = requirements()
    missing = [r for r in needed if _name(r) not in have]
    assert not missing, f"binder/requirements.txt lacks {missing}"
    for requirement in needed:  # same lower bounds as pyproject.toml, so Binder never gets an older version
        assert have[_name(requirement)].replace(" ", "") == requirement.replace(" ", ""), requirement


def test_post_build_installs_the_package_and_runtime_pins_python() -> None:
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "postBuild must be executable"
    text = post_build.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "pip install --no-deps ." in text
    assert " -e " not in text  # a regular install, as a user's: the report template comes from the package
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_readme_badge_opens_the_quickstart() -> None:
    first_lines = "\n".join((ROOT / "README.md").read_text().splitlines()[:4])
    assert "https://mybinder.org/badge_logo.svg" in first_lines
    assert "labpath=notebooks%2F01_quickstart.ipynb" in first_lines


@pytest.mark.slow
def test_binder_install_runs_the_quickstart_in_a_fresh_venv(tmp_path) -> None:
    venv = tmp_path / "binder-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)

    def run(*argv: str, timeout: float) -> None:
        done = subprocess.run(list(argv), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{argv}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"

    # --no-compile: Binder's pip also writes bytecode, which changes nothing the test checks and costs half the time.
    requirements_txt = str(BINDER / "requirements.txt")
    run(str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-compile", "-r", requirements_txt, timeout=900)
    run(str(BINDER / "postBuild"), timeout=300)  # `python` on PATH is the new venv's, as in Binder
    out = tmp_path / "run"
    run(
        str(bin_dir / "python"), "-m", "papermill", str(ROOT / "notebooks" / "01_quickstart.ipynb"),
        str(tmp_path / "quickstart.ipynb"), "--cwd", str(tmp_path), "-k", "python3", "--no-progress-bar",
        "-p", "data_path", str(tmp_path / "tx.parquet"), "-p", "output_dir", str(out),
        timeout=300,
    )  # fmt: skip
    assert (out / "report.html").exists()  # the quickstart's last step: papermill inside Binder works too
