"""Anomaly detectors: a small registry of built-ins, extensible with `register`."""

from __future__ import annotations

from batchnb.detectors.base import Detector, FittedDetector, flag_cutoff
from batchnb.detectors.forest import IsolationForest
from batchnb.detectors.robust import IQR, MAD, ZScore
from batchnb.errors import ConfigError
from batchnb.registry import Registry

__all__ = [
    "IQR",
    "MAD",
    "REGISTRY",
    "Detector",
    "FittedDetector",
    "IsolationForest",
    "ZScore",
    "flag_cutoff",
    "get",
    "list_detectors",
    "names",
    "register",
]


def _as_detector(item: object) -> Detector:
    """A plugin's entry point may name a Detector class as well as an instance."""
    detector = item() if isinstance(item, type) else item
    if not isinstance(detector, Detector):
        raise ConfigError(f"{detector!r} is not a Detector: it needs name, description, fit and score")
    return detector


# Detectors by name; plugins: entry points in the group "batchnb.detectors" naming a Detector (class or instance).
REGISTRY: Registry[Detector] = Registry(
    "detectors", noun="detector", hint=", a Detector or a callable", convert=_as_detector
)


def register(detector: Detector) -> Detector:
    """Make `detector` available by its name in `BatchJob(detector=...)`."""
    return REGISTRY.register(_as_detector(detector).name, detector)


def get(name: str) -> Detector:
    return REGISTRY.get(name)


def names() -> list[str]:
    return REGISTRY.names()


def list_detectors() -> dict[str, str]:
    """Names with a one-line description each (a plugin's module is imported here, to read its description)."""
    return {name: get(name).description for name in names()}


for _detector in (ZScore(), MAD(), IQR(), IsolationForest()):
    register(_detector)
