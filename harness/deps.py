"""Python packages a scenario's checks and tools need, beyond the harness.

A scenario declares them in scenario.toml (`[python] requires = [...]`, PEP
508 strings, pinned); `./setup.sh` installs them with `langbench deps
--install`, and a run refuses to start (exit 2) when one is missing, naming
the scenario and the package, instead of failing in a check mid-run.
"""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement

from .errors import InputError, ToolError


def missing(scenarios) -> list[tuple[str, str, str]]:
    """(scenario, requirement, why) for each requirement this environment lacks."""
    out = []
    for sc in scenarios:
        for text in sc.python_requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate():
                continue
            try:
                have = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                out.append((sc.name, text, "not installed"))
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                out.append((sc.name, text, f"{have} installed"))
    return out


def check_installed(scenarios) -> None:
    todo = missing(scenarios)
    if todo:
        sc, req, why = todo[0]
        more = f" (and {len(todo) - 1} more)" if len(todo) > 1 else ""
        raise InputError(f"scenarios/{sc}/scenario.toml: field 'python.requires': {req} is missing ({why}){more}; "
                         f"run ./setup.sh or `langbench deps --install`")


def install(todo: list[tuple[str, str, str]]) -> None:
    reqs = sorted({req for _, req, _ in todo})
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *reqs], stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise ToolError(f"pip install {' '.join(reqs)} exited with code {proc.returncode}")
