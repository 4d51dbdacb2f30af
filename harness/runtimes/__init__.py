"""Runtimes: where a server under test runs. One module each, one interface.

A runtime module defines a subclass of `Runtime` and is registered in
RUNTIMES by name.
"""
from __future__ import annotations

from ..errors import InputError
from .base import LaunchSpec, Runtime, ServerHandle, StopResult

RUNTIME_NAMES = ("process", "docker")


def get_runtime(name: str, **kwargs) -> Runtime:
    if name == "process":
        from .process import ProcessRuntime
        return ProcessRuntime(**kwargs)
    if name == "docker":
        from .docker_rt import DockerRuntime
        return DockerRuntime(**kwargs)
    raise InputError(f"unknown runtime '{name}' (known: {', '.join(RUNTIME_NAMES)}, auto)")


__all__ = ["LaunchSpec", "Runtime", "ServerHandle", "StopResult", "get_runtime", "RUNTIME_NAMES"]
