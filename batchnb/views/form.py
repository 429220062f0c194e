"""`job.widget()`: the configuration form, generated from `JobConfig`'s fields, with Run / Cancel / Retry failed.

Every change rebuilds the config through `JobConfig.from_dict`, so the form shows exactly the messages that
`BatchJob(...)` raises (never a traceback), and a valid form is always `job.config`. Reading the source (format,
schema, chunk count) happens on a background thread, so typing a path never blocks the kernel.
"""

from __future__ import annotations

import dataclasses
import html
import math
import pprint
import re
import threading
import typing
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from batchnb import detectors, engines
from batchnb.config import CHUNK_SIZE_RANGE, JobConfig
from batchnb.plan import Plan, plan_warnings
from batchnb.record.status import JobStatus
from batchnb.views.fields import Control, control_for, controls_for
from batchnb.views.live import LiveView
from batchnb.views.panels import fmt_bytes

__all__ = ["JobForm"]

MAIN = ("source", "output", "detector", "columns", "threshold", "contamination", "chunk_size", "engine", "retries",
        "resources")  # fmt: skip
NUMERIC_PREFIXES = ("Int", "UInt", "Float", "Decimal")


class JobForm(w.VBox):
    """The form of one BatchJob; `controls[name]` is the control of config field `name` ("resources.max_workers")."""

    def __init__(self, job, *, background: bool = True) -> None:
        super().__init__()
        self.add_class("batchnb-form")
        self.job = job
        self.background = background
        self.valid = True
        self.plan: Plan | None = None
        self.source_error: str | None = None
        self._generation = 0
        self._inspected_key: Any = None
        self._inspector: threading.Thread | None = None
        config = job.config
        self.controls: dict[str, Control] = _controls(config)

        self.format_badge = w.HTML("")
        self.format_badge.add_class("batchnb-format")
        self.schema = w.HTML("")
        self.schema.add_class("batchnb-schema")
        self.detector_help = w.HTML("")
        self.estimate = w.HTML("")
        self.estimate.add_class("batchnb-estimate")
        self.controls["source"].show_extra(self.format_badge)
        self.controls["detector"].show_extra(self.detector_help)
        self.controls["chunk_size"].show_extra(self.estimate)
        self.message = w.HTML("")
        self.message.add_class("batchnb-form-message")
        self.code = w.HTML("")
        self.code.add_class("batchnb-code")

        self.live = LiveView(name=config.name or "batchnb", output=config.output, display=False, updater=True)
        self.live.widget.layout.display = "none"
        self.run_button = w.Button(description="Run", icon="play", button_style="primary")
        self.run_button.add_class("batchnb-run")
        self.run_button.on_click(lambda _: self.run())
        buttons = w.HBox([self.run_button, self.live.cancel_button, self.live.retry_button, self.live.message])
        self.live.widget.children = self.live.widget.children[:-1]  # its buttons live in the form's row
        self.live.on_render = self._on_render

        main = [self.controls[n].row for n in self.controls if n.split(".")[0] in MAIN]
        more = [self.controls[n].row for n in self.controls if n.split(".")[0] not in MAIN]
        more_box = w.Accordion(children=[w.VBox(more)], titles=("More options",), selected_index=None)
        title = w.HTML("<b>batchnb job</b>: configure, then Run (it runs in the background; the notebook stays usable)")
        self.children = [title, *main[:1], self.schema, *main[1:], more_box, self.message, buttons, self.code,
                         self.live.widget]  # fmt: skip
        for control in self.controls.values():
            control.observe(lambda _change: self.changed())
        self.controls["detector"].input.observe(lambda _: self._describe_detector(), names="value")
        self._describe_detector()
        self.changed()

    def __repr__(self) -> str:
        return f"JobForm({self.job!r})"

    def _describe_detector(self) -> None:
        value = self.controls["detector"].input.value
        text = detectors.list_detectors().get(value, "") if isinstance(value, str) else "a function or Detector"
        self.detector_help.value = f"<i>{html.escape(text)}</i>"

    # --- validation: the config's own checks ----------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, control in self.controls.items():
            outer, _, inner = name.partition(".")
            if inner:
                data.setdefault(outer, {})[inner] = control.get()
            else:
                data[name] = control.get()
        return data

    def changed(self) -> None:
        """Rebuild the config from the form; on success it becomes `job.config`, else the message is shown."""
        for control in self.controls.values():
            control.error.value = ""
        try:
            config = JobConfig.from_dict(self.values())
        except Exception as exc:  # noqa: BLE001 - every problem is a message in the form, never a traceback
            self._invalid(str(exc))
            return
        self.valid = True
        self.job.config = config
        self.message.value = ""
        self.run_button.disabled = False
        self._show_code(config)
        self._inspect_if_needed(config)
        self._check_against_source(config)
        self._show_estimate()

    def _invalid(self, message: str) -> None:
        self.valid = False
        self.run_button.disabled = True
        control = _named_in(message, self.controls)
        text = f"<span style='color:#de2d26'>{html.escape(message, quote=False)}</span>"
        if control is not None:
            control.error.value = text
        self.message.value = text

    def _show_code(self, config: JobConfig) -> None:
        self.code.value = _code_html(config)

    def _check_against_source(self, config: JobConfig) -> None:
        if self.plan is None:
            return
        from batchnb.scoring import resolve_columns

        try:
            resolve_columns(config, self.plan.dataset)
        except Exception as exc:  # noqa: BLE001
            self._invalid(str(exc))

    # --- reading the source ---------------------------------------------------------------------------------
    def _inspect_if_needed(self, config: JobConfig) -> None:
        key = (config.source, config.format, repr(sorted(config.read_options.items())), config.allow_pickle)
        if key == self._inspected_key:
            return
        self._inspected_key = key
        self._generation += 1
        generation = self._generation
        self.format_badge.value = _badge(config.format or "?", "#777") + " <i>reading…</i>"
        if self.background:
            self._inspector = threading.Thread(target=self.inspect_source, args=(generation,), daemon=True,
                                               name="batchnb-form-inspect")  # fmt: skip
            self._inspector.start()
        else:
            self.inspect_source(generation)

    def inspect_source(self, generation: int | None = None) -> None:
        """Open the source (metadata only, where the format allows) and show its format, schema and plan."""
        from batchnb.driver.prepare import plan as plan_job

        job = dataclasses.replace(self.job.config, columns=None, keep=None)  # checked against the schema after
        try:
            plan = plan_job(job)
        except Exception as exc:  # noqa: BLE001 - a source that does not exist yet is fine: say so
            if generation is None or generation == self._generation:
                self.plan, self.source_error = None, str(exc)
                self.format_badge.value = _badge(job.format or "?", "#777") + f" <i>{html.escape(str(exc))}</i>"
                self.schema.value = ""
                self._show_estimate()
            return
        if generation is not None and generation != self._generation:
            return  # the user typed another path meanwhile
        self.plan, self.source_error = plan, None
        info = plan.dataset
        self.format_badge.value = _badge(info.format, "#2ca25f") + (
            f" {len(info.paths)} file(s), {info.total_rows:,} rows, {fmt_bytes(info.total_bytes)}"
        )
        self.schema.value = _schema_table(info.schema)
        numeric = [n for n, t in info.schema.items() if t.startswith(NUMERIC_PREFIXES)]
        for name, options in (("columns", numeric), ("keep", list(info.schema))):
            select = self.controls[name].input
            chosen = tuple(select.value)  # names the source lacks stay, so the check below can name them
            select.options = options + [v for v in chosen if v not in options]
            select.value = chosen
        self._show_estimate()
        self.changed()

    def _show_estimate(self) -> None:
        size = self.controls["chunk_size"].input.value
        if self.plan is None:
            self.estimate.value = "<i>chunk count and memory once the source is read</i>"
            return
        plan = dataclasses.replace(self.plan, chunk_size=size, chunks=())
        exact = "~" if plan.rows_estimated else ""
        chunks = math.ceil(plan.rows_total / size) if plan.rows_total else 0
        warnings = plan_warnings(plan, pickle_input=plan.dataset.format == "pickle", unpicklable=None)
        notes = "".join(f"<div class='batchnb-plan-warning'>⚠ {html.escape(w)}</div>" for w in warnings)
        self.estimate.value = (
            f"{exact}{chunks:,} chunks · ~{fmt_bytes(plan.memory_per_chunk)} per chunk"
            f" · recommended {plan.recommended_chunk_size:,}{notes}"
        )

    # --- running --------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Start the job in the background (the kernel stays free), showing progress in the live view below."""
        if not self.valid:
            return
        self.live.name = self.job.config.name or "batchnb"
        self.live.output = self.job.output
        self.live.widget.layout.display = None
        try:
            self.job.start(progress=self.live)
        except Exception as exc:  # noqa: BLE001 - shown, never raised into the widget callback
            self.live.message.value = f"<span style='color:#de2d26'>{html.escape(str(exc))}</span>"

    def _on_render(self, progress) -> None:
        disabled = not JobStatus(progress.status).is_terminal or not self.valid
        if self.run_button.disabled != disabled:
            self.run_button.disabled = disabled

    def _ipython_display_(self) -> None:
        from IPython.display import display

        from batchnb.views.logline import SummarySlot

        display(self._repr_mimebundle_(), raw=True)
        self.live._slot = SummarySlot()


def _controls(config: JobConfig) -> dict[str, Control]:
    """One control per config field (nested ones as "resources.max_workers"), showing `config`'s values."""
    controls: list[Control] = []
    hints = typing.get_type_hints(JobConfig)
    for field in dataclasses.fields(JobConfig):
        value = getattr(config, field.name)
        if field.name in _SPECIAL:
            special = _SPECIAL[field.name](value)
            special.set_help(field.metadata.get("help", ""))  # the CLI's help too: one text per field
            controls.append(special)
        elif dataclasses.is_dataclass(hints[field.name]):
            controls += controls_for(hints[field.name], value, prefix=f"{field.name}.")
        else:
            controls.append(control_for(field.name, hints[field.name], value, field))
    return {control.name: control for control in controls}


def _named_in(message: str, controls: dict[str, Control]) -> Control | None:
    """The control of the first option a message names in backticks (`resources.max_workers` or `max_workers`)."""
    for name in re.findall(r"`([A-Za-z_.]+)`", message):
        for key, control in controls.items():
            if key == name or key.endswith("." + name):
                return control
    return None


# --- the controls the field types alone cannot make -------------------------------------------------------------
def _control_source(value) -> Control:
    if isinstance(value, tuple):
        area = w.Textarea(value="\n".join(value), rows=min(6, len(value)))
        return Control("source", area, lambda: tuple(p.strip() for p in area.value.splitlines() if p.strip()))
    text = w.Text(value=value, placeholder="data/*.parquet", layout=w.Layout(width="420px"), continuous_update=False)
    return Control("source", text, lambda: text.value.strip())


def _control_detector(value) -> Control:
    options = [(name, name) for name in detectors.names()]
    if not isinstance(value, str):
        label = getattr(value, "name", None) or getattr(value, "__qualname__", type(value).__name__)
        options.append((f"{label} (given in code)", value))
    dropdown = w.Dropdown(options=options, value=value)
    return Control("detector", dropdown, lambda: dropdown.value)


def _columns_control(name: str, value, label: str) -> Control:
    select = w.SelectMultiple(options=list(value or ()), value=tuple(value or ()), rows=5)
    return Control(name, select, lambda: tuple(select.value) or None, label=label)


def _control_chunk_size(value) -> Control:
    low, high = CHUNK_SIZE_RANGE
    field = w.BoundedIntText(value=value, min=low, max=high, step=1_000)
    return Control("chunk_size", field, lambda: field.value)


def _control_engine(value) -> Control:
    options = [(name, name) for name in engines.names()]
    if not isinstance(value, str):
        options.append((f"{value.name} (given in code)", value))
    dropdown = w.Dropdown(options=options, value=value)
    return Control("engine", dropdown, lambda: dropdown.value)


_SPECIAL: dict[str, Callable[[Any], Control]] = {
    "source": _control_source,
    "detector": _control_detector,
    "columns": lambda value: _columns_control("columns", value, "feature columns"),
    "keep": lambda value: _columns_control("keep", value, "keep columns"),
    "chunk_size": _control_chunk_size,
    "engine": _control_engine,
}


def _code_html(config: JobConfig) -> str:
    """The code that makes this job, for copying into a script."""
    try:
        text = "import batchnb as bn\n\njob = bn.BatchJob.from_config(\n" + pprint.pformat(
            config.to_dict(), indent=4, sort_dicts=False, width=100) + "\n)"  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - e.g. a notebook function cannot be written down
        text = f"# {exc}"
    return f"<details><summary>code for this job</summary><pre>{html.escape(text, quote=False)}</pre></details>"


def _badge(text: str, colour: str) -> str:
    return f"<span class='bn-badge' style='background:{colour};color:#fff;border-radius:3px;padding:1px 6px'>{html.escape(text)}</span>"


def _schema_table(schema: dict[str, str]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(n)}</td><td><code>{html.escape(t)}</code></td></tr>" for n, t in schema.items()
    )
    return (
        "<details><summary>schema: " + f"{len(schema)} columns</summary>"
        f"<table style='font-size:12px'><tr><th>column</th><th>dtype</th></tr>{cells}</table></details>"
    )
