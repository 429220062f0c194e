"""One small registry for engines, detectors, sources and sinks: built-ins, user registrations and plugins.

Plugins are distributions that declare an entry point in the group ``batchnb.<kind>`` (for example
``[project.entry-points."batchnb.engines"] spark = "batchnb_spark:SparkEngine"``). The group is read on
the first lookup of a name that is not registered, or on `names()`, never at import; a plugin's module is
imported only when its name is asked for.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from batchnb.errors import ConfigError

__all__ = ["Registry"]

log = logging.getLogger("batchnb")

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> items of one kind.

    Parameters
    ----------
    kind
        The plural noun of the entry point group, ``"engines"`` -> ``batchnb.engines``.
    noun
        What an item is called in the unknown-name message (``"engine"``, ``"output format"``).
    hint
        Appended to the list of valid names in that message (``" or an Engine instance"``).
    convert
        Applied to every item registered or loaded (checks it, or builds an instance from a plugin's class).
    """

    def __init__(self, kind: str, *, noun: str, hint: str = "", convert: Callable[[object], T] | None = None) -> None:
        self.group = f"batchnb.{kind}"
        self.noun = noun
        self.hint = hint
        self._convert = convert
        self._entries: dict[str, T | _Lazy] = {}  # in registration order; _Lazy resolved on first get()
        self._plugins_read = False
        self._lock = threading.RLock()

    def register(self, name: str, item: object) -> T:
        """Make `item` available as `name` (a later registration of the same name replaces it)."""
        converted = self._convert(item) if self._convert is not None else item
        with self._lock:
            self._entries[name] = converted  # type: ignore[assignment]
        return converted  # type: ignore[return-value]

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"module:attribute"``, imported on first `get(name)` (keeps heavy imports out of import)."""
        with self._lock:
            self._entries[name] = _Lazy(target, lambda: _import(target))

    def get(self, name: str) -> T:
        """The item called `name`; an unknown name raises ConfigError listing the valid ones."""
        with self._lock:
            if name not in self._entries:
                self._read_plugins()
            entry = self._entries.get(name)
            if entry is None:
                msg = f"unknown {self.noun} {name!r}: expected one of {self.names()}{self.hint}"
                raise ConfigError(msg)
            if not isinstance(entry, _Lazy):
                return entry
            try:
                item = entry.load()
            except Exception as exc:
                msg = (
                    f"{self.noun} {name!r} ({entry.target}) could not be loaded: {type(exc).__name__}: {exc}; "
                    "reinstall the package that provides it"
                )
                raise ConfigError(msg) from exc
            return self.register(name, item)

    def names(self) -> list[str]:
        """Every name: built-ins and registrations in their order, then plugins."""
        with self._lock:
            self._read_plugins()
            return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def _read_plugins(self) -> None:
        """Note the entry points of this group (once); a name registered here wins over a plugin's."""
        if self._plugins_read:
            return
        self._plugins_read = True
        from importlib.metadata import entry_points

        try:
            found = entry_points(group=self.group)
        except Exception:  # a broken installed distribution must not hide the built-ins
            log.warning("could not read the %s entry points", self.group, exc_info=True)
            return
        for point in found:
            self._entries.setdefault(point.name, _Lazy(point.value, point.load))


@dataclass(frozen=True)
class _Lazy:
    target: str  # "module:attribute", for messages
    load: Callable[[], object]


def _import(target: str) -> object:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
