from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
LANGBENCH = [sys.executable, "-m", "harness.cli", "--root", str(ROOT)]


def run_cli(*args, timeout: float = 3000):
    """`langbench ARGS...` against the real project, output captured."""
    import subprocess
    return subprocess.run([*LANGBENCH, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# The end-to-end runs' windows: every level 2 s, warm-up at most 1 s (the
# tests check what is measured and how, not how fast; CI time is bounded).
SHORT_WINDOWS = ("--duration", "2", "--warmup", "1")


def quick_run(tmp_path_factory, scenario: str, runtime: str, *extra: str):
    """A whole `langbench run SCENARIO --runtime RUNTIME --profile quick` with
    short windows into a fresh folder; returns (completed process, results
    folder)."""
    out = tmp_path_factory.mktemp(f"{scenario}-{runtime}") / "run"
    proc = run_cli("run", scenario, "--runtime", runtime, "--profile", "quick", *SHORT_WINDOWS, "--out", str(out),
                   *extra)
    print(proc.stderr[-8000:])
    return proc, out


def completed_run(proc, out, modes: tuple[str, ...]) -> dict:
    """The results of a run that must have ended well: exit 0, every
    implementation of the four languages ok, one server run per
    implementation and mode, each verified; returns results.json."""
    from harness import results
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = results.load(out)
    impls = data["implementations"]
    assert {v["language"] for v in impls.values()} == {"python", "go", "rust", "scala"}
    assert all(v["status"] == "ok" for v in impls.values()), {k: v.get("failure") for k, v in impls.items()}
    assert sorted((i["implementation_id"], i["mode"]) for i in data["instances"]) == sorted(
        (iid, mode) for iid in impls for mode in modes)
    for inst in data["instances"]:
        assert inst["verify"]["ok"], inst["verify"]
    return data


@pytest.fixture
def root() -> Path:
    return ROOT


def langbench_processes() -> list[psutil.Process]:
    """Processes started by any langbench run (they carry LANGBENCH_RUN_ID)."""
    out = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == os.getpid():
            continue
        try:
            if "LANGBENCH_RUN_ID" in p.environ():
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.fixture
def mini_root(tmp_path: Path) -> Path:
    """A throw-away project root holding a copy of the notes-grpc scenario
    (readiness timeout cut to 3 s) and no implementations yet."""
    dst = tmp_path / "proj"
    (dst / "implementations" / "notes-grpc").mkdir(parents=True)
    shutil.copytree(ROOT / "scenarios" / "notes-grpc", dst / "scenarios" / "notes-grpc",
                    ignore=shutil.ignore_patterns("__pycache__"))
    toml = dst / "scenarios" / "notes-grpc" / "scenario.toml"
    toml.write_text(toml.read_text().replace("timeout_s = 60\n", "timeout_s = 3\n", 1))
    return dst


def add_impl(root: Path, name: str, manifest: str, files: dict[str, str] | None = None) -> Path:
    d = root / "implementations" / "notes-grpc" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "langbench.toml").write_text(manifest)
    for fname, text in (files or {}).items():
        (d / fname).write_text(text)
    return d


PY = sys.executable


@pytest.fixture(scope="module")
def dclient():
    """The Docker daemon's client; a docker test fails without one (never skipped)."""
    from harness import images
    from harness.errors import ToolError
    try:
        return images.client()
    except ToolError as exc:
        pytest.fail(f"the docker tests need a Docker daemon: {exc}")
