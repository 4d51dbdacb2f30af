"""The httpload driver: its command line, the parsing of the tool's JSON,
param validation, and the real tool against a small loopback server that
checks every request's path, id and body with blackhole.py's body_for."""
from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.drivers import get_driver
from harness.drivers.base import find_tool
from harness.errors import ToolError
from harness.manifest import Level, discover

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scenarios" / "blackhole"))
import blackhole  # noqa: E402

REPORT = {
    "tool": "httpload", "version": "0.1.0", "mode": "closed", "connections": 64, "send_t0": 50.0,
    "send_t1": 52.0, "count": 10010, "ok": 10000, "errors": 10, "cut_off": 2, "reconnects": 3, "late": 0,
    "status_codes": {"200": 10000, "413": 10}, "error_kinds": {"http 413": 10},
    "latency_ms": {"p50": 0.5, "p90": 0.9, "p99": 1.5, "p999": 3.0, "max": 7.0, "mean": 0.6}, "cpu_s": 1.0,
}


def test_parse_counts_ok_answers_over_the_send_window():
    res = get_driver("httpload").parse(REPORT, Level("concurrency", 64))
    assert res.ok_count == 10000 and res.errors == 10 and res.cut_off == 2 and res.count == 10010
    assert res.rps == pytest.approx(5000.0) and res.send_t0 == 50.0 and res.send_t1 == 52.0
    assert res.status_codes == {"200": 10000, "413": 10} and res.latency_ms["p99"] == 1.5
    assert res.latency_uncorrected_ms is None and res.notes == ["3 reconnects"]
    rate = dict(REPORT, mode="open", delayed_by_cap=4,
                latency_uncorrected_ms={"p50": 0.2, "p90": 0.3, "p99": 0.4, "p999": 0.5, "max": 1, "mean": 0.2})
    res = get_driver("httpload").parse(rate, Level("rate", 5000))
    assert res.latency_uncorrected_ms["p50"] == 0.2 and res.extra["delayed_by_cap"] == 4
    with pytest.raises(ToolError, match="made no request"):
        get_driver("httpload").parse(dict(REPORT, count=0, ok=0, errors=0), Level("concurrency", 1))
    with pytest.raises(ToolError, match="lacks a field"):
        get_driver("httpload").parse({"count": 1}, Level("concurrency", 1))


def test_command_line_from_the_blackhole_workload(monkeypatch):
    import harness.drivers.httpload as hl
    monkeypatch.setattr(hl, "find_tool", lambda name: f"/x/{name}")
    sc = discover(ROOT).scenario("blackhole")
    w = sc.workload("record")
    argv = get_driver("httpload").command(target="127.0.0.1:9", workload=w, level=Level("concurrency", 256),
                                          duration_s=6, cpus=[0], out_file=Path("/tmp/o.json"), nonce="abc")
    val = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert argv[0] == "/x/httpload" and val["--connections"] == "256" and val["--duration"] == "6"
    assert val["--path"] == "/bh/{conn}/{n}" and val["--id-header"] == "X-Request-ID"
    assert val["--body"] == "pool" and val["--body-bytes"] == "2048" and val["--nonce"] == "abc"
    assert "--rate" not in val
    argv = get_driver("httpload").command(target="127.0.0.1:9", workload=w,
                                          level=Level("rate", 3000, concurrency=64), duration_s=6, cpus=[0],
                                          out_file=Path("/tmp/o.json"), nonce="abc")
    val = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert val["--rate"] == "3000" and val["--connections"] == "64"


def test_params_are_validated():
    d = get_driver("httpload")
    assert d.validate({"body": "pool", "body_bytes": 10}, ROOT) == []
    assert [f for f, _ in d.validate({"body": "random"}, ROOT)] == ["params.body"]
    assert [f for f, _ in d.validate({"body_bytes": -1}, ROOT)] == ["params.body_bytes"]
    assert [f for f, _ in d.validate({"script": "x.lua"}, ROOT)] == ["params.script"]


def test_real_tool_sends_the_bodies_blackhole_checks(tmp_path):
    """httpload (tools/bin, built by setup.sh) for 1 s against a loopback
    server that checks every request; the tool's count equals the server's."""
    seen, bad = [], []

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rid = self.headers["X-Request-ID"]
            _, c, n = rid.rsplit("-", 2)
            seen.append(rid)
            if body != blackhole.body_for(rid, 2048) or self.path != f"/bh/{c}/{n}":
                bad.append(rid)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        out = tmp_path / "r.json"
        p = subprocess.run([find_tool("httpload"), "--target", f"127.0.0.1:{srv.server_address[1]}",
                            "--connections", "4", "--duration", "1", "--method", "POST", "--path", "/bh/{conn}/{n}",
                            "--id-header", "X-Request-ID", "--body", "pool", "--body-bytes", "2048",
                            "--nonce", "t1", "--out", str(out)], capture_output=True, text=True, timeout=60)
    finally:
        srv.shutdown()
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    assert rep["ok"] == len(seen) > 50 and rep["errors"] == 0 and not bad
    assert len(set(seen)) == len(seen)
