"""Import boundaries: `import batchnb` stays light, and only views/ touches a UI library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "batchnb"
HEAVY = ("ray", "dask", "distributed", "ipywidgets", "sklearn", "papermill", "tqdm", "apscheduler", "IPython")


def test_importing_batchnb_imports_no_engine_ui_or_ml_library():
    code = f"import sys, batchnb; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_only_views_import_ui_libraries():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "views" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("ipywidgets", "tqdm", "IPython")]
    assert offenders == []


def test_every_public_name_resolves_and_star_import_gets_them_all():
    code = (
        "import batchnb, batchnb.attach\n"
        "ns = {}\n"
        "exec('from batchnb import *', ns)\n"
        "missing = [n for n in batchnb.__all__ if n not in ns or ns[n] is not getattr(batchnb, n)]\n"
        "print(missing, callable(batchnb.attach), sorted(set(batchnb.__all__) - set(dir(batchnb))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] True []"  # and `bn.attach` stays the function once its module is imported


def test_a_worker_process_imports_the_chunk_path_without_the_drivers_machinery():
    # Spawned workers (processes, Dask, Ray) unpickle the chunk task: each module left out is start-up saved.
    driver_only = ("batchnb.job", "batchnb.pipeline", "batchnb.queue", "batchnb.plan", "batchnb.driver.run",
                   "batchnb.driver.loop", "batchnb.reports", "batchnb.views")  # fmt: skip
    code = (
        "import sys, batchnb.driver.task, batchnb.driver.batches, batchnb.engines.pool\n"
        f"print([m for m in {driver_only!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
