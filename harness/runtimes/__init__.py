"""Runtimes: where servers under test and scenario services run. One module
each, one interface (base.Runtime), found by name like the load drivers:
`harness/runtimes/<name>.py` defines RUNTIME, a Runtime subclass whose
`name` is the module name.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import InputError
from .base import ROLES, LaunchSpec, Runtime, ServerHandle, StopResult


def runtime_names() -> list[str]:
    """The runtimes this installation has: modules of this package that define RUNTIME."""
    names = []
    for m in pkgutil.iter_modules(__path__):
        if m.name in ("base", "cgroups") or m.name.startswith("_"):
            continue
        names.append(m.name)
    return sorted(names)


def get_runtime(name: str, **kwargs) -> Runtime:
    if not name.isidentifier() or name in ("base", "cgroups"):
        raise InputError(f"unknown runtime '{name}' (known: {', '.join(runtime_names())}, auto)")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{name}":
            raise InputError(f"unknown runtime '{name}' (known: {', '.join(runtime_names())}, auto)") from None
        raise
    cls = getattr(module, "RUNTIME", None)
    if cls is None or getattr(cls, "name", None) != name:
        raise InputError(f"harness/runtimes/{name}.py defines no RUNTIME named '{name}'")
    return cls(**kwargs)


__all__ = ["LaunchSpec", "Runtime", "ServerHandle", "StopResult", "get_runtime", "runtime_names", "ROLES"]
