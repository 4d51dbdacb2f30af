"""Building implementations, cached by a hash of their sources."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .manifest import Implementation, Scenario, expand

ALWAYS_EXCLUDED = {".git", ".venv", "target", "build", "node_modules", "__pycache__", ".idea"}


@dataclass
class BuildResult:
    ok: bool
    cached: bool
    seconds: float | None          # build time (of the cached build when cached)
    artifact_bytes: int | None
    source_hash: str
    command: list[str] | None
    log: str | None
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _files(root: Path, exclude: set[str]) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames
                             if d not in ALWAYS_EXCLUDED and str(rel / d) not in exclude and d not in exclude)
        for f in sorted(filenames):
            if str(rel / f) not in exclude and not f.endswith(".pyc"):
                out.append(Path(dirpath) / f)
    return out


def source_hash(impl: Implementation, scenario: Scenario) -> str:
    """Hash of the implementation's sources and manifest, and the scenario's files."""
    h = hashlib.sha256()
    for base, exclude in ((impl.dir, set(impl.exclude)), (scenario.dir, set())):
        for f in _files(base, exclude):
            h.update(str(f.relative_to(base)).encode() + b"\0")
            h.update(f.read_bytes())
            h.update(b"\0")
    return h.hexdigest()[:16]


def path_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for f in filenames:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def artifact_bytes(impl: Implementation) -> int | None:
    if not impl.artifacts:
        return None
    total = 0
    for a in impl.artifacts:
        p = impl.dir / a
        if not p.exists():
            return None
        total += path_size(p)
    return total


def missing_tools(impl: Implementation) -> list[str]:
    return [t for t in impl.requires if shutil.which(t) is None]


def build(impl: Implementation, scenario: Scenario, cache_dir: Path, log_path: Path,
          placeholders: dict[str, str], force: bool = False) -> BuildResult:
    """Build under an exclusive lock per implementation, so that two runs at
    once never build the same folder together (the second waits, then finds
    the first one's build in the cache)."""
    import fcntl
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / f"{impl.scenario}__{impl.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(impl, scenario, cache_dir, log_path, placeholders, force)


def _build(impl: Implementation, scenario: Scenario, cache_dir: Path, log_path: Path,
           placeholders: dict[str, str], force: bool) -> BuildResult:
    digest = source_hash(impl, scenario)
    if impl.build is None:
        return BuildResult(True, False, 0.0, artifact_bytes(impl), digest, None, None)
    argv = [expand(a, placeholders) for a in impl.build.command]
    missing = missing_tools(impl)
    if missing:
        return BuildResult(False, False, None, None, digest, argv, None,
                           f"build needs {', '.join(repr(m) for m in missing)}, not found on PATH")
    cache_file = cache_dir / f"{impl.scenario}__{impl.name}.json"
    if not force and cache_file.exists():
        try:
            cached = json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            cached = {}
        size = artifact_bytes(impl)
        if cached.get("source_hash") == digest and (size is not None or not impl.artifacts):
            return BuildResult(True, True, cached.get("seconds"), size, digest, argv, str(log_path))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        try:
            proc = subprocess.run(argv, cwd=impl.dir, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=impl.build.timeout_s)
            code = proc.returncode
        except FileNotFoundError:
            code = 127
        except subprocess.TimeoutExpired:
            return BuildResult(False, False, time.monotonic() - t0, None, digest, argv, str(log_path),
                               f"build did not finish within {impl.build.timeout_s:g} s")
    seconds = time.monotonic() - t0
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        return BuildResult(False, False, seconds, None, digest, argv, str(log_path),
                           f"build failed with exit code {code}: {tail[0][:200]}")
    size = artifact_bytes(impl)
    if impl.artifacts and size is None:
        return BuildResult(False, False, seconds, None, digest, argv, str(log_path),
                           f"build succeeded but artifact {impl.artifacts} is missing")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"source_hash": digest, "seconds": seconds, "built_at": time.time()}))
    tmp.replace(cache_file)
    return BuildResult(True, False, seconds, size, digest, argv, str(log_path))
