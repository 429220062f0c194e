"""The plan of a job before it runs: its chunks, what they will cost, and what to change when that is too much."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchnb.sources.dataset import ChunkSpec, DatasetInfo

__all__ = ["Plan", "decoded_bytes_per_row", "plan_warnings"]

_WIDTHS = {"Float32": 4, "Int32": 4, "UInt32": 4, "Int16": 2, "UInt16": 2, "Int8": 1, "UInt8": 1, "Boolean": 1}


def decoded_bytes_per_row(schema: dict[str, str]) -> float:
    """In-memory bytes per row, from the schema (8 bytes a number, 32 a string)."""
    return float(sum(_WIDTHS.get(t, 32 if t == "String" else 8) for t in schema.values()) or 8)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The chunk plan of a job and what it will cost, before anything runs."""

    dataset: DatasetInfo
    chunk_size: int
    chunks: tuple[ChunkSpec, ...]
    workers: int
    cpu_count: int
    memory_limit: int
    bytes_per_row: float
    warnings: tuple[str, ...] = ()

    @property
    def rows_total(self) -> int:
        return self.dataset.total_rows

    @property
    def rows_estimated(self) -> bool:
        """Text chunks are byte ranges: their rows are counted only when they run."""
        return self.dataset.facts.rows_estimated

    @property
    def n_chunks(self) -> int:
        """The planned chunks, or how many there would be (a plan re-sized without re-planning)."""
        return len(self.chunks) or -(-self.rows_total // self.chunk_size)

    @property
    def bytes_per_chunk(self) -> int:
        """Input bytes a chunk reads, on average."""
        return int(self.dataset.total_bytes / self.n_chunks) if self.n_chunks else 0

    @property
    def memory_per_chunk(self) -> int:
        """Rough working set of one chunk: decoded input, scores and the output frame."""
        return int(self.chunk_size * self.bytes_per_row * 3)

    @property
    def memory_at_concurrency(self) -> int:
        """Chunks in flight (two per worker) at their working set."""
        return self.memory_per_chunk * 2 * self.workers

    @property
    def row_group_rows(self) -> int | None:
        """Rows per Parquet row group when every group is the same size (the last may be shorter)."""
        groups = self.dataset.facts.group_rows
        return groups[0] if groups and all(r == groups[0] for r in groups[:-1]) else None

    @property
    def recommended_chunk_size(self) -> int:
        """Large enough that per-chunk costs fade, small enough for four in flight per worker in memory."""
        per_row = max(1.0, self.bytes_per_row * 3)
        by_memory = int(self.memory_limit / (4 * max(1, self.workers)) / per_row)
        size = max(1_000, min(1_000_000, by_memory, max(100_000, self.rows_total // (20 * max(1, self.workers)))))
        aligned = self.row_group_rows
        if aligned and 1_000 <= aligned <= by_memory:
            return min(aligned, 1_000_000)  # one chunk per row group: each group is decoded once, whole
        return size // 1_000 * 1_000

    @property
    def recommended_workers(self) -> int:
        per_worker = 2 * self.memory_per_chunk
        return max(1, min(self.cpu_count, self.memory_limit // max(1, per_worker), max(1, self.n_chunks)))

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.dataset.format,
            "files": len(self.dataset.paths),
            "rows": self.rows_total,
            "rows_estimated": self.rows_estimated,
            "bytes": self.dataset.total_bytes,
            "chunks": self.n_chunks,
            "chunk_size": self.chunk_size,
            "bytes_per_chunk": self.bytes_per_chunk,
            "memory_per_chunk": self.memory_per_chunk,
            "memory_at_concurrency": self.memory_at_concurrency,
            "workers": self.workers,
            "memory_limit": self.memory_limit,
            "recommended_chunk_size": self.recommended_chunk_size,
            "recommended_workers": self.recommended_workers,
            "warnings": list(self.warnings),
        }

    def __repr__(self) -> str:
        s = self.summary()
        text = (
            f"Plan({s['format']}, {s['files']} file(s), {'about ' * s['rows_estimated']}{s['rows']:_} rows, "
            f"{s['chunks']} chunks of {'about ' * s['rows_estimated']}"
            f"{s['chunk_size']:_} rows, ~{s['memory_per_chunk'] / 2**20:.1f} MiB per chunk, {s['workers']} workers; "
            f"recommended chunk_size={s['recommended_chunk_size']:_}, workers={s['recommended_workers']})"
        )
        return "\n".join([text, *(f"  warning: {w}" for w in self.warnings)])

    def _repr_html_(self) -> str:
        import html

        s = self.summary()
        mib, about = 2**20, "about " if s["rows_estimated"] else ""
        rows = [
            ("input", f"{s['format']}, {s['files']} file(s), {about}{s['rows']:,} rows, {s['bytes'] / mib:,.1f} MiB"),
            ("chunks", f"{s['chunks']:,} of {about}{s['chunk_size']:,} rows (~{s['bytes_per_chunk'] / mib:,.2f} MiB read each)"),
            ("memory", f"~{s['memory_per_chunk'] / mib:,.1f} MiB per chunk, ~{s['memory_at_concurrency'] / mib:,.0f} MiB "
                       f"with {s['workers']} workers, limit {s['memory_limit'] / mib:,.0f} MiB"),
            ("recommended", f"chunk_size={s['recommended_chunk_size']:_}, max_workers={s['recommended_workers']}"),
        ]  # fmt: skip
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        warn = "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings)
        return f"<table class='batchnb-plan'>{body}</table>" + (
            f"<ul class='batchnb-warnings'>{warn}</ul>" if warn else ""
        )


def plan_warnings(plan: Plan, *, pickle_input: bool, unpicklable: str | None) -> tuple[str, ...]:
    """Configurations that will be slow or unsafe, each with what to do instead."""
    out = []
    n = plan.n_chunks
    if n > 1_000 and plan.chunk_size < 20_000:
        out.append(
            f"{n:,} chunks of {plan.chunk_size:,} rows: a part file and a state commit per chunk will dominate; "
            f"chunk_size={plan.recommended_chunk_size:_} is recommended"
        )
    if plan.memory_at_concurrency > plan.memory_limit:
        out.append(
            f"{plan.workers} workers x 2 chunks x ~{plan.memory_per_chunk / 2**20:,.0f} MiB exceed the memory limit of "
            f"{plan.memory_limit / 2**20:,.0f} MiB: the job will be throttled; use chunk_size="
            f"{plan.recommended_chunk_size:_} or max_workers={plan.recommended_workers}"
        )
    aligned = plan.row_group_rows
    if aligned and plan.chunk_size < aligned and aligned % plan.chunk_size == 0 and aligned <= 1_000_000:
        out.append(
            f"each {aligned:,}-row Parquet row group is cut into {aligned // plan.chunk_size} chunks; "
            f"chunk_size={aligned:_} reads each group once and writes fewer parts"
        )
    if pickle_input:
        out.append("pickle input is loaded whole on the driver (and converted to Arrow IPC once): prefer Parquet")
    if unpicklable:
        out.append(unpicklable)
    return tuple(out)
