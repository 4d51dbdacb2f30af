"""End to end: ws-echo, every implementation under the process runtime and
the four languages' originals in containers, quick profile: conformance
(and the idle-timeout check once per implementation), echoes checked byte
for byte under load, a 1,000-connection ramp of idle connections on a
server run of its own with memory per connection from the steps, the open
loop's latency per second, and the GC pauses read from the Go and JVM
servers' logs."""
from __future__ import annotations

import pytest


from ..conftest import completed_run, langbench_processes, quick_run, run_cli

pytestmark = pytest.mark.e2e
ORIGINALS = ("ws-echo/go", "ws-echo/rust", "ws-echo/python", "ws-echo/scala")
# the quick profile's echo-2k, tail and ramp (echo-500 and echo-8k differ
# from echo-2k only in size and type: the tool's tests cover those)
WORKLOADS = ("--workload", "echo-2k", "--workload", "tail", "--workload", "ramp")


@pytest.fixture(scope="module")
def ws_run(tmp_path_factory):
    return quick_run(tmp_path_factory, "ws-echo", "process", *WORKLOADS)


@pytest.fixture(scope="module")
def ws_docker_run(tmp_path_factory, dclient):
    impls = [a for i in ORIGINALS for a in ("--impl", i)]
    return quick_run(tmp_path_factory, "ws-echo", "docker", "--no-calibrate", *impls, *WORKLOADS)


def _check_run(proc, out) -> dict:
    # two server runs per implementation: the echo and tail workloads, and the ramp on its own
    data = completed_run(proc, out, ("", "ramp"))
    impls, insts = data["implementations"], data["instances"]
    for inst in insts:
        assert inst["shutdown"]["exit_code"] == 0 and not inst["shutdown"]["killed"], inst["shutdown"]
    # the idle-timeout check ran once per implementation, on its first server run
    for iid in impls:
        ran = [st for i in insts if i["implementation_id"] == iid for st in i["verify"]["steps"]
               if st["name"] == "idle-timeout" and not st.get("skipped")]
        assert len(ran) == 1 and ran[0]["ok"], (iid, ran)
    for m in data["measurements"]:
        assert m["ok"], (m["instance"], m["workload"], m["error"])
        load = m["load"]
        if m["workload"] == "ramp":
            steps = m["steps"]
            assert [(s["connections"], s["open"]) for s in steps] == [(0, 0), (1000, 1000)], steps
            assert all(s["gc"].startswith("2") for s in load["steps"]), load["steps"]
            # memory per connection: the slope between the idle server and 1,000 connections
            kb = steps[1]["kb_per_connection"]
            assert kb is not None and 0 < kb < 1000, (m["instance"], kb)
            # the kernel's TCP sockets (IPv4 and IPv6: the JVM's are IPv6),
            # read by the tool and sampled by the harness in the server's
            # network namespace, which both runtimes share with the tool (the
            # docker runtime uses host networking): both ends of every
            # connection, 2,000 more than at the idle step
            assert steps[1]["server_netns"].startswith("shared"), steps[1]["server_netns"]
            for key in ("tcp_sockets", "server_tcp_sockets"):
                assert steps[1][key] - steps[0][key] >= 1990, (key, steps)
            assert steps[1]["server_tcp_buffers_mb"] >= 0, steps
        else:
            assert load["ok_count"] > 0 and load["errors"] == 0, (m["instance"], load["error_kinds"])
            assert load["extra"]["server_closes"] == 0
            secs = load["detail"]["per_second_latency_ms"]
            assert secs and sum(load["detail"]["per_second"]) == load["ok_count"]
        if m["workload"] == "tail":
            assert m["level"]["kind"] == "rate" and load["latency_uncorrected_ms"] is not None
            # the open loop sent the whole schedule: rate x duration (the
            # tests' short windows)
            assert data["overrides"]["duration_s"] == 2
            assert load["extra"]["sent"] == round(m["level"]["value"] * 2)
    # the Go and JVM servers' GC logs were read: /langbench-gc forced a
    # collection before each ramp step, so every ramp server run has pauses
    for inst in insts:
        lang = impls[inst["implementation_id"]]["language"]
        if inst["mode"] == "ramp" and lang in ("go", "scala"):
            gc = inst.get("gc") or {}
            assert gc.get("count", 0) >= 2, (inst["key"], gc)
            assert gc["source"] == ("go gctrace" if lang == "go" else "jvm -Xlog:gc")
            assert all(p[1] >= 0 for p in gc["pauses"])
    return data


def test_every_implementation_echoes_and_holds_connections_process_runtime(ws_run):
    proc, out = ws_run
    data = _check_run(proc, out)
    cal = data["ceilings"]["ws-echo"]
    assert cal["echo-2k"]["max_rps"] > 1000, cal["echo-2k"]
    assert "nothing to calibrate" in cal["ramp"]["error"]
    names = {v["name"] for v in data["implementations"].values()}
    assert {"go", "go-gorilla", "rust", "python", "scala"} <= names


def test_report_shows_steps_latency_over_time_and_gc(ws_run):
    _, out = ws_run
    html = out.parent / "report.html"
    assert run_cli("report", str(out), "-o", str(html)).returncode == 0
    text = html.read_text()
    assert "kb_per_connection" in text and "tcp_buffers_mb" in text
    assert "latency over time and the server&#39;s GC pauses" in text or \
        "latency over time and the server's GC pauses" in text
    assert "msg/s: echoes checked" in text and "gc_pauses" in text


def test_the_originals_in_containers(ws_docker_run):
    proc, out = ws_docker_run
    data = _check_run(proc, out)
    for inst in data["instances"]:
        assert inst["runtime"]["container_id"], inst["runtime"]
        assert inst["runtime"]["memory_accounting"].startswith("pss"), inst["runtime"]


def test_nothing_left_running():
    assert langbench_processes() == []
