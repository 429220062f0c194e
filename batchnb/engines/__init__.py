"""Engines behind one protocol; Dask and Ray are imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

from batchnb.engines.base import Engine
from batchnb.errors import ConfigError

__all__ = ["DaskEngine", "Engine", "RayEngine", "create", "get", "names"]

# name -> "module:class", imported on first use so that `import batchnb` never imports dask or ray.
_REGISTRY: dict[str, str] = {
    "sequential": "batchnb.engines.sequential:SequentialEngine",
    "threads": "batchnb.engines.threads:ThreadsEngine",
    "processes": "batchnb.engines.processes:ProcessesEngine",
    "dask": "batchnb.engines.dask:DaskEngine",
    "ray": "batchnb.engines.ray:RayEngine",
}


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> type:
    try:
        module, _, cls = _REGISTRY[name].partition(":")
    except KeyError:
        raise ConfigError(f"unknown engine {name!r}: expected one of {names()} or an Engine instance") from None
    return getattr(importlib.import_module(module), cls)


def create(engine: str | Engine) -> Engine:
    return get(engine)() if isinstance(engine, str) else engine


def __getattr__(name: str) -> Any:
    if name in ("DaskEngine", "RayEngine"):
        return get(name[:-6].lower())
    raise AttributeError(name)
