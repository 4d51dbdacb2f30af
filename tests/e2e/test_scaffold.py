"""`langbench new`: scaffold a scenario, run its minimal servers for real."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from harness import results

from ..conftest import ROOT, SHORT_WINDOWS, langbench_processes

pytestmark = pytest.mark.e2e


def test_new_scenario_scaffold_runs(tmp_path):
    root = tmp_path / "proj"
    (root / "scenarios").mkdir(parents=True)
    (root / "implementations").mkdir()
    if (ROOT / "tools").is_dir():
        shutil.copytree(ROOT / "tools", root / "tools")
    cli = [sys.executable, "-m", "harness.cli", "--root", str(root)]
    proc = subprocess.run([*cli, "new", "hello-http"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for lang in ("python", "go", "rust", "scala"):
        assert (root / "implementations" / "hello-http" / lang / "langbench.toml").is_file()
        assert (root / "implementations" / "hello-http" / lang / "Dockerfile").is_file()
    again = subprocess.run([*cli, "new", "hello-http"], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
    # the skeletons are minimal working servers: run them as scaffolded
    out = tmp_path / "run"
    # the Rust and Scala skeletons build the same way; Python and Go keep this test short
    proc = subprocess.run([*cli, "run", "hello-http", "--impl", "python", "--impl", "go", "--runtime", "process",
                           "--profile", "quick", *SHORT_WINDOWS, "--out", str(out), "--no-report"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = results.flat_rows(results.load(out))
    assert {r["language"] for r in rows} == {"python", "go"}
    assert all(r["ok"] and r["verified"] and r["rps"] > 0 and r["errors"] == 0 for r in rows)
    assert langbench_processes() == []
