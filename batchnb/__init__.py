"""batchnb: batch jobs over datasets larger than memory, from a notebook, a terminal or papermill."""

from batchnb import detectors, engines
from batchnb._version import __version__
from batchnb.attach import attach
from batchnb.config import Backoff, JobConfig, Resources
from batchnb.detectors import list_detectors
from batchnb.errors import BatchError, ChunkError, ConfigError, DataError, EngineError, JobStateError, SourceError
from batchnb.job import BatchJob
from batchnb.pipeline import Pipeline, PipelineResult
from batchnb.plan import Plan
from batchnb.queue import JobHandle, JobQueue
from batchnb.record.listing import jobs
from batchnb.record.snapshot import Progress, status
from batchnb.result import JobResult, VerifyReport

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
