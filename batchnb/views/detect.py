"""Where is this code running: a live notebook front end, a headless kernel, or a terminal?

The rule (each step fails safe towards plain text, never towards a widget nobody renders):

1. `BATCHNB_PROGRESS=widget|log|text` in the environment wins.
2. No IPython kernel (`ipykernel.zmqshell` not imported, or another shell): "text" (the tqdm bar).
3. A kernel whose parent process is papermill, nbconvert, nbclient, jupyter-execute or another kernel
   (papermill called from a notebook): "log", a throttled plain-text line. These run a real ipykernel but nobody renders widgets, and
   tqdm's widget bar there stays at 0% in the log (papermill#617) while the console bar prints one line per
   refresh (papermill#765).
4. A kernel that a Jupyter server started (it sets `JPY_SESSION_NAME`), VS Code or Colab, with ipywidgets
   installed: "widget". Any other kernel (qtconsole, a kernel started by a tool we do not know): "log".
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Literal

__all__ = ["Frontend", "frontend", "in_kernel"]

Frontend = Literal["widget", "log", "text"]

HEADLESS_PARENTS = ("papermill", "nbconvert", "nbclient", "jupyter-execute", "ipykernel", "nbmake", "testbook")


def in_kernel() -> bool:
    """True inside an IPython kernel (detected without importing IPython)."""
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    try:
        shell = sys.modules["IPython"].get_ipython()
    except Exception:  # noqa: BLE001 - detection fails safe
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _parent_cmdline() -> str:
    try:
        import psutil

        return " ".join(psutil.Process(os.getppid()).cmdline()).lower()
    except Exception:  # noqa: BLE001 - no parent information: say nothing
        return ""


def _interactive_frontend() -> bool:
    if os.environ.get("JPY_SESSION_NAME") or os.environ.get("VSCODE_PID") or "google.colab" in sys.modules:
        return True
    try:
        shell = sys.modules["IPython"].get_ipython()
        return "__vsc_ipynb_file__" in shell.user_ns
    except Exception:  # noqa: BLE001
        return False


def frontend() -> Frontend:
    """Which view `progress="auto"` should use here (see the module docstring for the rule)."""
    forced = os.environ.get("BATCHNB_PROGRESS", "").strip().lower()
    if forced in ("widget", "log", "text"):
        return forced  # type: ignore[return-value]
    try:
        if not in_kernel():
            return "text"
        parent = _parent_cmdline()
        if any(name in parent for name in HEADLESS_PARENTS):
            return "log"
        if not _interactive_frontend() or importlib.util.find_spec("ipywidgets") is None:
            return "log"
        return "widget"
    except Exception:  # noqa: BLE001 - any surprise: plain text works everywhere
        return "log" if "ipykernel" in sys.modules else "text"
