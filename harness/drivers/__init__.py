"""Load drivers: one module per load tool, found by the workload's `driver` name.

A driver module `harness/drivers/<name>.py` defines `DRIVER`, an instance of
a `Driver` subclass.
"""
from __future__ import annotations

import importlib

from ..errors import InputError
from .base import Driver, LoadResult


def get_driver(name: str) -> Driver:
    if not name.isidentifier():
        raise InputError(f"invalid driver name '{name}'")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise InputError(f"unknown load driver '{name}'") from None
    return module.DRIVER


__all__ = ["Driver", "LoadResult", "get_driver"]
