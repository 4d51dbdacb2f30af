"""The load tools' own test suites: tools/grpcload (grpcload, grpc-null,
httpload) with `cargo test`, so that their unit and integration tests (HTTP/2
framing, the response parser split at every byte, the body pool byte for byte
against blackhole.py, exact counts against an in-test server) run in CI too."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_grpcload_crate_tests_pass():
    p = subprocess.run(["cargo", "test", "--release", "--locked", "--quiet"], cwd=ROOT / "tools" / "grpcload",
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    results = [ln for ln in p.stdout.splitlines() if ln.startswith("test result:")]
    passed = sum(int(ln.split(" passed")[0].rsplit(" ", 1)[1]) for ln in results)
    assert passed >= 40 and all(" 0 failed" in ln for ln in results), results
