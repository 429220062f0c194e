"""The Jupyter kernel that the report, notebook and CLI tests execute notebooks with.

A kernelspec named KERNEL that runs this very interpreter (the project's .venv under `make test`) is written
under `sys.prefix`, so papermill never picks up another Python's "python3" kernel from the user's or the
system's Jupyter paths. Writing it is idempotent and takes milliseconds; a fresh clone gets it on first use.
"""

from __future__ import annotations

import functools
import sys

KERNEL = "batchnb-tests"


@functools.cache
def venv_kernel() -> str:
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    install(kernel_name=KERNEL, display_name=f"batchnb tests ({sys.executable})", prefix=sys.prefix)
    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    assert spec.argv[0] == sys.executable, (spec.argv, sys.executable)
    return KERNEL
