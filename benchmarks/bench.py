"""Robust-z benchmark: batchnb's engines side by side with plain Polars, a hand-written loop, pandas, Dask and Ray.

Usage::

    python benchmarks/bench.py [--quick] [--out DIR] [--cases PATTERNS] [--datasets parquet,csv] [--repeat N]

The data is generated once and cached under ``benchmarks/.cache/`` (``bench_data.py``; see ``README.md``), the
cases live in ``bench_cases.py`` and the report in ``bench_tables.py``. Every case runs in a fresh child process,
one after another, so that its peak memory is its own: the parent samples the RSS of the child and all its
descendants every 50 ms, the child times its own wall clock. The machine is shared and noisy, so read the results
as ratios within one run (and use ``--repeat`` to keep the fastest of several round-robin trials).

A case is a function ``(src, out, dataset)`` in ``CASES``; it may return extra figures (a dict), and a
``setup`` run before the clock (its time reported as ``startup_s``) gives the warm-cluster cases a
running Dask or Ray, so that start-up is shown apart from the work.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from fnmatch import fnmatch
from importlib.metadata import version
from pathlib import Path

from bench_cases import BASELINE, CASES, CHUNK_SIZE, Case, check_output
from bench_data import CACHE_DIR, DATASETS, SIZES, ensure_dataset, warm_cache
from bench_tables import add_ratios, markdown

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
SAMPLE_EVERY_S = 0.05


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, its reaped children and its live descendants (worker pools
    kept warm, cluster workers): what a case costs in work, steadier than wall time on a busy machine."""
    import resource

    import psutil

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue  # gone meanwhile: counted once reaped
        live += times.user + times.system
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + live


def child_main(spec: dict) -> None:
    """Run one case and print one JSON line: wall time, then what the output holds (checked untimed)."""
    case, src, out = CASES[spec["case"]], Path(spec["src"]), Path(spec["out"])
    for module in case.preload:
        importlib.import_module(module)
    t0 = time.perf_counter()
    teardown = case.setup() if case.setup is not None else None
    extra = {"startup_s": time.perf_counter() - t0} if case.setup is not None else {}
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    extra.update(case.run(src, out, spec["dataset"]) or {})
    wall, extra["cpu_s"] = time.perf_counter() - t0, cpu_seconds() - cpu0
    if teardown is not None:
        teardown()
    rows, anomalies, ok = check_output(out, spec["rows"])
    print(json.dumps({"wall_s": wall, "rows_out": rows, "anomalies": anomalies, "output_ok": ok, **extra}))


# --- the parent: runs cases, measures memory, writes the table ---------------------------------------


def tree_rss(proc) -> int:
    """Summed RSS of a process and all its descendants (pool workers, spawned helpers)."""
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_case(name: str, dataset: str, src: Path, rows: int, work: Path, keep: bool) -> dict:
    """One case in a fresh child; peak RSS of its process tree sampled every 50 ms."""
    import psutil

    out = work / f"{name}-{dataset}"
    spec = {"case": name, "dataset": dataset, "src": str(src), "out": str(out), "rows": rows}
    record = {"case": name, "dataset": dataset, "rows": rows}
    # What earlier cases wrote (and deleted) reaches the disk first: a 10 GB case writes 1.6 GB of parts, and the
    # next case's writes waited for that writeback (measured: batchnb's part writes 4.5 -> 8-9 ms per chunk).
    os.sync()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)], stdout=stdout, stderr=stderr
        )
        proc, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            peak = max(peak, tree_rss(proc))
            time.sleep(SAMPLE_EVERY_S)
        stdout.seek(0)
        stderr.seek(0)
        lines = stdout.read().strip().splitlines()
        if child.returncode != 0 or not lines:
            record["error"] = f"exit {child.returncode}: {stderr.read()[-2000:]}"
        else:
            record.update(json.loads(lines[-1]))
            record["rows_per_s"] = rows / record["wall_s"]
    record["peak_rss_mib"] = peak / 2**20
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return record


def batchnb_commit() -> str:
    """The commit the package was measured at, `+dirty` when batchnb/ has uncommitted changes."""
    git = ["git", "-C", str(HERE.parent)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "batchnb"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(quick: bool, repeat: int) -> dict:
    import psutil

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "repeat": repeat,
        "batchnb_commit": batchnb_commit(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "chunk_size": CHUNK_SIZE,
        "versions": {"python": platform.python_version(),
                     **{m: version(m) for m in ("polars", "pyarrow", "pandas", "batchnb")}},
    }  # fmt: skip


def best_of(trials: list[dict]) -> dict:
    """The fastest trial of a case, with every trial's wall time and the highest peak memory.

    Noise on a shared machine only ever adds time, so the minimum is the steadiest estimate;
    a failed trial fails the case.
    """
    failed = [t for t in trials if "error" in t]
    best = dict(failed[0] if failed else min(trials, key=lambda t: t["wall_s"]))
    best["walls_s"] = [t.get("wall_s") for t in trials]
    best["peak_rss_mib"] = max(t["peak_rss_mib"] for t in trials)
    return best


def run_all(runs: list[tuple[str, str]], sizes: dict[str, int], repeat: int, keep: bool) -> list[dict]:
    """Every (case, dataset) `repeat` times, round-robin, so that a slow spell of the machine is
    spread over all cases instead of landing on one."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE_DIR))  # same disk as the data
    trials: dict[tuple[str, str], list[dict]] = {}
    try:
        for trial in range(repeat):
            for dataset in dict.fromkeys(d for _, d in runs):
                src = ensure_dataset(dataset, sizes[dataset])
                warm_cache(src)
                for name in (n for n, d in runs if d == dataset):
                    print(f"[{trial + 1}/{repeat}] {name} on {dataset} ...", file=sys.stderr, flush=True)
                    trials.setdefault((name, dataset), []).append(
                        run_case(name, dataset, src, sizes[dataset], work / str(trial), keep)
                    )
    finally:
        if keep:
            print(f"outputs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return [best_of(t) for t in trials.values()]


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def select_runs(patterns: list[str] | None, datasets: list[str], *, quick: bool = False) -> list[tuple[str, str]]:
    """(case, dataset) pairs in run order: dataset by dataset, cases in `CASES` order. Optional cases run
    only when a pattern names them; without patterns, a quick run leaves out the cases that start a cluster."""

    def default(case: Case) -> bool:
        return not case.optional and not (quick and case.needs_cluster)

    names = [n for n in CASES if (default(CASES[n]) if patterns is None else any(fnmatch(n, p) for p in patterns))]
    return [(n, d) for d in datasets for n in names if d in CASES[n].datasets]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every dataset at 100k-400k rows; without --cases, no Dask or Ray case (`--cases '*'` for all)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.json and latest.md go")
    parser.add_argument(
        "--cases",
        help=f"comma-separated names or globs, e.g. 'batchnb-*,{BASELINE}' (default: all but the optional ones)",
    )
    parser.add_argument(
        "--datasets", default=",".join(DATASETS), help=f"comma-separated, of {list(DATASETS)} (default: all)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="trials per case, round-robin; the fastest is reported")
    parser.add_argument("--keep-outputs", action="store_true", help="keep each case's output under the cache dir")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    patterns = args.cases.split(",") if args.cases else None
    unknown = [p for p in patterns or () if not any(fnmatch(n, p) for n in CASES)]
    if unknown:
        parser.error(f"--cases {unknown} match no case; cases are {list(CASES)}")
    datasets = [d for d in args.datasets.split(",") if d]
    if unknown := [d for d in datasets if d not in DATASETS]:
        parser.error(f"--datasets {unknown} are not datasets; datasets are {list(DATASETS)}")
    args.runs = select_runs(patterns, datasets, quick=args.quick)
    if not args.runs and not args.child:
        parser.error("nothing to run: check --cases and --datasets")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    env = environment(args.quick, args.repeat)
    records = run_all(args.runs, SIZES[args.quick], args.repeat, args.keep_outputs)
    add_ratios(records)
    table = markdown(env, records)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "latest.json", json.dumps({**env, "results": records}, indent=2) + "\n")
    write_atomic(args.out / "latest.md", table)
    print(table)
    return 1 if any("error" in r or not r.get("output_ok") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
