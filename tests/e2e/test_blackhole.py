"""End to end: blackhole, all four languages, under the process runtime and
in containers: every record checked after stop, recording off as a server
run of its own, the 4x4 files interop matrix, and a recording of one
language replayed into another."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness import results

from ..conftest import ROOT, completed_run, langbench_processes, quick_run, run_cli

pytestmark = pytest.mark.e2e
BH = ROOT / "scenarios" / "blackhole" / "blackhole.py"


@pytest.fixture(scope="module")
def bh_run(tmp_path_factory):
    return quick_run(tmp_path_factory, "blackhole", "process", "--keep-instance-files")


@pytest.fixture(scope="module")
def bh_docker_run(tmp_path_factory, dclient):
    # the load tool's ceiling does not depend on the runtime: measured in the
    # process-runtime run only
    return quick_run(tmp_path_factory, "blackhole", "docker", "--no-calibrate")


def _check_run(proc, out) -> dict:
    # two server runs per implementation: recording on, and off (RECORD=0)
    data = completed_run(proc, out, ("", "record0"))
    insts = data["instances"]
    for inst in insts:
        stop = inst["after_stop"]
        assert stop["ok"], (inst["key"], stop["detail"])
        assert inst["shutdown"]["exit_code"] == 0 and not inst["shutdown"]["killed"]
        checks = {c["name"]: c for c in stop["checks"]}
        if inst["mode"] == "record0":
            assert inst["server_env"] == {"RECORD": "0"} and inst["workloads"] == ["discard"]
            assert checks["RECORD=0: no file written"]["ok"] and inst["instance_files"]["count"] == 0
        else:
            assert inst["workloads"] == ["record"] and inst["env"]["RECORD"] == "1"
            # every 200 answer of this server (probe, verification, warm-up,
            # levels) is one record, decoded and checked
            assert stop["metrics"]["records"]["value"] == inst["ok_total"] > 1000
            assert checks["records == 200 answers"]["ok"] and checks["every body as sent"]["ok"]
            assert stop["metrics"]["files"]["value"] >= 1
            assert 0.8 < stop["metrics"]["lz4_ratio"]["value"] < 1.1      # random bodies hardly compress
    for m in data["measurements"]:
        assert m["ok"], m["error"]
        assert m["load"]["ok_count"] > 0 and m["load"]["errors"] == 0
        disk = m["server"]["disk"]
        if m["workload"] == "record":
            # the files grew by roughly the 2 KB bodies written, or more
            assert disk["bytes"] > 0.5 * m["load"]["ok_count"] * 2048, (m["instance"], disk, m["load"]["ok_count"])
        else:
            assert disk["bytes"] == 0
    return data


def test_every_language_records_every_request_process_runtime(bh_run):
    proc, out = bh_run
    data = _check_run(proc, out)
    cal = data["ceilings"]["blackhole"]
    assert set(cal) == {"record", "discard"} and cal["record"]["max_rps"] > 1000, cal
    rows = results.flat_rows(data)
    rec = [r for r in rows if r["workload"] == "record"]
    assert all(r["disk_mb_s"] > 0 for r in rec) and all(r["lz4_ratio"] > 0 for r in rec)


def test_files_interop_matrix_is_complete(bh_run):
    proc, out = bh_run
    cells = results.load(out)["interop"]["blackhole"]
    assert len(cells) == 16 and {c["kind"] for c in cells} == {"files"}
    bad = [c for c in cells if not c["ok"]]
    assert not bad, bad
    assert all("digest equal" in c["detail"] for c in cells)


def test_report_shows_the_reader_matrix_and_disk(bh_run):
    _, out = bh_run
    html = out.parent / "report.html"
    assert run_cli("report", str(out), "-o", str(html)).returncode == 0
    text = html.read_text()
    assert "reader ↓ / files of →" in text and "disk_mb_s" in text and "lz4_ratio" in text
    assert "× go" in text and "1.00" in text          # throughput relative to Go's ([report] baseline)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_recording_of_one_language_replays_into_another(bh_run, tmp_path):
    """Python's recording replayed into the Rust server: the Rust server's
    records carry the same ids, methods, URIs and bodies."""
    _, out = bh_run
    src = out / "instances" / "blackhole-python-t1"
    assert any(src.glob("*.lz4")), list(src.iterdir())
    dst = tmp_path / "rust-rec"
    dst.mkdir()
    port = _free_port()
    rust = ROOT / "implementations" / "blackhole" / "rust"
    manifest = (rust / "langbench.toml").read_text()
    import tomllib
    cmd = tomllib.loads(manifest)["run"]["command"]
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "LANGBENCH_CPUS": "1", "BLACKHOLE_DIR": str(dst)}
    server = subprocess.Popen(cmd, cwd=rust, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        p = subprocess.run([sys.executable, str(BH), "replay", str(src), "--target", f"127.0.0.1:{port}",
                            "--rate", "2000", "--max", "300"], capture_output=True, text=True, timeout=120)
        line = json.loads(p.stdout.strip().splitlines()[-1])
        assert p.returncode == 0 and line["sent"] == 300 and line["status_counts"] == {"200": 300}, (line, p.stderr)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
    def records(folder, n=None):
        p = subprocess.run([sys.executable, str(BH), "read", str(folder), "--records"], capture_output=True,
                           text=True, timeout=600)
        lines = [json.loads(x) for x in p.stdout.splitlines()]
        return lines[:-1][:n] if n else lines[:-1]
    sent = records(src, 300)
    got = records(dst)
    key = lambda r: (r["id"], r["method"], r["uri"], r["body_sha256"])  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, sent))


def test_every_language_records_every_request_in_containers(bh_docker_run):
    proc, out = bh_docker_run
    data = _check_run(proc, out)
    for inst in data["instances"]:
        assert inst["runtime"]["container_id"], inst["runtime"]
    assert len(data["interop"]["blackhole"]) == 16 and all(c["ok"] for c in data["interop"]["blackhole"])


def test_nothing_left_running():
    assert langbench_processes() == []
