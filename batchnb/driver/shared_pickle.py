"""The part of a chunk task that every chunk of a job shares, pickled once.

A task is its chunk's spec plus the job's dataset, scorer, sink and options, the same objects for every
chunk; cloudpickle of a whole task cost the driver 0.25 ms per chunk on `processes`. The shared part is
pickled once per job on the driver and unpickled once per worker process; only the spec is pickled per
task. A few jobs' parts are kept on each side, holding their objects, so an id is never reused while kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import cloudpickle

__all__ = ["pickled", "unpickled"]

KEPT = 2  # jobs whose shared part stays pickled (driver) or unpickled (worker): a kernel's job and the next

_lock = threading.Lock()
_pickled: OrderedDict[tuple[int, ...], tuple[tuple[Any, ...], bytes]] = OrderedDict()
_unpickled: OrderedDict[bytes, tuple[Any, ...]] = OrderedDict()


def pickled(shared: tuple[Any, ...]) -> bytes:
    """`shared` pickled, once for as long as the same objects keep coming."""
    key = tuple(map(id, shared))
    with _lock:
        hit = _pickled.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], shared, strict=True)):
            _pickled.move_to_end(key)
            return hit[1]
    blob = cloudpickle.dumps(shared)
    with _lock:
        _pickled[key] = (shared, blob)
        while len(_pickled) > KEPT:
            _pickled.popitem(last=False)
    return blob


def unpickled(blob: bytes) -> tuple[Any, ...]:
    """The objects `blob` was pickled from, unpickled once in this process."""
    with _lock:
        hit = _unpickled.get(blob)
        if hit is not None:
            _unpickled.move_to_end(blob)
            return hit
    shared = cloudpickle.loads(blob)
    with _lock:
        _unpickled[blob] = shared
        while len(_unpickled) > KEPT:
            _unpickled.popitem(last=False)
    return shared
