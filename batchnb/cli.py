"""The `batchnb` command: exit 0 ok, 1 job failed, 2 usage or input error; never a traceback for user errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from batchnb.config import Backoff, JobConfig, Resources
from batchnb.errors import BatchError, describe, one_line
from batchnb.record.status import JobStatus

__all__ = ["main"]

# Nested option groups become flat flags: `--max-workers` sets resources.max_workers, `--backoff-base` backoff.base.
_GROUPS: dict[str, tuple[type, str]] = {"resources": (Resources, ""), "backoff": (Backoff, "backoff-")}
_POSITIONAL = ("source", "output")
_FIELDS = {f.name: f for f in dataclasses.fields(JobConfig)}


def _flag_kind(hint: Any) -> dict[str, Any]:
    """argparse keywords for a config field's type hint: Literal -> choices, bool -> a switch, numbers typed,
    tuples of str -> comma lists, mappings -> JSON; anything else (a detector or engine name) is text."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else typing.Union[tuple(inner)]  # noqa: UP007 - a runtime union
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return {"choices": args}
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint in (int, float):
        return {"type": hint}
    if origin is tuple and args[:1] == (str,):
        return {"type": _comma_list, "metavar": "A,B"}
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return {"type": _json_object, "metavar": "JSON"}
    if args and set(args) & {int, float}:  # a number or a string, e.g. memory_limit 0.8 or 8GB
        return {"type": _number_or_text}
    return {}


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f'not JSON ({exc.msg}); write an object such as \'{{"separator": ";"}}\''
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object such as \'{{"separator": ";"}}\', got {text!r}')
    return value


def _number_or_text(text: str) -> float | int | str:
    """'0.8' is a fraction and '2000000' a byte count, as in a config file; '8GB' stays text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _option_flags(cls: type = JobConfig, group: str = "") -> list[tuple[str, str, dict[str, Any]]]:
    """(flag, dest, argparse keywords) for each option of a config dataclass, nested groups flattened."""
    hints = typing.get_type_hints(cls)
    flags = []
    for field in dataclasses.fields(cls):
        if not group and field.name in _POSITIONAL:
            continue
        if not group and field.name in _GROUPS:
            flags += _option_flags(_GROUPS[field.name][0], field.name)
            continue
        prefix = _GROUPS[group][1] if group else ""
        kind = {"help": field.metadata.get("help"), **_flag_kind(hints[field.name])}
        if "choices" in field.metadata:  # names from a registry: the built-ins and the plugins installed
            kind["choices"] = field.metadata["choices"]()
        if "choices" not in kind:
            kind.setdefault("metavar", field.name.upper())
        dest = f"{group}.{field.name}" if group else field.name
        flags.append((f"--{prefix}{field.name.replace('_', '-')}", dest, kind))
    return flags


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `JobConfig` option, so that a new option reaches the CLI with no edit here."""
    for flag, dest, kind in _option_flags():
        parser.add_argument(flag, dest=dest, default=None, **kind)


def _flag_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given as flags, nested groups as dicts; flags left out are absent (a config file's stay)."""
    options: dict[str, Any] = {}
    for _flag, dest, _kind in _option_flags():
        value = getattr(args, dest)
        if value is None:
            continue
        group, _, name = dest.rpartition(".")
        if group:
            options.setdefault(group, {})[name] = value
        else:
            options[name] = value
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchnb", description="Chunked, checkpointed batch jobs over large datasets."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) a job")
    for name in _POSITIONAL:  # optional here: a --config file may name them
        run.add_argument(name, nargs="?", help=_FIELDS[name].metadata["help"])
    run.add_argument("--config", help="job config file (.json, .toml, .yaml); flags override it")
    _add_option_flags(run)
    run.add_argument("--restart", action="store_true", help="discard another job's state in OUTPUT first")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--report", action="store_true", help="make the HTML report when the job ends")

    status = sub.add_parser("status", help="progress of a job, from any process")
    status.add_argument("output")
    status.add_argument("--watch", action="store_true", help="refresh until the job ends")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes with --watch")
    status.add_argument("--json", action="store_true")

    trusted = "read pickle/HDF5 parts back, which can run code: only for an output you trust"
    verify = sub.add_parser("verify", help="recompute part checksums and row counts")
    verify.add_argument("output")
    verify.add_argument("--allow-pickle", action="store_true", help=trusted)

    report = sub.add_parser("report", help="execute the report notebook over a job and export it to HTML")
    report.add_argument("output")
    report.add_argument("--path", help="executed notebook to write (default OUTPUT/report.ipynb); HTML beside it")
    report.add_argument("--no-html", action="store_true", help="write the notebook only")
    report.add_argument("--kernel", help="Jupyter kernel that runs the report (default: python3)")
    report.add_argument("--allow-pickle", action="store_true", help=trusted)

    demo = sub.add_parser("demo", help="make a sample dataset and run a job on it")
    demo.add_argument("--rows", type=int, default=2_000_000)
    demo.add_argument("--dir", default="demo")
    demo.add_argument("--engine", default="threads")
    demo.add_argument("--no-report", action="store_true", help="skip the HTML report")

    sub.add_parser("detectors", help="list the built-in detectors")

    attach = sub.add_parser("attach", help="follow a running job's progress (tqdm) until it ends; Ctrl-C detaches")
    attach.add_argument("output")
    jobs = sub.add_parser("jobs", help="list the jobs under a folder with their status")
    jobs.add_argument("path", nargs="?", default=".")

    schedule = sub.add_parser("schedule", help="run a pipeline file on a cron schedule (foreground)")
    schedule.add_argument("file", help="pipeline .toml/.yaml/.json with [[steps]] (and optionally [schedule] cron)")
    schedule.add_argument("--cron", help="5 fields, or 6 with seconds first; overrides the file's")
    return parser


def _attach(args: argparse.Namespace) -> int:
    """Ctrl-C stops following, not the job (`batchnb status`, or attach again, shows it later)."""
    from batchnb.attach import attach

    attached = attach(args.output, "text")
    try:
        result = attached.wait()
    except KeyboardInterrupt:
        attached.detach()
        print(f"detached from {args.output!r}; the job goes on", file=sys.stderr)
        return 130
    return 0 if result.status == JobStatus.SUCCEEDED else 1  # the view has printed the summary


def _jobs(args: argparse.Namespace) -> int:
    from batchnb.record.listing import jobs

    for row in jobs(args.path).iter_rows(named=True):
        done = f"{row['chunks_done']}/{row['chunks_total']} chunks" if row["chunks_total"] is not None else ""
        print(f"{row['status']:<12} {done:<16} {row['output']}")
    return 0


def _is_pipeline_file(path: str | None) -> bool:
    """A TOML/YAML/JSON file with a `steps` list is a pipeline, not a data source."""
    if not path or Path(path).suffix.lower() not in (".toml", ".yaml", ".yml", ".json") or not Path(path).is_file():
        return False
    from batchnb.job import load_config_file

    try:
        return isinstance(load_config_file(path).get("steps"), list)
    except BatchError:
        return False


def _run_pipeline(path: str) -> int:
    from batchnb.pipeline import Pipeline

    result = Pipeline.from_file(path).run()
    print(result)
    return 0 if result.status == JobStatus.SUCCEEDED else 1


def _schedule(args: argparse.Namespace) -> int:
    from batchnb.errors import ConfigError
    from batchnb.pipeline import Pipeline

    pipe = Pipeline.from_file(args.file)
    cron = args.cron or pipe.cron
    if not cron:
        raise ConfigError(f"{args.file!r} has no [schedule] cron and no --cron was given")
    print(f"pipeline {pipe.name!r} on cron {cron!r}; Ctrl-C stops", flush=True)
    pipe.schedule(cron=cron, block=True)
    return 0


def _run(args: argparse.Namespace) -> int:
    if _is_pipeline_file(args.source) and args.output is None and args.config is None:
        return _run_pipeline(args.source)
    job = _job_from_args(args)
    result = job.run(progress=None if args.no_progress else "auto", restart=args.restart)
    print(result.summary())
    reported = _print_report(job.output, allow_pickle=job.config.allow_pickle) if args.report else True
    return 0 if result.ok and reported else 1


def _job_from_args(args: argparse.Namespace):
    """The job of `batchnb run`: the --config file's options, overridden by SOURCE, OUTPUT and the flags."""
    import batchnb as bn
    from batchnb.job import load_config_file

    options = load_config_file(args.config) if args.config else {}
    if args.source:
        options["source"] = args.source
    if args.output:
        options["output"] = args.output
    for key, value in _flag_options(args).items():
        if key in _GROUPS and isinstance(options.get(key), Mapping):
            value = {**options[key], **value}  # a flag overrides one field of the file's table
        options[key] = value
    if "source" not in options or "output" not in options:
        raise bn.ConfigError("give SOURCE and OUTPUT, or a --config file that names them")
    return bn.BatchJob.from_config(options)


def _status(args: argparse.Namespace) -> int:
    import batchnb as bn

    while True:
        p = bn.status(args.output)
        if args.json:
            print(json.dumps(p.to_dict()))
        else:
            eta = f"{p.eta_s:.0f}s" if p.eta_s is not None else "-"
            print(
                f"{p.status}: {p.percent:5.1f}% {p.rows_done:,}/{p.rows_total:,} rows, chunks {p.chunks_done}/"
                f"{p.chunks_total} done {p.chunks_failed} failed, {p.rows_per_s:,.0f} rows/s, ETA {eta}",
                flush=True,
            )
        if not args.watch or JobStatus(p.status).is_terminal:
            return 1 if p.status in (JobStatus.FAILED, JobStatus.INTERRUPTED) else 0
        time.sleep(max(0.1, args.interval))


def _verify(args: argparse.Namespace) -> int:
    from batchnb.verify import verify

    report = verify(args.output, allow_pickle=args.allow_pickle)
    print(report)
    return 0 if report.ok else 1


def _print_report(output: str, **options) -> bool:
    """Make the report and print where it is; False (with the failing cell's error) when a cell failed."""
    from batchnb.reports import make_report

    print("making the report ...", flush=True)
    try:
        notebook = make_report(output, **options)
    except BatchError:
        raise
    except Exception as exc:
        papermill = sys.modules.get("papermill.exceptions")
        if papermill is None or not isinstance(exc, papermill.PapermillExecutionError):
            raise
        from batchnb.place import home

        target = options.get("path") or Path(home(output), "report.ipynb")
        print(f"the report notebook failed ({exc.ename}: {exc.evalue}); see {Path(target).resolve()}", file=sys.stderr)
        return False
    html = notebook.with_suffix(".html")
    print(f"report: {html.resolve() if html.exists() else notebook.resolve()}")
    return True


def _report(args: argparse.Namespace) -> int:
    made = _print_report(
        args.output, path=args.path, html=not args.no_html, kernel_name=args.kernel, allow_pickle=args.allow_pickle
    )
    return 0 if made else 1


def _demo(args: argparse.Namespace) -> int:
    import batchnb as bn
    from batchnb.demo import DEMO_COLUMNS, DEMO_CONTAMINATION, injected_hits, make_transactions

    data = Path(args.dir, "transactions.parquet")
    if not data.exists():
        print(f"writing {args.rows:,} sample rows to {data} ...", flush=True)
        make_transactions(data, rows=args.rows)
    job = bn.BatchJob(data, Path(args.dir, "scores"), detector="mad", contamination=DEMO_CONTAMINATION,
                      engine=args.engine, columns=DEMO_COLUMNS)  # fmt: skip
    print(f"detector mad over {', '.join(DEMO_COLUMNS)}; contamination={DEMO_CONTAMINATION}: flag the "
          f"{DEMO_CONTAMINATION:.1%} of rows that score highest (cut at that quantile of the fit sample's scores)")  # fmt: skip
    result = job.run(progress="auto")
    print(result.summary())
    hits = injected_hits(result.read())
    if hits is not None:
        print(hits)
    top = result.read().sort("anomaly_score", descending=True).head(10).collect()
    print("\nmost anomalous rows (injected = the truth the sample data was made with):")
    print(top)
    print(f"\nresult: {Path(job.output).resolve()}  (read it with bn.BatchJob.from_config or pl.scan_parquet)")
    reported = True if args.no_report else _print_report(job.output)
    return 0 if result.ok and reported else 1


def _detectors(args: argparse.Namespace) -> int:
    import batchnb as bn

    for name, description in bn.list_detectors().items():
        print(f"{name:18} {description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handlers = {"run": _run, "status": _status, "verify": _verify, "report": _report, "demo": _demo,
                "detectors": _detectors, "schedule": _schedule, "attach": _attach, "jobs": _jobs}  # fmt: skip
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: finished parts are kept; run the same command again to resume", file=sys.stderr)
        return 1
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the boundary: one line, exit 2, whatever raised (a panic too)
        print(f"batchnb {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """A batchnb error's own message; anything else (a library's error that got this far) with its type."""
    if isinstance(exc, BatchError | OSError):  # an OSError names the path the user has to fix
        return one_line(exc).replace("run(restart=True)", "--restart")  # the same advice, in the shell's terms
    return describe(exc)


if __name__ == "__main__":
    sys.exit(main())
