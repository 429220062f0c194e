"""What makes two runs the same job, and how a callable detector is named in a config file and between runs."""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from types import CodeType
from typing import Any

from batchnb.errors import ConfigError

__all__ = ["IDENTITY_FIELDS", "callable_reference", "code_fingerprint", "import_callable", "job_identity"]

# Options whose equality makes two runs the same job (DESIGN.md, "Job identity").
IDENTITY_FIELDS = (
    "source", "detector", "columns", "chunk_size", "format", "output_format", "keep",
    "threshold", "contamination", "fit_sample", "seed", "read_options",
)  # fmt: skip


def job_identity(config: Any) -> dict[str, Any]:
    """The identity options of a JobConfig as plain data: a detector by name or code hash, sources absolute."""
    ident: dict[str, Any] = {}
    for name in IDENTITY_FIELDS:
        value = getattr(config, name)
        if name == "detector":
            if isinstance(value, str):
                pass
            elif getattr(value, "name", None) is not None and not callable(value):
                value = f"{value.name}:{getattr(value, 'params', lambda: {})()}"
            else:
                value = code_fingerprint(value)
        elif name == "source":
            value = [p if "://" in p else os.path.abspath(p) for p in ((value,) if isinstance(value, str) else value)]
        elif isinstance(value, tuple):
            value = list(value)
        ident[name] = value
    return ident


def callable_reference(fn: Callable) -> str:
    """'module:qualname' of a function that can be imported again, else a ConfigError saying why."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module in (None, "__main__") or "<lambda>" in qualname or "<locals>" in qualname:
        msg = (
            f"detector {qualname or fn!r} cannot be written to a config: a lambda or a function defined in a "
            "notebook or script cannot be imported again; move it into a module and pass it from there"
        )
        raise ConfigError(msg)
    return f"{module}:{qualname}"


def import_callable(reference: str) -> Callable:
    module_name, _, qualname = reference.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        msg = f"detector {reference!r} cannot be imported ({exc}); check the module path and function name"
        raise ConfigError(msg) from exc
    return obj


def _stable_repr(value: Any) -> str:
    """repr that does not depend on PYTHONHASHSEED (set and frozenset order does)."""
    if isinstance(value, frozenset | set):
        return "{" + ",".join(sorted(_stable_repr(v) for v in value)) + "}"
    if isinstance(value, tuple):
        return "(" + ",".join(_stable_repr(v) for v in value) + ")"
    return repr(value)


def code_fingerprint(fn: Callable) -> str:
    """Qualified name and a hash of the code: the same function in a new process hashes alike."""
    digest = hashlib.sha256()

    def feed(code: CodeType) -> None:
        digest.update(code.co_code)
        digest.update(repr(code.co_names).encode())
        for const in code.co_consts:
            if isinstance(const, CodeType):
                feed(const)
            else:
                digest.update(_stable_repr(const).encode())

    target = getattr(fn, "__wrapped__", fn)
    call = vars(type(target)).get("__call__")
    code = getattr(target, "__code__", None) or getattr(call, "__code__", None)
    if code is not None:
        feed(code)
    qualname = getattr(target, "__qualname__", type(target).__qualname__)
    return f"{getattr(target, '__module__', '?')}:{qualname}#{digest.hexdigest()[:16]}"
