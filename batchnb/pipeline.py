"""Pipeline: batch jobs and papermill notebooks as steps of a DAG, run through one JobQueue.

A second `run()` reuses every step whose config and inputs are unchanged and that succeeded: a job step
is up to date when its state is `succeeded` for the same job identity and source fingerprint; a notebook
step when the notebook, its parameters and the versions of its upstream steps hash as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchnb.errors import ConfigError
from batchnb.job import BatchJob, load_config_file
from batchnb.queue import JobQueue

__all__ = ["Pipeline", "PipelineResult"]


@dataclass
class _Step:
    name: str
    after: tuple[str, ...]
    job: BatchJob | None = None
    notebook: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    kernel_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class PipelineResult:
    status: str  # succeeded | failed
    steps: dict[str, str]  # name -> succeeded | failed | skipped
    reused: tuple[str, ...] = ()  # steps that were up to date and not run again
    errors: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def __str__(self) -> str:
        lines = [f"pipeline {self.status} in {self.elapsed_s:.1f}s"]
        for name, status in self.steps.items():
            note = " (up to date)" if name in self.reused else f": {self.errors[name]}" if name in self.errors else ""
            lines.append(f"  {name:20} {status}{note}")
        return "\n".join(lines)


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as a path that starts and ends at the same step, or None."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        stack.append(node)
        for dep in graph.get(node, ()):
            if color.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if color.get(dep) is None and (cycle := visit(dep)):
                return cycle
        stack.pop()
        color[node] = 2
        return None

    for node in graph:
        if color.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


def _file_name(name: Any, what: str) -> str:
    """A name that becomes one file name in the state directory: one path component, never `..` or a path."""
    if not isinstance(name, str) or name in ("", ".", "..") or set(name) & {"/", "\\", "\0"}:
        msg = (
            f"{what} {name!r} must be a plain name (it names a file in the pipeline's state directory): no '/', "
            "'\\', '..' or empty name; e.g. 'nightly-scores'"
        )
        raise ConfigError(msg)
    return name


class Pipeline:
    def __init__(
        self,
        name: str,
        *,
        max_workers: int | None = None,
        memory_limit: float | int | str | None = None,
        state_dir: str | os.PathLike | None = None,
    ) -> None:
        self.name = _file_name(name, "pipeline name")
        self.max_workers, self.memory_limit = max_workers, memory_limit
        self.state_dir = Path(state_dir) if state_dir else Path(".batchnb-pipelines")
        self._steps: dict[str, _Step] = {}
        self._run_lock = threading.Lock()

    # --- building ----------------------------------------------------------------------------------
    def _add(self, step: _Step) -> str:
        if step.name in self._steps:
            raise ConfigError(f"pipeline {self.name!r} already has a step named {step.name!r}: step names are unique")
        graph = {s.name: s.after for s in self._steps.values()} | {step.name: step.after}
        cycle = find_cycle(graph)
        if cycle:  # rejected as it is built; cycles through steps added later are caught by validate()
            raise ConfigError(f"step {step.name!r} would close a dependency cycle: {' -> '.join(cycle)}")
        self._steps[step.name] = step
        return step.name

    def add(self, job: BatchJob, *, name: str | None = None, after: Iterable[str] = ()) -> str:
        """Add a batch job; returns the step name (the job's name by default)."""
        if not isinstance(job, BatchJob):
            raise ConfigError(f"Pipeline.add takes a bn.BatchJob, got {type(job).__name__}")
        return self._add(_Step(name=name or job.config.name or "job", after=tuple(after), job=job))

    def notebook(
        self,
        path: str | os.PathLike,
        parameters: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        after: Iterable[str] = (),
        output: str | os.PathLike | None = None,
        kernel_name: str | None = None,
    ) -> str:
        """Add a papermill notebook step; the executed copy goes to `output` (default: the state dir)."""
        step_name = name or Path(path).stem
        if output is None:  # the executed copy is named after the pipeline and the step
            _file_name(step_name, "step name")
        return self._add(_Step(name=step_name, after=tuple(after), notebook=os.fspath(path),
                               parameters=dict(parameters or {}), output=os.fspath(output) if output else None,
                               kernel_name=kernel_name))  # fmt: skip

    def validate(self) -> list[str]:
        """Steps in an order that respects `after=`; unknown names and cycles are ConfigErrors naming them."""
        for step in self._steps.values():
            unknown = [d for d in step.after if d not in self._steps]
            if unknown:
                raise ConfigError(
                    f"step {step.name!r} runs after {unknown}, which pipeline {self.name!r} does not have"
                )
        cycle = find_cycle({s.name: s.after for s in self._steps.values()})
        if cycle:
            raise ConfigError(f"pipeline {self.name!r} has a dependency cycle: {' -> '.join(cycle)}")
        order: list[str] = []
        seen: set[str] = set()
        while len(order) < len(self._steps):
            for step in self._steps.values():
                if step.name not in seen and all(d in seen for d in step.after):
                    order.append(step.name)
                    seen.add(step.name)
        return order

    # --- running -----------------------------------------------------------------------------------
    def _record_path(self) -> Path:
        return self.state_dir / f"{self.name}.json"

    def _load_record(self) -> dict[str, Any]:
        try:
            return json.loads(self._record_path().read_text())
        except (OSError, ValueError):
            return {}

    def _save_record(self, record: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._record_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, self._record_path())

    def run(self) -> PipelineResult:
        """Run every step whose dependencies succeeded, concurrently where the DAG allows."""
        order = self.validate()
        if not self._run_lock.acquire(blocking=False):
            raise ConfigError(f"pipeline {self.name!r} is already running: a run never overlaps the previous one")
        try:
            return self._run(order)
        finally:
            self._run_lock.release()

    def _run(self, order: list[str]) -> PipelineResult:
        t0 = time.monotonic()
        record = self._load_record()
        queue = JobQueue(max_workers=self.max_workers, memory_limit=self.memory_limit)
        status: dict[str, str] = {}
        versions: dict[str, str] = {}
        errors: dict[str, str] = {}
        reused: list[str] = []
        running: dict[str, Any] = {}
        lock = threading.Lock()
        while len(status) < len(order):
            for name in order:
                if name in status or name in running:
                    continue
                step = self._steps[name]
                deps = [status.get(d) for d in step.after]
                if any(d in ("failed", "skipped") for d in deps):
                    status[name] = "skipped"
                    errors[name] = (
                        f"skipped: {', '.join(d for d in step.after if status[d] != 'succeeded')} did not succeed"
                    )
                    continue
                if not all(d == "succeeded" for d in deps):
                    continue
                version = _version(step, versions)
                previous = record.get(name, {})
                if previous.get("status") == "succeeded" and previous.get("version") == version:
                    status[name], versions[name] = "succeeded", version
                    reused.append(name)
                    continue
                versions[name] = version
                running[name] = self._start(step, queue, lock)
            finished = [n for n, r in running.items() if r["done"].is_set()]
            for name in finished:
                outcome = running.pop(name)
                status[name] = outcome["status"]
                if outcome.get("error"):
                    errors[name] = outcome["error"]
                record[name] = {"status": status[name], "version": versions[name], "at": time.time()}
                self._save_record(record)
            if not finished:
                time.sleep(0.05)
        overall = "succeeded" if all(s == "succeeded" for s in status.values()) else "failed"
        return PipelineResult(status=overall, steps={n: status[n] for n in order}, reused=tuple(reused),
                              errors=errors, elapsed_s=time.monotonic() - t0)  # fmt: skip

    def _start(self, step: _Step, queue: JobQueue, lock: threading.Lock) -> dict[str, Any]:
        outcome: dict[str, Any] = {"done": threading.Event()}
        if step.job is not None:
            handle = queue.submit(step.job)

            def watch() -> None:
                try:
                    result = handle.wait()
                    outcome["status"] = "succeeded" if result.ok else "failed"
                    if not result.ok:
                        outcome["error"] = f"job {result.status}: " + "; ".join(str(e) for e in result.errors[:3])
                except Exception as exc:  # noqa: BLE001 - a step's failure is reported, never fatal
                    outcome["status"], outcome["error"] = "failed", f"{type(exc).__name__}: {exc}"
                outcome["done"].set()

        else:

            def watch() -> None:
                try:
                    self._execute_notebook(step)
                    outcome["status"] = "succeeded"
                except Exception as exc:  # noqa: BLE001
                    outcome["status"], outcome["error"] = "failed", f"{type(exc).__name__}: {str(exc)[:500]}"
                outcome["done"].set()

        threading.Thread(target=watch, name=f"batchnb-step-{step.name}", daemon=True).start()
        return outcome

    def _execute_notebook(self, step: _Step) -> None:
        import papermill

        out = Path(step.output) if step.output else self.state_dir / f"{self.name}-{step.name}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(step.notebook, str(out), parameters=step.parameters, progress_bar=False,
                                   kernel_name=step.kernel_name)  # fmt: skip

    # --- loading and scheduling ----------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Pipeline:
        """A pipeline from TOML/YAML/JSON: `name`, optional `max_workers`/`memory_limit`/`state_dir`, and
        `[[steps]]` each with `name`, `after`, and either `job = {...BatchJob config...}` or `notebook` +
        `parameters`. Relative paths are relative to the file."""
        return _from_file(cls, path)

    cron: str | None = None

    def schedule(self, cron: str, *, block: bool = False):
        """Run on a cron schedule (5 fields, or 6 with seconds first); see `batchnb.schedule.Schedule`."""
        from batchnb.schedule import Schedule

        return Schedule(self, cron).start(block=block)


def _version(step: _Step, versions: dict[str, str]) -> str:
    """What the step's result depends on; equal versions mean the step would compute the same thing."""
    digest = hashlib.sha256()
    if step.job is not None:
        from batchnb.sources import fingerprint, resolve_paths

        digest.update(step.job.config.identity_hash().encode())
        try:
            digest.update(json.dumps(fingerprint(resolve_paths(step.job.config.source))).encode())
        except Exception:  # noqa: BLE001 - an input that does not exist yet: the step must run
            digest.update(str(time.time()).encode())
    elif step.notebook is not None:
        digest.update(Path(step.notebook).read_bytes())
        digest.update(json.dumps(step.parameters, sort_keys=True, default=str).encode())
    for dep in step.after:
        digest.update(versions.get(dep, "").encode())
    return digest.hexdigest()


def _from_file(cls: type[Pipeline], path: str | os.PathLike) -> Pipeline:
    data = load_config_file(path)
    base = Path(path).resolve().parent
    if "steps" not in data or not isinstance(data["steps"], list):
        raise ConfigError(f"pipeline file {os.fspath(path)!r} has no [[steps]] list")
    pipe = cls(
        data.get("name", Path(path).stem),
        max_workers=data.get("max_workers"),
        memory_limit=data.get("memory_limit"),
        state_dir=base / data.get("state_dir", ".batchnb-pipelines"),
    )

    def local(p: str) -> str:
        return p if os.path.isabs(p) or "://" in p else str(base / p)

    for i, step in enumerate(data["steps"]):
        after = step.get("after", [])
        if "job" in step:
            config = dict(step["job"])
            for key in ("source", "output"):
                if key in config and isinstance(config[key], str):
                    config[key] = local(config[key])
            pipe.add(BatchJob.from_config(config), name=step.get("name"), after=after)
        elif "notebook" in step:
            params = {k: local(v) if k.endswith(("_dir", "_path")) and isinstance(v, str) else v
                      for k, v in step.get("parameters", {}).items()}  # fmt: skip
            pipe.notebook(local(step["notebook"]), params, name=step.get("name"), after=after,
                          output=local(step["output"]) if step.get("output") else None)  # fmt: skip
        else:
            raise ConfigError(f"step {i} of {os.fspath(path)!r} needs a `job` table or a `notebook` path")
    pipe.cron = data.get("schedule", {}).get("cron") if isinstance(data.get("schedule"), dict) else None
    return pipe
