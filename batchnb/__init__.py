"""batchnb: batch jobs over datasets larger than memory, from a notebook, a terminal or papermill.

The public names load on first use (PEP 562): a worker process that runs chunks imports only the chunk path,
not the job, queue, pipeline and report machinery of the driver (about 0.1 s less start-up per worker).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchnb._version import __version__

# `attach` is also the name of its module: bound now, or the module's first import would replace the function.
from batchnb.attach import attach
from batchnb.errors import BatchError, ChunkError, ConfigError, DataError, EngineError, JobStateError, SourceError

if TYPE_CHECKING:
    from batchnb import detectors, engines
    from batchnb.config import Backoff, JobConfig, Resources
    from batchnb.detectors import list_detectors
    from batchnb.job import BatchJob
    from batchnb.pipeline import Pipeline, PipelineResult
    from batchnb.plan import Plan
    from batchnb.queue import JobHandle, JobQueue
    from batchnb.record.listing import jobs
    from batchnb.record.snapshot import Progress, status
    from batchnb.result import JobResult, VerifyReport

# Public name -> the module that defines it ("" : the name is a subpackage of batchnb).
_LAZY = {
    "detectors": "",
    "engines": "",
    "Backoff": "batchnb.config",
    "JobConfig": "batchnb.config",
    "Resources": "batchnb.config",
    "list_detectors": "batchnb.detectors",
    "BatchJob": "batchnb.job",
    "Pipeline": "batchnb.pipeline",
    "PipelineResult": "batchnb.pipeline",
    "Plan": "batchnb.plan",
    "JobHandle": "batchnb.queue",
    "JobQueue": "batchnb.queue",
    "jobs": "batchnb.record.listing",
    "Progress": "batchnb.record.snapshot",
    "status": "batchnb.record.snapshot",
    "JobResult": "batchnb.result",
    "VerifyReport": "batchnb.result",
}

__all__ = [
    "Backoff",
    "BatchError",
    "BatchJob",
    "ChunkError",
    "ConfigError",
    "DataError",
    "EngineError",
    "JobConfig",
    "JobHandle",
    "JobQueue",
    "JobResult",
    "JobStateError",
    "Pipeline",
    "PipelineResult",
    "Plan",
    "Progress",
    "Resources",
    "SourceError",
    "VerifyReport",
    "__version__",
    "attach",
    "detectors",
    "engines",
    "jobs",
    "list_detectors",
    "status",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'batchnb' has no attribute {name!r}")
    if module:
        value = getattr(importlib.import_module(module), name)
    else:
        value = importlib.import_module(f"batchnb.{name}")
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
