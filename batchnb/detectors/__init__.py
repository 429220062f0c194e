"""Anomaly detectors: a small registry of built-ins, extensible with `register`."""

from __future__ import annotations

from batchnb.detectors.base import Detector, FittedDetector, flag_cutoff
from batchnb.detectors.forest import IsolationForest
from batchnb.detectors.robust import IQR, MAD, ZScore
from batchnb.errors import ConfigError

__all__ = [
    "IQR",
    "MAD",
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

_REGISTRY: dict[str, Detector] = {}


def register(detector: Detector) -> Detector:
    """Make `detector` available by its name in `BatchJob(detector=...)`."""
    if not isinstance(detector, Detector):
        raise ConfigError(f"{detector!r} is not a Detector: it needs name, description, fit and score")
    _REGISTRY[detector.name] = detector
    return detector


def get(name: str) -> Detector:
    try:
        return _REGISTRY[name]
    except KeyError:
        msg = f"unknown detector {name!r}: expected one of {names()}, a Detector or a callable"
        raise ConfigError(msg) from None


def names() -> list[str]:
    return list(_REGISTRY)


def list_detectors() -> dict[str, str]:
    """Names with a one-line description each."""
    return {name: d.description for name, d in _REGISTRY.items()}


for _detector in (ZScore(), MAD(), IQR(), IsolationForest()):
    register(_detector)
