"""Engines behind one base class and one registry; Dask and Ray are imported only when used."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from batchnb.engines.base import Engine, EngineLike, as_engine
from batchnb.errors import ConfigError
from batchnb.registry import Registry

__all__ = [
    "REGISTRY",
    "DaskEngine",
    "Engine",
    "EngineLike",
    "RayEngine",
    "create",
    "from_dict",
    "get",
    "names",
    "register",
    "to_dict",
]

# Engine classes by name; plugins: entry points in the group "batchnb.engines" naming an Engine class.
REGISTRY: Registry[type] = Registry("engines", noun="engine", hint=" or an Engine instance")


def register(name: str, engine: type | str) -> None:
    """Make an engine class, or ``"module:Class"`` imported on first use, available as `engine=name`."""
    if isinstance(engine, str):
        REGISTRY.register_lazy(name, engine)
    else:
        REGISTRY.register(name, engine)


def names() -> list[str]:
    return REGISTRY.names()


def get(name: str) -> type:
    return REGISTRY.get(name)


def create(engine: str | EngineLike) -> Engine:
    """A fresh engine for a name; an engine object as it is, behind the base's defaults if it does not subclass it."""
    return as_engine(get(engine)() if isinstance(engine, str) else engine)


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


# Imported on first use, so that `import batchnb` never imports dask or ray.
for _name, _target in (
    ("sequential", "batchnb.engines.sequential:SequentialEngine"),
    ("threads", "batchnb.engines.threads:ThreadsEngine"),
    ("processes", "batchnb.engines.processes:ProcessesEngine"),
    ("dask", "batchnb.engines.dask:DaskEngine"),
    ("ray", "batchnb.engines.ray:RayEngine"),
):
    REGISTRY.register_lazy(_name, _target)


def __getattr__(name: str) -> Any:
    if name in ("DaskEngine", "RayEngine"):
        return get(name[:-6].lower())
    raise AttributeError(name)
