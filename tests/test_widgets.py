"""The notebook experience without a browser: the form, the live view, the plain-text line and the detection rule.

Widgets here have no kernel (ipywidgets uses a dummy comm); messages are counted by patching `Widget._send`.
"""

from __future__ import annotations

import dataclasses
import html
import io
import math
import re
import subprocess
import sys
import threading
import time

import ipywidgets
import pytest
from jupyter_kernel import venv_kernel

import batchnb as bn
from batchnb.record.snapshot import ChunkBoard, ChunkMonitor
from batchnb.record.status import ChunkStatus
from batchnb.record.store import JobState
from batchnb.sources.dataset import ChunkSpec, Piece
from batchnb.views import detect, make_view
from batchnb.views.form import JobForm
from batchnb.views.html import chunk_map_html, stats_html
from batchnb.views.live import LiveView
from batchnb.views.logline import LogView
from batchnb.views.panels import heartbeat, text_line

NUMERIC = ["id", "x1", "x2", "x3", "flat", "const", "count"]


def slow(df):
    """A callable detector slow enough to cancel (module level: importable, so the config round-trips)."""
    time.sleep(0.05)
    return df


@pytest.fixture
def form(sources, tmp_path) -> JobForm:
    job = bn.BatchJob(sources["parquet"], tmp_path / "out", chunk_size=1_000, engine="sequential")
    return JobForm(job, background=False)


@pytest.fixture
def sent(monkeypatch) -> list:
    """Every widget message (state updates and custom messages) sent after the fixture starts."""
    messages: list = []
    original = ipywidgets.Widget._send

    def record(self, msg, buffers=None):
        messages.append((type(self).__name__, msg))
        return original(self, msg, buffers)

    monkeypatch.setattr(ipywidgets.Widget, "_send", record)
    return messages


# --------------------------------------------------------------------------------------------------
# The form
# --------------------------------------------------------------------------------------------------
def test_form_has_a_control_for_every_config_field(form):
    expected = []
    for field in dataclasses.fields(bn.JobConfig):
        if field.name in ("backoff", "resources"):
            kind = bn.Backoff if field.name == "backoff" else bn.Resources
            expected += [f"{field.name}.{f.name}" for f in dataclasses.fields(kind)]
        else:
            expected.append(field.name)
    assert list(form.controls) == expected
    c = form.controls
    assert isinstance(c["detector"].input, ipywidgets.Dropdown)
    assert [v for _, v in c["detector"].input.options] == bn.detectors.names()
    assert html.escape(bn.list_detectors()["zscore"]) in form.detector_help.value
    assert isinstance(c["engine"].input, ipywidgets.Dropdown)
    assert isinstance(c["output_format"].input, ipywidgets.Dropdown)
    assert isinstance(c["format"].input, ipywidgets.Dropdown)
    assert isinstance(c["allow_pickle"].input, ipywidgets.Checkbox)
    assert isinstance(c["backoff.jitter"].input, ipywidgets.Checkbox)
    assert isinstance(c["retries"].input, ipywidgets.IntText)
    size = c["chunk_size"].input
    assert isinstance(size, ipywidgets.BoundedIntText) and (size.min, size.max) == (1_000, 1_000_000)
    assert isinstance(c["columns"].input, ipywidgets.SelectMultiple)
    # The widget tree: every control is reachable from the form, and the buttons are there.
    tree = _descendants(form)
    assert all(control.input in tree for control in c.values())
    assert {"Run", "Cancel", "Retry failed"} <= {b.description for b in tree if isinstance(b, ipywidgets.Button)}


def test_form_shows_each_fields_help_as_tooltip_and_line(form):
    """The help text of every JobConfig, Resources and Backoff field, the same that `batchnb run --help` shows."""
    from batchnb import cli

    cli_help = {dest: kind["help"] for _flag, dest, kind in cli._option_flags()}
    kinds = {"": bn.JobConfig, "resources": bn.Resources, "backoff": bn.Backoff}
    tree = _descendants(form)
    for name, control in form.controls.items():
        outer, _, inner = name.rpartition(".")
        help_text = next(f for f in dataclasses.fields(kinds[outer]) if f.name == inner).metadata["help"]
        assert help_text and control.input.tooltip == help_text, name
        assert control.help.value == f"<small>{html.escape(help_text)}</small>" and control.help in tree, name
        assert cli_help.get(name, help_text) == help_text, name
    assert form.controls["resources.memory_limit"].input.tooltip == "fraction of RAM (0.8) or a size (8GB)"
    assert "1_000 to 1_000_000" in form.controls["chunk_size"].help.value


def _descendants(widget) -> list:
    out = [widget]
    for child in getattr(widget, "children", ()):
        out += _descendants(child)
    return out


def test_form_reads_the_source(form, frame):
    assert "parquet" in form.format_badge.value and f"{len(frame):,} rows" in form.format_badge.value
    assert "x1" in form.schema.value and "Float64" in form.schema.value and "label" in form.schema.value
    assert list(form.controls["columns"].input.options) == NUMERIC  # the numeric columns only
    assert f"{math.ceil(len(frame) / 1_000)} chunks" in form.estimate.value and "per chunk" in form.estimate.value
    form.controls["chunk_size"].input.value = 4_000
    assert f"{math.ceil(len(frame) / 4_000)} chunks" in form.estimate.value


def test_form_shows_the_plans_warnings(tmp_path):
    import polars as pl

    path = tmp_path / "groups.parquet"
    pl.DataFrame({"x": [float(i) for i in range(20_000)]}).write_parquet(path, row_group_size=10_000)
    form = JobForm(bn.BatchJob(path, tmp_path / "out", chunk_size=2_000), background=False)
    assert "row group is cut into 5 chunks" in form.estimate.value
    form.controls["chunk_size"].input.value = 10_000
    assert "row group is cut" not in form.estimate.value


def test_form_shows_the_configs_own_messages(form):
    job = form.job
    before = job.config
    c = form.controls
    c["threshold"].input.value = "3"
    c["contamination"].input.value = "0.05"
    assert not form.valid and form.run_button.disabled
    assert "give at most one of `threshold` and `contamination`" in form.message.value
    assert job.config == dataclasses.replace(before, threshold=3)  # the last valid config stays
    c["threshold"].input.value = ""
    c["contamination"].input.value = "0.7"
    assert "`contamination` must be a fraction" in c["contamination"].error.value  # shown beside the field
    c["contamination"].input.value = "abc"
    assert "`contamination` must be a number" in form.message.value
    c["contamination"].input.value = ""
    c["read_options"].input.value = "{not json"
    assert "`read_options` must be a JSON object" in form.message.value
    c["read_options"].input.value = "{}"
    c["resources.memory_limit"].input.value = "lots"
    assert "`memory_limit` 'lots' is not a size" in c["resources.memory_limit"].error.value
    c["resources.memory_limit"].input.value = "8GB"
    assert form.valid and not form.run_button.disabled and form.message.value == ""
    assert job.config.resources.memory_limit == "8GB"
    # Checks against the source are the run's own (scoring.resolve_columns).
    c["keep"].input.value = ("id",)
    c["columns"].input.value = ("x1",)
    assert form.valid
    c["columns"].input.options = [*c["columns"].input.options, "label"]
    c["columns"].input.value = ("label",)
    assert not form.valid and "not numeric" in form.message.value


def test_form_round_trips_the_config(form, sources, tmp_path):
    c = form.controls
    c["detector"].input.value = "mad"
    c["chunk_size"].input.value = 2_000
    c["columns"].input.value = ("x1", "x2")
    c["engine"].input.value = "threads"
    c["retries"].input.value = 1
    c["threshold"].input.value = "4.5"
    c["resources.max_workers"].input.value = "2"
    c["backoff.jitter"].input.value = False
    c["name"].input.value = "from-the-form"
    config = form.job.config
    assert (config.detector, config.chunk_size, config.columns, config.engine, config.retries) == (
        "mad", 2_000, ("x1", "x2"), "threads", 1,
    )  # fmt: skip
    assert (config.threshold, config.resources.max_workers, config.backoff.jitter) == (4.5, 2, False)
    again = bn.BatchJob.from_config(config.to_dict())
    assert again.config == config
    assert "from_config(" in form.code.value and "'detector': 'mad'" in form.code.value
    # A form built from the reproduced job shows the same config.
    assert JobForm(again, background=False).job.config == config


def test_form_keeps_a_callable_detector(sources, tmp_path):
    job = bn.BatchJob(sources["parquet"], tmp_path / "out", detector=slow, chunk_size=1_000)
    f = JobForm(job, background=False)
    assert f.valid and f.job.config.detector is slow
    assert "tests.test_widgets:slow" in f.code.value or "test_widgets:slow" in f.code.value


def test_form_run_and_cancel(big_sources, tmp_path):
    job = bn.BatchJob(big_sources["parquet"], tmp_path / "out", detector=slow, chunk_size=1_000, engine="sequential")
    f = JobForm(job, background=False)
    f.live.refresh_s = 0.05
    f.run()
    deadline = time.monotonic() + 60
    while f.live.cancel_button.disabled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert f.run_button.disabled  # no second start while it runs
    f.live.cancel_button.click()
    result = job.wait(timeout=30)
    assert result.status == "cancelled"
    assert "cancelled" in f.live.header.value and f.live.bar.bar_style == "warning"
    f.run()  # resumes to the end
    assert job.wait(timeout=30).status == "succeeded"
    assert "succeeded" in f.live.header.value and f.live.bar.value == 100.0 and not f.run_button.disabled


def test_form_reports_a_missing_source_without_a_traceback(tmp_path):
    job = bn.BatchJob(tmp_path / "later.parquet", tmp_path / "out")
    f = JobForm(job, background=False)
    assert f.valid and "later.parquet" in f.format_badge.value and f.plan is None
    f.run()
    with pytest.raises(bn.SourceError):
        job.wait(timeout=30)
    assert "SourceError" in f.live.message.value and "Traceback" not in f.live.message.value


# --------------------------------------------------------------------------------------------------
# The live view
# --------------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def snapshot(i: int, n: int, **extra) -> bn.Progress:
    return bn.Progress(
        name="tx", status="running", chunks_total=n, chunks_done=i, chunks_running=2, rows_done=i * 1_000,
        rows_total=n * 1_000, percent=100.0 * i / n, rows_per_s=1_000.0 * (1 + i % 7), eta_s=(n - i) / 10,
        elapsed_s=i / 10, cpu_percent=150.0, rss_bytes=512 * 2**20, **extra,
    )  # fmt: skip


def test_view_renders_the_snapshot_numbers():
    clock = Clock()
    view = LiveView(name="tx", display=False, updater=False, clock=clock)
    view.update(snapshot(42, 100, chunks_failed=1, retries=3))
    assert view.tick()
    assert view.bar.value == 42.0
    stats = view.stats.value
    for text in ("42,000 / 100,000 rows", "(42.0%)", "1.00k rows/s", "elapsed <span class='bn-elapsed'>0:04",
                 "ETA <span class='bn-eta'>0:06", "CPU 150%", "RSS 512.0 MiB", "chunks 42/100 done", "2 running",
                 "1 failed", "3 retries"):  # fmt: skip
        assert text in stats, text
    assert "running" in view.header.value and view.cancel_button.disabled  # no job bound: nothing to cancel
    view.update(snapshot(43, 100))
    assert not view.tick()  # throttled: the clock has not moved
    clock.now += 0.6
    assert view.tick() and "43,000 / 100,000" in view.stats.value
    view.update(dataclasses.replace(snapshot(100, 100), status="succeeded", chunks_running=0, eta_s=None))
    view.close()
    assert view.bar.value == 100.0 and view.bar.bar_style == "success" and "succeeded" in view.header.value


def test_view_messages_are_bounded_for_100k_chunks(sent):
    clock = Clock()
    view = LiveView(name="tx", display=False, updater=False, clock=clock)
    sent.clear()
    n = 100_000
    for i in range(n):  # one snapshot per finished chunk, 1 ms apart: 100 s of a very fast job
        view.update(snapshot(i, n))
        clock.now += 0.001
        view.tick()
    view.close()
    renders = view.renders
    assert renders <= 100 / view.refresh_s + 2
    assert len(sent) <= 6 * renders  # at most one message per sub-widget per render, never one per chunk
    assert len(sent) < 1_500


def test_chunk_board_of_a_100k_chunk_job_is_light(tmp_path):
    n = 100_000
    with JobState.open(tmp_path, create=True) as state:
        specs = [ChunkSpec(index=i, pieces=(Piece(path="x", start=i, stop=i + 1),), rows=(i, i + 1), nbytes=1)
                 for i in range(n)]  # fmt: skip
        state.save_plan(specs)
        state.mark(range(0, 60_000), ChunkStatus.DONE)
        state.mark_running(60_000, 1)
        state._conn.execute("UPDATE chunks SET started = started - 300, status = 'running' WHERE idx = 60000")
        state._conn.execute("UPDATE chunks SET seconds = 1.5 WHERE status = 'done'")
        state._conn.execute("UPDATE chunks SET status = 'failed' WHERE idx = 99999")
    monitor = ChunkMonitor(tmp_path)
    board = monitor.board()
    monitor.close()
    assert board.chunks_total == n and len(board.cells) <= 400 and board.group == 250
    assert board.cells[0] == "done" and board.cells[-1] == "failed" and board.cells[240] == "running"
    assert board.counts["done"] == 60_000 and board.running[0][0] == 60_000
    html = chunk_map_html(board)
    assert html.count("<i ") <= 400 + 7 and len(html) < 12_000
    assert heartbeat(board).startswith("chunk 60000 running for 5 min")


def test_heartbeat_only_for_a_chunk_far_slower_than_its_peers():
    assert (
        heartbeat(ChunkBoard(running=((812, 240.0),), typical_s=2.0))
        == "chunk 812 running for 4 min (others take ~2.0 s)"
    )
    assert heartbeat(ChunkBoard(running=((3, 5.0),), typical_s=2.0)) is None
    assert heartbeat(ChunkBoard(running=((0, 30.0),), typical_s=None)) == "chunk 0 running for 30 s"
    p = snapshot(5, 10)
    assert "chunk 812 running for 4 min" in stats_html(p, ChunkBoard(running=((812, 240.0),), typical_s=2.0))
    assert "chunk 812 running" in text_line(p, ChunkBoard(running=((812, 240.0),), typical_s=2.0))


def test_view_follows_a_real_job_with_errors_and_retry(sources, tmp_path):
    def flaky(df):
        if int(df["id"][0]) == 2_000:
            raise ValueError("bad chunk")
        return df

    job = bn.BatchJob(sources["parquet"], tmp_path / "out", detector=flaky, chunk_size=1_000, engine="sequential",
                      retries=1, backoff=bn.Backoff(base=0.0, max=0.0, jitter=False))  # fmt: skip
    view = LiveView(name="flaky", output=job.output, display=False, refresh_s=0.05, board_every_s=0.0)
    result = job.run(progress=view)
    assert result.status == "failed" and result.chunks_failed == 1
    assert "failed" in view.header.value and view.bar.bar_style == "danger"
    assert "ValueError: bad chunk" in view.errors.value and "<details>" in view.errors.value
    assert "Traceback" in view.errors.value  # expandable traceback
    assert "class=failed" in view.chunk_map.value
    assert not view.retry_button.disabled
    view.retry_button.click()  # runs the failed chunk again in the background, shown in the same view
    assert job.wait(timeout=30).chunks_failed == 1


INTERRUPTED_RUN = """
import _thread, signal, sys, threading, time
import batchnb as bn

def slow(df):
    time.sleep(0.05)
    return df

class Interactive:
    interactive, closed, finished = True, False, None
    def __init__(self):
        self.running = threading.Event()
    def update(self, progress):
        if progress.chunks_done:
            self.running.set()
    def close(self):
        self.closed = True
    def finish(self, result, error=None):
        self.finished = result

if __name__ == "__main__":
    source, output = sys.argv[1:]
    # A kernel handles SIGINT even when started as a background job, which inherits it ignored (and then
    # interrupt_main would do nothing).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    view = Interactive()
    # The interrupt comes once a chunk is done (the job is certainly running), as the stop button would.
    threading.Thread(target=lambda: view.running.wait(60) and _thread.interrupt_main(), daemon=True).start()
    job = bn.BatchJob(source, output, detector=slow, chunk_size=1_000, engine="sequential")
    try:
        job.run(progress=view)
        print("returned", job.result().status if hasattr(job, "result") else "")
    except KeyboardInterrupt:
        print("interrupted", view.closed, view.finished.status, bn.status(output).status)
"""


def test_blocking_run_cancels_cleanly_on_a_kernel_interrupt(big_sources, tmp_path):
    """A blocking run with a live view, interrupted in the kernel's main thread: the job is cancelled cleanly,
    its view closed and told, and the interrupt propagates. Run in a process of its own, as a kernel is."""
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_RUN)
    done = subprocess.run([sys.executable, str(script), big_sources["parquet"], str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["interrupted", "True", "cancelled", "cancelled"], done.stdout + done.stderr[-2000:]


# --------------------------------------------------------------------------------------------------
# Plain text, detection, static HTML
# --------------------------------------------------------------------------------------------------
def test_log_view_is_throttled():
    stream = io.StringIO()
    view = LogView(name="tx", every_s=3600, stream=stream, summary=False)
    for i in range(1_000):
        view.update(snapshot(i, 1_000))
    view.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the first and the last
    assert lines[-1].startswith("tx: running  99.9% | 999,000/1,000,000 rows")


@pytest.mark.parametrize(
    ("kernel", "parent", "env", "expected"),
    [
        (False, "", {}, "text"),
        (True, "/usr/bin/python3 /usr/local/bin/papermill in.ipynb out.ipynb", {"JPY_SESSION_NAME": "a.ipynb"}, "log"),
        (True, "python -m ipykernel_launcher -f kernel.json", {"JPY_SESSION_NAME": "a.ipynb"}, "log"),
        (True, "jupyter-nbconvert --execute a.ipynb", {}, "log"),
        (True, "python -m pytest", {}, "log"),
        (True, "/venv/bin/python /venv/bin/jupyter-lab --no-browser", {"JPY_SESSION_NAME": "/w/a.ipynb"}, "widget"),
        (True, "/venv/bin/python /venv/bin/jupyter-lab", {"JPY_SESSION_NAME": "a", "BATCHNB_PROGRESS": "log"}, "log"),
        (False, "", {"BATCHNB_PROGRESS": "widget"}, "widget"),
    ],
)
def test_frontend_rule(monkeypatch, kernel, parent, env, expected):
    for key in ("JPY_SESSION_NAME", "VSCODE_PID", "BATCHNB_PROGRESS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(detect, "in_kernel", lambda: kernel)
    monkeypatch.setattr(detect, "_parent_cmdline", lambda: parent)
    assert detect.frontend() == expected


def test_factory_fails_safe(monkeypatch):
    monkeypatch.setattr(detect, "in_kernel", lambda: False)
    assert type(make_view("auto", name="x")).__name__ == "TerminalView"
    assert make_view(None) is None
    monkeypatch.setattr("batchnb.views.live.LiveView.__init__", lambda *a, **k: 1 / 0)
    assert type(make_view("widget", name="x")).__name__ == "LogView"
    with pytest.raises(bn.ConfigError, match="`progress`"):
        make_view("fancy")


def test_result_and_status_html(sources, tmp_path):
    out = tmp_path / "out"
    result = bn.BatchJob(sources["parquet"], out, chunk_size=2_000).run(progress=None)
    page = result._repr_html_()
    for text in ("succeeded", "6,000 in", "anomalies", "rows/s", "<a href="):
        assert text in page, text
    snap = bn.status(out)._repr_html_()
    assert "succeeded" in snap and "100.0%" in snap


def test_repr_html_and_the_live_view_render_progress_alike():
    """One renderer: a snapshot's _repr_html_ holds exactly the header and figures the live view shows."""
    p = bn.Progress(name="nightly", status="running", chunks_total=10, chunks_done=4, chunks_running=2,
                    rows_done=40_000, rows_total=100_000, percent=40.0, rows_per_s=12_345.0, eta_s=5.0,
                    elapsed_s=3.0, retries=1, last_error="ValueError: bad row")  # fmt: skip
    view = LiveView(name="nightly", display=False, updater=False)
    view.update(p)
    view.tick(force=True)
    page = p._repr_html_()
    assert view.header.value in page and view.stats.value in page
    for text in ("running", "40,000 / 100,000 rows", "12.35k rows/s", "1 retries so far", "ValueError: bad row"):
        assert text in page, text


def test_papermill_run_gets_plain_text_and_a_static_summary(tmp_path, monkeypatch):
    """papermill runs a real ipykernel that nobody renders: no widget, a throttled text line, the HTML summary."""
    import nbformat
    import papermill

    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("BATCHNB_PROGRESS", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import numpy as np, polars as pl, batchnb as bn\n"
            "pl.DataFrame({'x': np.arange(5_000.0)}).write_parquet('d.parquet')\n"
            "job = bn.BatchJob('d.parquet', 'out', chunk_size=1_000, engine='sequential')\n"
            "result = job.run()"
        ),
        nbformat.v4.new_code_cell("job.start().wait().status"),
        nbformat.v4.new_code_cell("job"),
    ]
    nbformat.write(nb, tmp_path / "in.ipynb")
    out = papermill.execute_notebook(
        str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), cwd=str(tmp_path), progress_bar=False,
        kernel_name=venv_kernel(),
    )  # fmt: skip
    outputs = [o for cell in out.cells for o in cell.get("outputs", [])]
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" not in mimes and "widgets" not in out.metadata
    lines = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert re.search(r"out: (running|succeeded) +\d", lines), lines
    summaries = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert summaries and "succeeded" in summaries[0] and "<table" in summaries[0]
    assert "'succeeded'" in str(out.cells[1].outputs)
    assert "BatchJob(" in str(out.cells[2].outputs)


def test_log_view_shows_the_heartbeat_of_a_stuck_chunk(tmp_path):
    with JobState.open(tmp_path, create=True) as state:
        state.save_plan([ChunkSpec(index=i, pieces=(), rows=(i, i + 1), nbytes=1) for i in range(3)])
        state.mark_running(2, 1)
        state._conn.execute("UPDATE chunks SET started = started - 90 WHERE idx = 2")
    stream = io.StringIO()
    view = LogView(name="tx", output=str(tmp_path), stream=stream, summary=False)
    view.update(snapshot(2, 3))
    view.close()
    assert "chunk 2 running for 90 s" in stream.getvalue()


def test_view_keeps_its_last_board_when_the_state_becomes_unreadable(sources, tmp_path, monkeypatch):
    job = bn.BatchJob(sources["parquet"], tmp_path / "out", chunk_size=1_000, engine="sequential")
    view = LiveView(name="tx", output=job.output, display=False, updater=False, board_every_s=0.0)
    result = job.run(progress=view)
    assert result.status == "succeeded" and "class=done" in view.chunk_map.value

    def unreadable(self):
        raise bn.JobStateError("the job state is unreadable")

    monkeypatch.setattr("batchnb.record.snapshot.ChunkMonitor.board", unreadable)
    view.tick(force=True)  # neither raises nor blanks what it showed
    view.close()
    assert "class=done" in view.chunk_map.value


@pytest.mark.parametrize(("fmt", "read_options", "approximate"), [
    ("csv", {}, True), ("csv", {"exact_rows": True}, False), ("json", {}, True), ("parquet", {}, False),
])  # fmt: skip
def test_form_marks_the_chunk_count_approximate_only_when_rows_are_estimated(
    sources, tmp_path, fmt, read_options, approximate
):
    """Byte-range chunks of a text file are estimates; exact_rows counts them: the form follows the plan."""
    job = bn.BatchJob(sources[fmt], tmp_path / "out", chunk_size=1_000, engine="sequential", read_options=read_options)
    form = JobForm(job, background=False)
    assert "chunks" in form.estimate.value
    assert form.estimate.value.startswith("~") == approximate


def test_start_as_a_cells_last_line_shows_the_running_job_once(sources, tmp_path, monkeypatch):
    """`job.start()` returns the job, which IPython then displays: the live view already shows the running job in
    that cell, so the form is not shown under it; in a later cell (or once the run is over) a bare `job` is the
    form again."""
    import IPython.display

    from batchnb import views
    from batchnb.views import display

    cell, shown = [7], []
    monkeypatch.setattr(display, "cell_number", lambda: cell[0])
    monkeypatch.setattr(views, "frontend", lambda: "widget")
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    gate = threading.Event()

    def held(df):
        gate.wait(30)
        return df

    job = bn.BatchJob(sources["parquet"], tmp_path / "out", detector=held, chunk_size=1000, engine="threads")
    assert job.start(progress="log") is job and job.running()
    job._ipython_display_()  # what IPython does with the cell's value
    assert shown == []
    cell[0] = 8
    job._ipython_display_()
    assert [type(w) for w in shown] == [JobForm]
    gate.set()
    assert job.wait(timeout=60).status == "succeeded" and not job.running()
    cell[0] = 7
    job._ipython_display_()
    assert [type(w) for w in shown] == [JobForm, JobForm]
