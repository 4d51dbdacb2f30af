"""The environment fingerprint stored with every run."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import psutil

TOOLCHAINS = {
    "python": ["python3", "--version"],
    "go": ["go", "version"],
    "rustc": ["rustc", "--version"],
    "cargo": ["cargo", "--version"],
    "java": ["java", "-version"],
    "maven": ["mvn", "-v"],
    "protoc": ["protoc", "--version"],
}


def _first_line(argv: list[str]) -> str | None:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                           env={**os.environ, "MAVEN_OPTS": ""})
    except (OSError, subprocess.SubprocessError):
        return None
    text = (p.stdout.strip() or p.stderr.strip()).splitlines()
    # mvn prints ANSI colour codes even off a terminal
    return text[0].replace("\x1b[1m", "").replace("\x1b[m", "").strip() if text else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(root: Path) -> dict:
    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
            return p.stdout.strip() if p.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def fingerprint(root: Path, tools: dict[str, str]) -> dict:
    vm = psutil.virtual_memory()
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": sorted(os.sched_getaffinity(0)),
        "memory_gb": round(vm.total / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python_harness": platform.python_version(),
        "toolchains": {k: _first_line(v) for k, v in TOOLCHAINS.items()},
        "load_tools": tools,
        "git": git_commit(root),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
