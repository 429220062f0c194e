"""End to end in a real browser: JupyterLab on 127.0.0.1 with a token, Playwright driving Debian's chromium.

The test opens tests/browser/live_progress.ipynb, shows the form (a bare `job`), presses Run, checks from the DOM
that the bar advances and the rows/s label changes while another cell runs, presses Cancel and sees `cancelled`;
then starts a job detached, attaches a second view to it, sees its bar advance and cancels it from that view.
Screenshots go to test-artifacts/browser/. Needs /usr/bin/chromium (`.ci/run` installs it) and never runs
`playwright install`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "browser" / "live_progress.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)"),
    pytest.mark.timeout(300),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server serving a copy of the test notebook; stopped (whole process group) afterwards."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    home = tmp_path / "jupyter"
    settings = home / "settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    env.pop("BATCHNB_PROGRESS", None)
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tmp_path / "jupyter.log", "wb")  # closed in teardown
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", "--allow-root",
         f"--ServerApp.root_dir={root}"],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while _get(f"{base}/api/status?token={token}")[0] != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"base": base, "token": token, "root": root}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # kernels shut down with the server
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _kernel_idle(lab) -> bool:
    _, body = _get(f"{lab['base']}/api/sessions?token={lab['token']}")
    sessions = json.loads(body or b"[]")
    return any(s["path"].endswith(NOTEBOOK.name) and s["kernel"]["execution_state"] == "idle" for s in sessions)


def _run_cell(page, index: int) -> None:
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")


def _bar_width(page, nth: int = 0) -> float:
    style = page.locator(".batchnb-progress .progress-bar").nth(nth).get_attribute("style") or ""
    match = re.search(r"width:\s*([\d.]+)%", style)
    return float(match.group(1)) if match else 0.0


def test_live_progress_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(lab["root"].parent / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )  # fmt: skip
        try:
            page = context.new_page()
            page.goto(f"{lab['base']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}&reset")
            page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=60_000)
            deadline = time.monotonic() + 60
            while not _kernel_idle(lab):
                assert time.monotonic() < deadline, "the kernel never became idle"
                time.sleep(0.3)

            _run_cell(page, 0)
            _run_cell(page, 1)  # the bare `job`: the form
            run = page.locator(".batchnb-run")
            expect(run).to_be_visible(timeout=60_000)
            expect(page.locator(".batchnb-format")).to_contain_text("parquet", timeout=30_000)
            expect(page.locator(".batchnb-estimate")).to_contain_text("400 chunks")
            page.screenshot(path=str(ARTIFACTS / "1-form.png"), full_page=True)

            run.click()
            bar = page.locator(".batchnb-progress .progress-bar").first
            expect(page.locator(".batchnb-status-text")).to_have_text("running", timeout=60_000)
            deadline = time.monotonic() + 60
            while _bar_width(page) <= 0.0:
                assert time.monotonic() < deadline, "the bar never moved"
                time.sleep(0.2)

            # Another cell runs while the job runs: the kernel is free.
            _run_cell(page, 2)
            expect(page.locator(".jp-OutputArea-output").filter(has_text="kernel is free: 42")).to_be_visible(
                timeout=20_000
            )
            assert page.locator(".batchnb-status-text").inner_text() == "running"

            widths, rates = [], []
            for _ in range(12):  # ~6 s of watching
                widths.append(_bar_width(page))
                rates.append(page.locator(".batchnb-stats .bn-rate").inner_text())
                time.sleep(0.5)
            page.screenshot(path=str(ARTIFACTS / "2-running.png"), full_page=True)
            assert widths[-1] > widths[0], f"the bar did not advance: {widths}"
            assert len(set(rates)) > 1, f"rows/s never changed: {rates}"
            expect(bar).to_be_visible()
            assert page.locator(".batchnb-chunkmap .bn-map i").count() == 400

            page.locator(".batchnb-cancel").click()
            expect(page.locator(".batchnb-status-text")).to_have_text("cancelled", timeout=60_000)
            assert _bar_width(page) < 100.0
            # The static summary (what the saved notebook and its HTML export keep) is there too.
            expect(page.locator("table.batchnb")).to_contain_text("cancelled", timeout=20_000)
            _run_cell(page, 3)
            expect(page.locator(".jp-OutputArea-output").filter(has_text="'cancelled'")).to_be_visible(timeout=20_000)
            page.screenshot(path=str(ARTIFACTS / "3-cancelled.png"), full_page=True)
            page.locator(".batchnb-live").first.screenshot(path=str(ARTIFACTS / "4-live-view-cancelled.png"))

            # A blocking run() in a cell: the same live view, ending in its static summary.
            _run_cell(page, 4)
            expect(page.locator(".jp-OutputArea-output").filter(has_text="'succeeded'")).to_be_visible(timeout=60_000)
            views = page.locator(".batchnb-live")
            expect(views).to_have_count(2)
            expect(views.nth(1).locator(".batchnb-status-text")).to_have_text("succeeded")
            assert _bar_width(page, 1) == 100.0
            expect(page.locator("table.batchnb").nth(1)).to_contain_text("succeeded")
            views.nth(1).screenshot(path=str(ARTIFACTS / "5-blocking-run.png"))

            # A detached job, then an attached view of it: both follow the record of a driver in another process.
            _run_cell(page, 5)
            _run_cell(page, 6)
            expect(views).to_have_count(4, timeout=60_000)
            attached = views.nth(3)
            expect(attached.locator(".batchnb-status-text")).to_have_text("running", timeout=60_000)
            first = _bar_width(page, 3)
            deadline = time.monotonic() + 30
            while _bar_width(page, 3) <= first:
                assert time.monotonic() < deadline, "the attached view's bar never moved"
                time.sleep(0.3)
            attached.screenshot(path=str(ARTIFACTS / "6-attached-running.png"))
            attached.locator(".batchnb-cancel").click()  # a cancel request the detached driver honours
            expect(attached.locator(".batchnb-status-text")).to_have_text("cancelled", timeout=30_000)
            expect(views.nth(2).locator(".batchnb-status-text")).to_have_text("cancelled", timeout=30_000)
            attached.screenshot(path=str(ARTIFACTS / "7-attached-cancelled.png"))
        finally:
            context.close()
