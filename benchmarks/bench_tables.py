"""The Markdown report of one run: the weakest ratio first, then the tables the README copies.

Every ratio is a case's rows/s divided by plain Polars' (`polars-stream`, snappy like batchnb) on the same dataset.
"""

from __future__ import annotations

from bench_cases import BASELINE, CODEC, HAND_LOOP, HAND_PARTS, SCALING, SWEEP, TABLES, scaling_case

RATIO = "vs_" + BASELINE.replace("-", "_")
HEADLINE_CASES = ("batchnb-threads", "batchnb-processes")  # the engines whose weakest ratio leads the report
WORKER_STEPS = ("read", "score", "write")  # Polars' own work, mostly: the query that reads, scores and writes
OVERHEAD_STEPS = ("checksum", "rename", "submit", "commit", "progress")  # batchnb's own, outside Polars
SIDE_BY_SIDE = (BASELINE, "polars-stream-zstd", HAND_LOOP, HAND_PARTS, "batchnb-sequential", "batchnb-threads",
                "batchnb-threads-chunk1m", "batchnb-processes", "batchnb-processes-warm", "batchnb-dask-warm", "batchnb-ray-warm",
                "pandas-loop")  # fmt: skip
# Cases shown in their own section only, not in the main table.
SECTION_CASES = {*SWEEP.values(), *(scaling_case(e, n) for e in ("dask", "ray") for n in SCALING)} - {
    "batchnb-threads", "batchnb-dask-warm", "batchnb-ray-warm"
}  # fmt: skip


def add_ratios(records: list[dict]) -> None:
    base = {r["dataset"]: r["rows_per_s"] for r in records if r["case"] == BASELINE and "rows_per_s" in r}
    for r in records:
        if "rows_per_s" in r and r["dataset"] in base:
            r[RATIO] = r["rows_per_s"] / base[r["dataset"]]


def _ratio(r: dict | None) -> str:
    ratio = None if r is None else r.get(RATIO)
    return "" if ratio is None else f"{ratio:.2f}"


def weakest(records: list[dict]) -> dict | None:
    """The batchnb threads or processes run (default chunk size) with the lowest ratio to plain Polars."""
    found = [r for r in records if r["case"] in HEADLINE_CASES and RATIO in r]
    return min(found, key=lambda r: r[RATIO], default=None)


def headline(records: list[dict]) -> list[str]:
    worst = weakest(records)
    if worst is None:
        return []
    return [
        f"**Weakest ratio: `{worst['case']}` on `{worst['dataset']}` at {worst[RATIO]:.2f}x plain Polars** "
        f'(`{BASELINE}`: scan -> score -> `sink_parquet(compression="{CODEC}")`, same columns, same codec; '
        "the weakest of batchnb `threads` and `processes` at the default chunk size over every dataset)."
    ]


def results_table(records: list[dict]) -> list[str]:
    lines = [f"| case | dataset | wall s | rows/s | peak RSS MiB | rows/s vs {BASELINE} | anomalies | start-up s "
             "| CPU s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in records:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['dataset']} | failed | | {r['peak_rss_mib']:.0f} | | | | |")
            continue
        flag = "" if r["output_ok"] else " (bad output)"
        startup = f"{r['startup_s']:.2f}" if "startup_s" in r else ""
        lines.append(
            f"| {r['case']} | {r['dataset']} | {r['wall_s']:.2f} | {r['rows_per_s'] / 1e6:.2f}M | "
            f"{r['peak_rss_mib']:.0f} | {_ratio(r)} | {r['anomalies']}{flag} | {startup} | {r.get('cpu_s', 0):.2f} |"
        )
    return lines


def side_by_side_table(found: dict) -> list[str]:
    """Cases as rows, the 20M-row datasets as columns: wall seconds (ratio to plain Polars)."""
    datasets = [d for d in TABLES if any((c, d) in found for c in SIDE_BY_SIDE)]
    lines = ["| case | " + " | ".join(f"`{d}`" for d in datasets) + " |", "|---|" + "---:|" * len(datasets)]
    for case in SIDE_BY_SIDE:
        cells = []
        for d in datasets:
            r = found.get((case, d))
            cells.append("" if r is None else "failed" if "error" in r else f"{r['wall_s']:.2f} s ({_ratio(r)})")
        if any(cells):
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


TARGETS: tuple[tuple[str, str, str, float | None], ...] = (  # (what, numerator, denominator, target or None)
    ("threads vs plain Polars", "batchnb-threads", BASELINE, 1.0),
    ("threads vs the hand-written loop", "batchnb-threads", HAND_LOOP, 0.8),
    (
        "threads vs its own parts written by hand (no target: what batchnb's code adds)",
        "batchnb-threads",
        HAND_PARTS,
        None,
    ),
    ("processes vs threads", "batchnb-processes", "batchnb-threads", 0.8),
    ("processes, warm pool, vs threads", "batchnb-processes-warm", "batchnb-threads", 0.8),
    ("Dask, warm, vs threads", "batchnb-dask-warm", "batchnb-threads", 0.8),
    ("Ray, warm, vs threads", "batchnb-ray-warm", "batchnb-threads", 0.8),
)


def targets_table(found: dict) -> list[str]:
    """Each of issue 16's ratios per dataset (rows/s over rows/s; the target in its own column)."""
    datasets = [d for d in dict.fromkeys(d for _, d in found) if any((c, d) in found for _, c, _, _ in TARGETS)]
    lines = ["| ratio | target | " + " | ".join(f"`{d}`" for d in datasets) + " |",
             "|---|---:|" + "---:|" * len(datasets)]  # fmt: skip
    for what, top, bottom, target in TARGETS:
        cells = []
        for d in datasets:
            a, b = found.get((top, d)), found.get((bottom, d))
            ok = a and b and "rows_per_s" in a and "rows_per_s" in b
            cells.append(f"{a['rows_per_s'] / b['rows_per_s']:.2f}" if ok else "")
        if any(cells):
            goal = "" if target is None else f">= {target:.1f}"
            lines.append(f"| {what} | {goal} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def _steps(records: list[dict]) -> list[str]:
    """Every step recorded, the known ones in chunk order and any other after them."""
    seen = dict.fromkeys(s for r in records for s in r.get("per_chunk_ms", {}))
    known = (*WORKER_STEPS, *OVERHEAD_STEPS)
    return [s for s in known if s in seen] + [s for s in seen if s not in known]


def breakdown_table(records: list[dict]) -> list[str]:
    """Per chunk, from the job's own record: each step's milliseconds, Polars' work (read, score, write)
    and batchnb's own around it (checksum, rename on the worker; submit, commit, progress on the driver).
    Not the sequential engine: its submit runs the chunk itself, so it would count Polars' work twice."""
    rows = [r for r in records if r.get("per_chunk_ms") and r["case"] not in {*SECTION_CASES, "batchnb-sequential"}]
    steps = _steps(rows)
    if not rows:
        return []
    lines = ["| case | dataset | chunks | " + " | ".join(f"{s} ms" for s in steps)
             + " | read+score+write ms | outside Polars ms |",
             "|---|---|---:|" + "---:|" * (len(steps) + 2)]  # fmt: skip
    for r in rows:
        ms = r["per_chunk_ms"]
        polars = sum(ms.get(s, 0.0) for s in WORKER_STEPS)
        outside = sum(v for s, v in ms.items() if s not in WORKER_STEPS)
        lines.append(
            f"| {r['case']} | {r['dataset']} | {r.get('chunks', '')} | "
            + " | ".join(f"{ms.get(s, 0.0):.2f}" for s in steps)
            + f" | {polars:.2f} | {outside:.2f} |"
        )
    return lines


def memory_table(found: dict) -> list[str]:
    """Peak RSS of every batchnb case run on both a 20M-row file and a ~10 GB file of one format."""
    lines = [
        "| case | format | peak RSS MiB, `parquet`/`csv` | peak RSS MiB, `-10g` | growth |",
        "|---|---|---:|---:|---:|",
    ]
    for (case, dataset), small in found.items():
        big = found.get((case, f"{dataset}-10g"))
        if "-" in dataset or not case.startswith("batchnb") or big is None or "error" in small or "error" in big:
            continue
        a, b = small["peak_rss_mib"], big["peak_rss_mib"]
        lines.append(f"| {case} | {dataset} | {a:.0f} | {b:.0f} | {100 * (b - a) / a:+.0f} % |")
    return lines if len(lines) > 2 else []


def planning_table(records: list[dict]) -> list[str]:
    """Time before the first chunk (CSV: the record index pass) as a share of the whole job."""
    lines = ["| case | dataset | inspect + plan s | sample + fit s | wall s | planning share |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in records:
        prep = r.get("prepare_s")
        if not prep or not r["case"].startswith("batchnb-threads") or r["case"] in SECTION_CASES:
            continue
        plan, fit = prep.get("inspect", 0) + prep.get("plan", 0), prep.get("sample", 0) + prep.get("fit", 0)
        lines.append(
            f"| {r['case']} | {r['dataset']} | {plan:.2f} | {fit:.2f} | {r['wall_s']:.2f} | "
            f"{100 * plan / r['wall_s']:.1f} % |"
        )
    return lines if len(lines) > 2 else []


def sweep_table(found: dict) -> list[str]:
    """Chunk size against speed, with each step's milliseconds per chunk (worker steps run in parallel)."""
    runs = [(size, found[case, "parquet"]) for size, case in SWEEP.items() if (case, "parquet") in found]
    runs = [(size, r) for size, r in runs if "error" not in r]
    steps = _steps([r for _, r in runs])
    lines = [f"| chunk size | chunks | wall s | rows/s vs {BASELINE} | peak RSS MiB | "
             + " | ".join(f"{s} ms" for s in steps) + " | per-chunk total ms |",
             "|---:|---:|---:|---:|---:|" + "---:|" * (len(steps) + 1)]  # fmt: skip
    for size, r in runs:
        ms = r.get("per_chunk_ms", {})
        lines.append(
            f"| {size:,} | {r.get('chunks', '')} | {r['wall_s']:.2f} | {_ratio(r)} | {r['peak_rss_mib']:.0f} | "
            + " | ".join(f"{ms.get(s, 0):.2f}" for s in steps)
            + f" | {sum(ms.values()):.2f} |"
        )
    return lines if len(lines) > 2 else []


def scaling_table(found: dict) -> list[str]:
    lines = ["| engine | workers | wall s | rows/s | rows/s per worker | speed-up vs 1 worker | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for engine in ("dask", "ray"):
        one = found.get((scaling_case(engine, 1), "parquet"))
        for n in SCALING:
            r = found.get((scaling_case(engine, n), "parquet"))
            if r is None or "error" in r:
                continue
            speedup = f"{r['rows_per_s'] / one['rows_per_s']:.2f}" if one and "error" not in one else ""
            lines.append(
                f"| {engine} | {n} | {r['wall_s']:.2f} | {r['rows_per_s'] / 1e6:.2f}M | "
                f"{r['rows_per_s'] / n / 1e6:.2f}M | {speedup} | {r['peak_rss_mib']:.0f} |"
            )
    return lines if len(lines) > 2 else []


def markdown(env: dict, records: list[dict]) -> str:
    v = env["versions"]
    head = (
        f"Robust-z benchmark ({'quick' if env['quick'] else 'full'}, best of {env['repeat']}), {env['date']}, "
        f"{env['cores']} cores, {env['ram_gib']} GiB RAM; "
        + ", ".join(f"{k} {v[k]}" for k in v)
        + f" ({env['batchnb_commit']})"
    )
    found = {(r["case"], r["dataset"]): r for r in records}
    main = [r for r in records if r["case"] not in SECTION_CASES]
    sections = [
        ("", headline(records)),
        (f"Side by side: wall s (rows/s vs {BASELINE}), narrow and wide tables", side_by_side_table(found)),
        ("Targets: rows/s ratios per dataset", targets_table(found)),
        ("Every case", results_table([r for r in main if "-10g" not in r["dataset"]])),
        ("About 10 GB per file", results_table([r for r in main if "-10g" in r["dataset"]])),
        ("Per-chunk breakdown: batchnb at the default chunk size (ms per chunk)", breakdown_table(records)),
        ("Peak memory against dataset size", memory_table(found)),
        ("Planning (for CSV, the record index) against the whole job", planning_table(records)),
        ("Chunk-size sweep: batchnb threads on the `parquet` dataset", sweep_table(found)),
        ("Scaling: warm local clusters on the `parquet` dataset", scaling_table(found)),
    ]
    out = [head]
    for title, lines in sections:
        if lines and (len(lines) > 2 or not title):
            out += ["", f"**{title}**", ""] if title else [""]
            out += lines
    return "\n".join(out) + "\n"
