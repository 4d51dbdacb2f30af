"""The wsload driver: its command lines from ws-echo's workloads, the parsing
of the tool's JSON (closed, open, ramp; the problems it turns into a failed
level), and the real tool on loopback: against ws-null (exact counts, every
echo checked, a ramp's steps) and against a small server of this test that
corrupts, drops and closes on purpose, where wsload must count exactly what
went wrong. Last, the conformance checker wsecho.py must fail ws-null, which
is not a conforming server."""
from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.drivers import get_driver
from harness.drivers.base import find_tool
from harness.drivers.wsload import ramp_steps
from harness.errors import ToolError
from harness.manifest import Level, discover

ROOT = Path(__file__).resolve().parents[1]
WS = get_driver("wsload")

LAT = {"p50": 0.2, "p90": 0.3, "p99": 0.5, "p999": 0.9, "max": 3.0, "mean": 0.25}
REPORT = {"tool": "wsload", "mode": "closed", "send_t0": 10.0, "send_t1": 14.0, "count": 40002, "ok": 40000,
          "errors": 2, "cut_off": 0, "unsent": 0, "sent": 40002, "late": 0, "connects": 100, "reconnects": 1,
          "connect_failures": 0, "error_kinds": {"io: connection reset": 2}, "closes": {"1000": 99},
          "server_closes": 0, "close_unanswered": 0, "dropped": 1, "pings": 0, "bytes_sent": 1, "bytes_received": 1,
          "latency_ms": LAT, "latency_uncorrected_ms": None, "handshake_ms": dict(LAT, p99=1.5),
          "per_second": [10000] * 4, "per_second_latency_ms": [{"p50": 0.2, "p99": 0.5, "max": 3.0}] * 4,
          "cpu_s": 1.0}


def test_parse_closed_loop():
    res = WS.parse(REPORT, Level("concurrency", 100))
    assert res.ok_count == 40000 and res.errors == 2 and res.rps == pytest.approx(10000.0)
    assert res.latency_ms["p99"] == 0.5 and res.latency_uncorrected_ms is None and res.problem is None
    assert res.extra["handshake_p99_ms"] == 1.5 and res.extra["server_closes"] == 0
    assert res.detail["closes"] == {"1000": 99} and len(res.detail["per_second_latency_ms"]) == 4
    assert res.notes == ["1 reconnects"]
    with pytest.raises(ToolError, match="sent no message"):
        WS.parse(dict(REPORT, count=0, ok=0, errors=0), Level("concurrency", 1))
    with pytest.raises(ToolError, match="lacks a field"):
        WS.parse({"ok": 1}, Level("concurrency", 1))


def test_parse_turns_wrong_echoes_into_a_problem():
    bad = dict(REPORT, errors=7, error_kinds={"echo: wrong bytes": 5, "ws: masked frame from server": 2})
    res = WS.parse(bad, Level("concurrency", 100))
    assert res.problem.startswith("7 echoes were not what was sent") and "echo: wrong bytes" in res.problem


def test_parse_open_loop_keeps_both_latencies():
    rate = dict(REPORT, mode="open", late=12, unsent=3, latency_uncorrected_ms=dict(LAT, p99=0.4))
    res = WS.parse(rate, Level("rate", 5000, concurrency=1000))
    assert res.latency_uncorrected_ms["p99"] == 0.4 and res.latency_ms["p99"] == 0.5 and res.late == 12
    assert any("never sent" in n for n in res.notes) and any("1 ms after their due time" in n for n in res.notes)


def test_parse_ramp_steps_and_their_problems():
    steps = [{"connections": 0, "open": 0, "opened": 0, "failed": 0, "open_s": 0.0, "gc": "204", "t0": 20.0, "t1": 22.0},
             {"connections": 1000, "open": 1000, "opened": 1000, "failed": 0, "open_s": 0.4, "gc": "204",
              "t0": 25.0, "t1": 27.0}]
    ramp = dict(REPORT, mode="ramp", send_t0=20.0, send_t1=27.0, count=1000, ok=1000, errors=0, error_kinds={},
                steps=steps)
    res = WS.parse(ramp, Level("connections", 1000))
    assert res.rps == 0.0 and res.problem is None
    assert [s["name"] for s in res.steps] == ["0 open", "1000 open"] and res.steps[1]["t0"] == 25.0
    short = [steps[0], dict(steps[1], open=990, failed=4, gc="404")]
    res = WS.parse(dict(ramp, steps=short), Level("connections", 1000))
    assert "10 of 1000 connections were not open" in res.problem and "answered 404" in res.problem


def test_ramp_steps_start_at_zero_and_end_at_the_level():
    assert ramp_steps(10000, [1000, 5000]) == [0, 1000, 5000, 10000]
    assert ramp_steps(1000, [1000, 5000]) == [0, 1000]
    assert ramp_steps(3000, [5000, 1000, 1000]) == [0, 1000, 3000]


def _val(argv):
    return {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}


def test_command_lines_from_the_ws_echo_workloads(monkeypatch):
    import harness.drivers.wsload as wl
    monkeypatch.setattr(wl, "find_tool", lambda name: f"/x/{name}")
    sc = discover(ROOT).scenario("ws-echo")
    out = Path("/tmp/o.json")
    argv = WS.command(target="127.0.0.1:9", workload=sc.workload("echo-8k"), level=Level("concurrency", 1000),
                      duration_s=8, cpus=[0], out_file=out)
    v = _val(argv)
    assert argv[0] == "/x/wsload" and v["--connections"] == "1000" and v["--size"] == "8192"
    assert v["--kind"] == "binary" and v["--inflight"] == "16" and v["--duration"] == "8" and "--rate" not in v
    argv = WS.command(target="127.0.0.1:9", workload=sc.workload("tail"), level=Level("rate", 5000, concurrency=16),
                      duration_s=30, cpus=[0], out_file=out)
    v = _val(argv)
    assert v["--rate"] == "5000" and v["--connections"] == "1000" and v["--duration"] == "30"
    argv = WS.command(target="127.0.0.1:9", workload=sc.workload("ramp"), level=Level("connections", 10000),
                      duration_s=8, cpus=[0], out_file=out)
    v = _val(argv)
    assert v["--ramp"] == "0,1000,5000,10000" and v["--hold"] == "8" and v["--gc-path"] == "/langbench-gc"
    assert v["--settle"] == "2" and "--duration" not in v


def test_ws_echo_workloads_run_only_their_own_level_kinds():
    sc = discover(ROOT).scenario("ws-echo")
    kinds = {w.name: w.kinds(WS.level_kinds) for w in sc.workloads}
    assert kinds == {"echo-500": ("concurrency",), "echo-2k": ("concurrency",), "echo-8k": ("concurrency",),
                     "ramp": ("connections",), "tail": ("rate",)}
    assert sc.workload("tail").duration_s("standard", 6) == 20 and sc.workload("echo-2k").duration_s("standard", 6) == 6
    # the ramp has a server run of its own; the others share one
    assert [names for _, names in sc.modes()] == [["echo-500", "echo-2k", "echo-8k", "tail"], ["ramp"]]
    assert sc.workload("ramp").mode == "ramp" and sc.workload("tail").mode == ""


def test_bad_workload_fields_are_named(tmp_path):
    from harness.errors import ManifestError
    from harness.manifest import load_scenario
    src = (ROOT / "scenarios" / "ws-echo" / "scenario.toml").read_text()
    for bad, field in ((src.replace('levels = ["rate"]', 'levels = ["bogus"]'), "levels"),
                       (src.replace("kind = \"binary\"", "kind = \"utf16\""), "params.kind"),
                       (src.replace("{ quick = 5, standard = 20 }", "{ quick = 5, huge = 20 }"), "duration_s.huge")):
        d = tmp_path / "ws-echo"
        d.mkdir(exist_ok=True)
        (d / "scenario.toml").write_text(bad)
        with pytest.raises(ManifestError) as ei:
            load_scenario(d / "scenario.toml")
        assert field in str(ei.value), str(ei.value)


# --------------------------------------------------------------------------- the real tool

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc=None) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.returncode}")
            time.sleep(0.05)
    raise RuntimeError("server did not listen")


@pytest.fixture()
def ws_null():
    port = _free_port()
    p = subprocess.Popen([find_tool("ws-null"), "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        _wait_port(port, p)
        yield port
    finally:
        p.kill()
        p.wait()


def _wsload(*args: str, timeout: float = 120) -> dict:
    p = subprocess.run([find_tool("wsload"), *args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_closed_loop_against_ws_null_counts_exactly(ws_null):
    r = _wsload("--target", f"127.0.0.1:{ws_null}", "--connections", "20", "--inflight", "3", "--size", "700",
                "--duration", "1")
    assert r["errors"] == 0 and r["ok"] > 1000 and r["cut_off"] == 0
    # every message sent was echoed and checked; every connection closed cleanly
    assert r["sent"] == r["ok"] == r["count"] and r["connects"] == 20 and r["closes"] == {"1000": 20}
    assert r["close_unanswered"] == 0 and r["server_closes"] == 0
    assert r["send_t0"] < r["send_t1"] and sum(r["per_second"]) == r["ok"]
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]


def test_open_loop_sends_exactly_the_schedule(ws_null):
    r = _wsload("--target", f"127.0.0.1:{ws_null}", "--connections", "10", "--rate", "2000", "--duration", "1.5",
                "--kind", "binary", "--size", "100")
    assert r["mode"] == "open" and r["sent"] == 3000 and r["ok"] == 3000 and r["errors"] == 0
    assert r["latency_uncorrected_ms"] is not None


def test_ramp_against_ws_null_holds_every_step(ws_null):
    r = _wsload("--target", f"127.0.0.1:{ws_null}", "--ramp", "0,50,200", "--hold", "0.3", "--settle", "0")
    assert [(s["connections"], s["open"], s["failed"]) for s in r["steps"]] == [(0, 0, 0), (50, 50, 0), (200, 200, 0)]
    assert all(s["t0"] < s["t1"] for s in r["steps"]) and r["ok"] == 200 and r["closes"] == {"1000": 200}
    # ws-null serves no plain HTTP: a GC request there is answered 400
    r = _wsload("--target", f"127.0.0.1:{ws_null}", "--ramp", "0,10", "--hold", "0.2", "--settle", "0",
                "--gc-path", "/langbench-gc")
    assert [s["gc"] for s in r["steps"]] == ["400", "400"]
    res = WS.parse(r, Level("connections", 10))
    assert "answered 400" in res.problem


class BadEcho:
    """A WebSocket server of this test (raw asyncio): echoes, but corrupts
    every 10th message of a connection, and closes with 1011 after 55; or
    (`slow_first_s`) echoes faithfully, the first connection's echoes each
    `slow_first_s` late, noting when close frames arrive and when the last
    echo went out."""

    def __init__(self, slow_first_s: float = 0.0):
        self.slow_first_s = slow_first_s
        self.conns = 0
        self.close_times: list[float] = []
        self.last_echo = 0.0
        self.port = _free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter):
        import base64
        import hashlib
        head = await r.readuntil(b"\r\n\r\n")
        key = [ln.split(b":", 1)[1].strip() for ln in head.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-key")][0]
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        n = 0
        self.conns += 1
        slow = self.slow_first_s if self.conns == 1 else 0.0
        try:
            while True:
                b0, b1 = await r.readexactly(2)
                ln = b1 & 0x7F
                if ln == 126:
                    ln = struct.unpack(">H", await r.readexactly(2))[0]
                elif ln == 127:
                    ln = struct.unpack(">Q", await r.readexactly(8))[0]
                key = await r.readexactly(4)
                data = bytearray(await r.readexactly(ln))
                for i in range(ln):
                    data[i] ^= key[i % 4]
                op = b0 & 0x0F
                if op == 0x8:
                    self.close_times.append(time.monotonic())
                    w.write(b"\x88\x02" + bytes(data[:2]))
                    await w.drain()
                    break
                n += 1
                if self.slow_first_s:
                    if slow:
                        await asyncio.sleep(slow)
                elif n == 56:
                    w.write(b"\x88\x02" + struct.pack(">H", 1011))
                    await w.drain()
                    await r.read()
                    break
                if n % 10 == 0 and not self.slow_first_s:
                    data[-1] ^= 1
                hdr = bytes([0x80 | op]) + (bytes([ln]) if ln < 126 else b"\x7e" + struct.pack(">H", ln))
                w.write(hdr + bytes(data))
                await w.drain()
                self.last_echo = time.monotonic()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    def __enter__(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_wrong_echoes_and_server_closes_are_counted_exactly():
    # one connection, one message in flight: messages 1..55 are answered (every
    # 10th corrupted: 5), the 56th gets a close 1011 instead; the slot
    # reconnects and the same happens again until the run ends
    with BadEcho() as srv:
        r = _wsload("--target", f"127.0.0.1:{srv.port}", "--connections", "1", "--size", "64", "--duration", "1")
    cycles = r["server_closes"]
    assert cycles >= 1 and r["closes"].get("1011") == cycles
    kinds = r["error_kinds"]
    assert kinds["closed by server: 1011"] == cycles
    # every full cycle: 50 good, 5 corrupted
    assert kinds["echo: wrong bytes"] >= 5 * cycles and r["ok"] >= 50 * cycles
    assert r["ok"] + r["errors"] == r["count"]
    res = WS.parse(r, Level("concurrency", 1))
    assert "echoes were not what was sent" in res.problem


def test_no_connection_closes_before_the_last_echo_is_in():
    """Open loop over 4 connections, the first one's echoes 0.4 s late: the
    other three must not start their close handshakes while its last echo
    is still on the way (a burst of closes would delay the final echoes of
    a real run and show as a tail in its last second)."""
    with BadEcho(slow_first_s=0.4) as srv:
        r = _wsload("--target", f"127.0.0.1:{srv.port}", "--connections", "4", "--rate", "40", "--duration", "1",
                    "--size", "64")
    assert r["ok"] == r["sent"] == 40 and r["errors"] == 0, r
    assert len(srv.close_times) == 4
    assert min(srv.close_times) >= srv.last_echo, (srv.close_times, srv.last_echo)


def test_wsecho_fails_a_server_that_does_not_follow_the_contract(ws_null):
    """ws-null echoes, but serves no HTTP routes and checks no UTF-8: the
    conformance check must say so (and pass what it does right)."""
    p = subprocess.run([sys.executable, str(ROOT / "scenarios" / "ws-echo" / "wsecho.py"), "verify", "--target",
                        f"127.0.0.1:{ws_null}", "--no-silent"], capture_output=True, text=True, timeout=120)
    verdict = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 1 and verdict["ok"] is False
    by = {c["name"].split(":")[0].split(" (")[0]: c["ok"] for c in verdict["checks"]}
    assert by["routes"] is False and by["invalid UTF-8 in a text message"] is False
    assert by["echo of every length form"] is True and by["200 messages written at once come back in order"] is True
    assert by["ping answered with a pong of the same payload"] is True


def test_selection_by_id_and_workload():
    from harness.errors import InputError
    cat = discover(ROOT)
    sel = cat.select(["blackhole"], ["blackhole/go"], ["discard"])
    ((sc, impls),) = sel
    assert [i.id for i in impls] == ["blackhole/go"] and [w.name for w in sc.workloads] == ["discard"]
    # a language takes every implementation in it; a folder name every scenario's
    sel = dict((s.name, [i.name for i in lst]) for s, lst in cat.select(["blackhole", "notes-grpc"], ["rust"]))
    assert sel == {"blackhole": ["rust"], "notes-grpc": ["rust"]}
    with pytest.raises(InputError, match="unknown workload 'nope'"):
        cat.select(["blackhole"], None, ["nope"])
    with pytest.raises(InputError, match="unknown implementation 'blackhole/cobol'"):
        cat.select(["blackhole"], ["blackhole/cobol"])
