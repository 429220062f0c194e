"""Engines behind one protocol; Dask and Ray are imported only when used."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from batchnb.engines.base import Engine
from batchnb.errors import ConfigError

__all__ = ["DaskEngine", "Engine", "RayEngine", "create", "from_dict", "get", "names", "to_dict"]

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


def to_dict(engine: str | Engine) -> str | dict[str, Any]:
    """The engine's name, with the options it was built with (a cluster address, sizes), if any:
    a saved config then reconnects to the same cluster from any machine."""
    if isinstance(engine, str) or not dataclasses.is_dataclass(engine):
        return engine if isinstance(engine, str) else engine.name
    options = {f.name: getattr(engine, f.name) for f in dataclasses.fields(engine) if f.init}
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items() if v is not None}
    return {"name": engine.name, **options} if options else engine.name


def from_dict(data: Mapping[str, Any]) -> Engine:
    """The engine `to_dict` described."""
    options = dict(data)
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"engine options {dict(data)!r} need a `name`: one of {names()}")
    try:
        return get(name)(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    except TypeError as exc:
        raise ConfigError(f"engine {name!r}: {exc}") from None


def __getattr__(name: str) -> Any:
    if name in ("DaskEngine", "RayEngine"):
        return get(name[:-6].lower())
    raise AttributeError(name)
