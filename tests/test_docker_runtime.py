"""The docker runtime: arithmetic (no daemon needed) and real containers.

The tests with containers need a Docker daemon and the local base images
(./setup.sh provides both on Debian as root). They are not skipped where the
daemon is missing: they fail, saying so.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from harness import build as builder
from harness import images, sampling
from harness.manifest import discover
from harness.readiness import wait_ready
from harness.runtimes import LaunchSpec
from harness.runtimes import docker as docker_rt
from harness.runtimes.docker import (CgroupFiles, DockerRuntime, cpu_percent, dockerfile_base,
                                        memory_usage, stats_memory)

from .conftest import ROOT

RUN_LABEL = docker_rt.RUN_LABEL
GHZ = ROOT / "tools" / "bin" / "ghz"


# ------------------------------------------------------------------ arithmetic, no daemon

def test_memory_is_anonymous_plus_mapped_files_not_the_page_cache():
    # cgroup v1: hierarchical anonymous + mapped file; the cache of written files is left out
    v1 = {"total_rss": 40_000, "total_mapped_file": 5_000, "total_cache": 900_000,
          "total_inactive_file": 30_000, "rss": 1, "mapped_file": 1}
    assert memory_usage(1_000_000, v1) == 45_000
    # cgroup v2
    assert memory_usage(1_000_000, {"anon": 30_000, "file_mapped": 2_000, "file": 900_000,
                                    "inactive_file": 40_000}) == 32_000
    stats = {"memory_stats": {"usage": 9_000_000, "stats": {"total_rss": 3_000_000, "total_mapped_file": 1,
                                                            "total_inactive_file": 1_000_000}}}
    assert stats_memory(stats) == 3_000_001


def test_memory_without_those_counters_is_usage_minus_inactive_file_as_docker_cli():
    # cgroup v1: total_inactive_file
    assert memory_usage(100_000, {"total_inactive_file": 30_000, "inactive_file": 1}) == 70_000
    # cgroup v2: inactive_file
    assert memory_usage(100_000, {"inactive_file": 40_000}) == 60_000
    # never below zero: the subtraction is skipped when it would not leave a positive figure
    assert memory_usage(100, {"total_inactive_file": 500}) == 100
    assert memory_usage(100, {}) == 100
    stats = {"memory_stats": {"usage": 9_000_000, "stats": {"total_inactive_file": 1_000_000}}}
    assert stats_memory(stats) == 8_000_000


def test_cpu_percent_as_docker_cli():
    stats = {"cpu_stats": {"cpu_usage": {"total_usage": 1_500_000_000}, "system_cpu_usage": 20_000_000_000,
                           "online_cpus": 2},
             "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}, "system_cpu_usage": 18_000_000_000}}
    # 0.5 s of CPU over 2 s of system time summed over 2 CPUs (1 s wall): 50 %
    assert cpu_percent(stats) == pytest.approx(50.0)
    # online_cpus missing: the number of per-CPU counters
    del stats["cpu_stats"]["online_cpus"]
    stats["cpu_stats"]["cpu_usage"]["percpu_usage"] = [1, 2]
    assert cpu_percent(stats) == pytest.approx(50.0)
    # first answer of a stream: no previous reading
    assert cpu_percent({"cpu_stats": stats["cpu_stats"], "precpu_stats": {}}) > 0
    assert cpu_percent({"cpu_stats": {}, "precpu_stats": {}}) == 0.0


def test_cgroup_files_v1_and_v2(tmp_path):
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "cpuacct.usage").write_text("2500000000\n")
    (v1 / "memory.usage_in_bytes").write_text("50000000\n")
    (v1 / "memory.stat").write_text("cache 1\ninactive_file 7\ntotal_inactive_file 10000000\n"
                                    "total_rss 25000000\ntotal_mapped_file 10000000\n")
    cg = CgroupFiles(1, v1 / "cpuacct.usage", v1 / "memory.usage_in_bytes", v1 / "memory.stat")
    assert cg.cpu_seconds() == 2.5
    assert cg.memory_bytes() == 35_000_000          # anonymous + mapped, not usage - inactive file (40 MB)
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.stat").write_text("usage_usec 1250000\nuser_usec 1000000\nsystem_usec 250000\n")
    (v2 / "memory.current").write_text("30000000\n")
    (v2 / "memory.stat").write_text("anon 18000000\nfile_mapped 5000000\ninactive_file 5000000\n")
    cg2 = CgroupFiles(2, v2 / "cpu.stat", v2 / "memory.current", v2 / "memory.stat")
    assert cg2.cpu_seconds() == 1.25
    assert cg2.memory_bytes() == 23_000_000
    # a container that has exited: its files are gone
    shutil.rmtree(v2)
    with pytest.raises(OSError):
        cg2.cpu_seconds()


def test_dockerfile_base_and_names(tmp_path):
    df = tmp_path / "Dockerfile"
    df.write_text("# comment\nARG BASE_IMAGE=langbench/base-cc:bookworm\nFROM ${BASE_IMAGE}\n")
    assert dockerfile_base(df) == "langbench/base-cc:bookworm"
    df.write_text("FROM scratch\nCOPY x /x\n")
    assert dockerfile_base(df) == "scratch"
    assert dockerfile_base(tmp_path / "missing") is None
    assert docker_rt._container_name("lb1-notes-grpc-go-t1") == "lb1-notes-grpc-go-t1"
    assert docker_rt._container_name("-a/b c") == "lb-a-b-c"


def test_owner_label_tells_a_live_run_from_a_killed_one():
    me = docker_rt._owner()
    assert me.startswith(f"{os.getpid()}:")
    assert not docker_rt._owner_alive(me)              # this process: its own leftovers are fair game
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        other = docker_rt._owner(p.pid)
        assert docker_rt._owner_alive(other)
        assert not docker_rt._owner_alive(f"{p.pid}:1.00")   # same pid, another process
    finally:
        p.kill()
        p.wait()
    assert not docker_rt._owner_alive(other)
    assert not docker_rt._owner_alive("")


def test_auto_runtime_chooses_docker_only_when_a_daemon_answers(monkeypatch):
    from harness import cli, runtimes

    class FakeDocker:
        name = "docker"

        def __init__(self, ok):
            self.ok = ok

        def available(self):
            return self.ok, "fake daemon" if self.ok else "no daemon here"

    real = runtimes.get_runtime
    for ok, expected in ((True, "docker"), (False, "process")):
        monkeypatch.setattr(runtimes, "get_runtime",
                            lambda name, ok=ok: FakeDocker(ok) if name == "docker" else real(name))
        rt = cli.choose_runtime("auto")
        assert rt.name == expected
        assert rt.selected.startswith("auto: ")
        assert ("no daemon here" in rt.selected) == (not ok)


def test_base_build_context_holds_dockerfile_and_local_cas():
    ctx = images.build_context(images.BASES["cc"].dockerfile)
    with tarfile.open(fileobj=ctx) as tar:
        names = tar.getnames()
        assert "Dockerfile" in names and "local-ca" in names
        assert "FROM scratch" in tar.extractfile("Dockerfile").read().decode()
    assert len([n for n in names if n.startswith("local-ca/")]) == len(images.local_cas())


# ------------------------------------------------------------------ with a Docker daemon

@pytest.fixture(scope="module")
def rt(dclient):
    r = DockerRuntime()
    yield r
    r._atexit()


BUSY = r"""
import json, os, signal, sys
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
try:
    open(os.path.join(os.path.dirname(os.environ["NOTES_FILE"]), "x"), "w")
    ro = "writable"
except OSError as exc:
    ro = exc.strerror
print(json.dumps({"affinity": sorted(os.sched_getaffinity(0)), "uid": os.getuid(),
                  "notes": os.path.isfile(os.environ["NOTES_FILE"]), "scenario_mount": ro,
                  "cpus_env": os.environ.get("LANGBENCH_CPUS")}), flush=True)
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
x = 0
while True:
    x += 1
"""

BUSY_DOCKERFILE = """\
ARG BASE_IMAGE=langbench/base-python:bookworm
FROM ${BASE_IMAGE}
COPY busy.py /app/busy.py
CMD ["python3", "/app/busy.py"]
"""


@pytest.fixture(scope="module")
def busy(tmp_path_factory, rt, dclient):
    """A throw-away project with the notes-grpc scenario and a 'busy'
    implementation (two processes spinning), its image built by prepare()."""
    root = tmp_path_factory.mktemp("dockerproj")
    shutil.copytree(ROOT / "scenarios" / "notes-grpc", root / "scenarios" / "notes-grpc",
                    ignore=shutil.ignore_patterns("__pycache__"))
    d = root / "implementations" / "notes-grpc" / "busy"
    d.mkdir(parents=True)
    (d / "langbench.toml").write_text('language = "python"\nframework = "none"\n[run]\ncommand = ["python3", '
                                      '"busy.py"]\n[tuning]\nthreads = "2 busy processes"\n')
    (d / "busy.py").write_text(BUSY)
    (d / "Dockerfile").write_text(BUSY_DOCKERFILE)
    cat = discover(root)
    impl, sc = cat.implementations["notes-grpc"][0], cat.scenario("notes-grpc")
    info = rt.prepare(impl, sc, root / "logs")
    yield impl, sc, info["image"], root
    try:
        dclient.images.remove(info["image"]["tag"], force=True)
    except Exception:  # noqa: BLE001
        pass


def spec(impl, sc, log: Path, run_id: str | None = None, quota=0.5, port=0) -> LaunchSpec:
    run_id = run_id or f"lbtest-{uuid.uuid4().hex[:8]}"
    return LaunchSpec(run_id=run_id, key=f"{run_id}-{sc.name}-{impl.name}", impl=impl, scenario=sc,
                      host="127.0.0.1", port=port, cpus=[1], cpu_quota=quota,
                      env={"HOST": "127.0.0.1", "PORT": str(port), "LANGBENCH_CPUS": "1",
                           "NOTES_FILE": f"{sc.dir}/data/notes.json"},
                      command=["ignored"], log_path=log,
                      labels={"langbench.run": run_id, "langbench.impl": impl.id})


def containers_of(dclient, run_id: str | None = None) -> list:
    label = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    return dclient.containers.list(all=True, filters={"label": label})


def test_image_recorded(busy):
    _, _, image, _ = busy
    assert image["id"].startswith("sha256:") and image["size_mb"] > 10
    assert image["tag"].startswith("langbench/notes-grpc-busy:")
    assert image["base"]["ref"] == images.BASES["python"].tag
    assert "debootstrap" in image["base"]["origin"] or image["base"]["origin"]


def test_container_pinned_capped_unprivileged_labelled_and_removed(busy, rt, dclient, tmp_path):
    impl, sc, _, _ = busy
    s = spec(impl, sc, tmp_path / "busy.log")
    h = rt.start(s)
    try:
        attrs = dclient.api.inspect_container(h.container.id)
        hc = attrs["HostConfig"]
        assert hc["CpusetCpus"] == "1"
        # the quota over the profile's short period (nano_cpus would mean 100 ms periods)
        assert (hc["CpuPeriod"], hc["CpuQuota"], hc["NanoCpus"]) == (10_000, 5_000, 0)
        assert hc["NetworkMode"] == "host"
        assert hc["Privileged"] is False
        assert "ALL" in hc["CapDrop"]
        assert "no-new-privileges" in hc["SecurityOpt"]
        labels = attrs["Config"]["Labels"]
        assert labels[RUN_LABEL] == s.run_id and labels["langbench.impl"] == impl.id
        mounts = attrs["Mounts"]
        assert [(m["Source"], m["Destination"], m["RW"]) for m in mounts] == [(str(sc.dir), str(sc.dir), False)]
        assert h.cgroup is not None, "cgroup files of the container not found"
        assert h.describe()["cpu_accounting"].startswith("cgroup file")
        time.sleep(0.5)
        smp = sampling.Sampler(sampling.counters_of(h), h.memory_bytes, 20).start()
        a = smp.mark()
        time.sleep(2.0)
        b = smp.mark()
        smp.stop()
        cores = sampling.cpu_cores(a, b)
        # two spinning processes, capped at half a core (less when other work shares CPU 1)
        assert 0.15 <= cores <= 0.56, cores
        mem = sampling.memory_stats(smp.snapshot())
        assert mem["n"] >= 20 and mem["mean_mb"] > 1
        assert h.quota_applied() == (0.5, 10_000)           # read back from the container's cgroup
        thr = h.throttling()
        assert thr["nr_periods"] >= 100 and thr["nr_throttled"] >= 0.5 * thr["nr_periods"], thr
        assert h.alive() and h.exit_code() is None
    finally:
        res = h.stop(grace_s=5)
    assert res.exit_code == 0 and not res.killed
    assert not h.alive()
    assert containers_of(dclient, s.run_id) == []
    out = json.loads(s.log_path.read_text().strip().splitlines()[0])
    assert out == {"affinity": [1], "uid": 0, "notes": True, "scenario_mount": "Read-only file system",
                   "cpus_env": "1"}


def test_service_container_mounts_its_data_and_keeps_earlier_logs(busy, rt, dclient, tmp_path):
    """A scenario service's container (no implementation): its data folder is
    mounted read-write at the same path, a command override runs, and a
    restarted service's log keeps the output of the container before it."""
    impl, sc, image, _ = busy
    data = tmp_path / "svc-data"
    data.mkdir()
    log = tmp_path / "svc.log"
    marker = data / "written-by-container"
    for i in range(2):
        s = spec(impl, sc, log)
        s.impl, s.labels = None, {docker_rt.SERVICE_LABEL: "notes-grpc/test"}
        s.mounts = {str(data): "rw"}
        h = rt.start_image(s, image["id"], ["python3", "-c", f"open('{marker}', 'a').write('x'); print('run {i}')"])
        labels = dclient.api.inspect_container(h.container.id)["Config"]["Labels"]
        assert labels[docker_rt.SERVICE_LABEL] == "notes-grpc/test" and "langbench.impl" not in labels
        mounts = {m["Destination"]: m["RW"] for m in dclient.api.inspect_container(h.container.id)["Mounts"]}
        assert mounts == {str(sc.dir): False, str(data): True}
        deadline = time.monotonic() + 30
        while h.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert h.stop(grace_s=5).exit_code == 0
    assert marker.read_text() == "xx"
    assert log.read_text().split() == ["run", "0", "run", "1"]
    assert containers_of(dclient, s.run_id) == []


def test_stop_kills_after_the_grace_period(busy, rt, dclient, tmp_path):
    impl, sc, _, root = busy
    d = impl.dir
    (d / "busy.py").write_text(BUSY.replace("lambda *a: sys.exit(0)", "signal.SIG_IGN"))
    try:
        rt.prepare(impl, sc, root / "logs")
        s = spec(impl, sc, tmp_path / "stubborn.log")
        h = rt.start(s)
        time.sleep(0.5)
        res = h.stop(grace_s=1.0)
        assert res.killed and res.exit_code is None and 0.9 <= res.shutdown_s < 5
        assert containers_of(dclient, s.run_id) == []
    finally:
        (d / "busy.py").write_text(BUSY)
        rt.prepare(impl, sc, root / "logs")         # back to the polite one (and its image)


def test_cleanup_removes_the_containers_of_killed_runs_only(busy, rt, dclient):
    impl = busy[0]
    image = rt.images[impl.id]          # the image prepared last (an earlier test rebuilt it)
    old = dclient.containers.run(image["id"], detach=True, network_mode="none",
                                 labels={RUN_LABEL: "lbkilledrun", "langbench.impl": "notes-grpc/busy"})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live = dclient.containers.run(image["id"], detach=True, network_mode="none",
                                  labels={RUN_LABEL: "lbliverun", docker_rt.OWNER_LABEL: docker_rt._owner(other.pid)})
    try:
        removed = rt.cleanup_leftovers("lbnewrun")
        assert any("lbkilledrun" in r for r in removed), removed
        assert containers_of(dclient, "lbkilledrun") == []
        assert [c.id for c in containers_of(dclient, "lbliverun")] == [live.id]   # its harness still runs
        other.kill()
        other.wait()
        removed = rt.cleanup_leftovers("lbnewrun")
        assert any("lbliverun" in r for r in removed), removed
        assert containers_of(dclient, "lbliverun") == []
    finally:
        other.kill()
        for c in (old, live):
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001
                pass


# ------------------------------------------------------------------ agreement with docker stats

def _ts(text: str) -> float:
    """A Docker API timestamp (RFC 3339, nanoseconds) as seconds since the epoch."""
    from datetime import datetime
    head, _, frac = text.rstrip("Z").partition(".")
    whole = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=__import__("datetime").timezone.utc)
    return whole.timestamp() + (float("0." + frac[:9]) if frac else 0.0)


def _cpu_at(samples, t: float) -> float:
    """The cumulative CPU counter at monotonic time t, interpolated between samples."""
    for a, b in zip(samples, samples[1:]):
        if a.t <= t <= b.t:
            return a.cpu_s + (b.cpu_s - a.cpu_s) * (t - a.t) / (b.t - a.t)
    raise AssertionError("time outside the sampled span")


def _agreement(h, container, seconds: float = 8.0) -> dict:
    """Harness CPU and memory against the Docker stats API for the same container.

    CPU, two ways: (1) docker's formula (usage delta / system delta x online
    CPUs) between two one-shot readings against the harness's counter
    (20 Hz samples, interpolated) between the same instants; (2) each of `docker stats`' own readings (stats with precpu_stats,
    the daemon's ~1 s interval, from `preread` to `read`) against the
    harness's 20 Hz samples over exactly that interval, summed over the
    readings. Memory: the cgroup's figure, the same definition on both sides (memory_usage over the cgroup files and over the stats API's memory_stats), paired readings; and the PSS the harness samples against psutil's reading of the same processes."""
    def one_shot():
        return container.stats(stream=False, one_shot=True)

    offset = time.time() - time.monotonic()          # wall clock -> monotonic
    smp = sampling.Sampler(sampling.counters_of(h), h.memory_bytes, 20).start()
    time.sleep(0.3)
    s0 = one_shot()
    readings, mem_pairs = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        st = container.stats(stream=False)          # with precpu_stats: what `docker stats` shows
        readings.append((_ts(st["preread"]) - offset, _ts(st["read"]) - offset, cpu_percent(st)))
        # the cgroup's own figure (the fallback where PSS cannot be read),
        # the same definition as the stats API's
        m1 = h.cgroup.memory_bytes()
        dm = stats_memory(one_shot())
        m2 = h.cgroup.memory_bytes()
        mem_pairs.append(((m1 + m2) / 2, dm))
    # what the harness samples: the PSS of the container's processes, against
    # psutil's reading of the same processes
    import psutil
    pss_h = h.memory_bytes()
    pss_p = sum(psutil.Process(pid).memory_full_info().pss for pid in h.cgroup.pids())
    s1 = one_shot()
    time.sleep(0.3)
    smp.stop()
    samples = smp.snapshot()
    cpu1, cpu0 = s1["cpu_stats"], s0["cpu_stats"]
    online = cpu1.get("online_cpus") or len(cpu1["cpu_usage"].get("percpu_usage") or [1])
    docker_window = ((cpu1["cpu_usage"]["total_usage"] - cpu0["cpu_usage"]["total_usage"])
                     / (cpu1["system_cpu_usage"] - cpu0["system_cpu_usage"]) * online * 100)
    # the harness's counter over the same instants as docker's two readings
    r0, r1 = _ts(s0["read"]) - offset, _ts(s1["read"]) - offset
    harness_window = (_cpu_at(samples, r1) - _cpu_at(samples, r0)) / (r1 - r0) * 100
    pairs = [((_cpu_at(samples, b) - _cpu_at(samples, a)) / (b - a) * 100, pct) for a, b, pct in readings]
    h_mean = sum(p[0] for p in pairs) / len(pairs)
    d_mean = sum(p[1] for p in pairs) / len(pairs)
    # docker's denominator is the host's /proc/stat time (clock ticks), which on
    # a busy VM runs a little slow against the wall clock (lost ticks): its CPU %
    # then reads high by that factor. The harness divides by monotonic time.
    tick_clock = (cpu1["system_cpu_usage"] - cpu0["system_cpu_usage"]) / 1e9 / online / (r1 - r0)
    return {"harness_window_cpu_pct": harness_window, "docker_window_cpu_pct": docker_window,
            "cpu_dev_window": abs(harness_window - docker_window) / docker_window,
            "harness_cpu_pct_at_readings": h_mean, "docker_stats_cpu_pct": d_mean,
            "cpu_dev_stats": abs(h_mean - d_mean) / d_mean, "readings": len(pairs),
            "docker_tick_clock_vs_wall": tick_clock,
            "cpu_dev_window_wall_clock": abs(harness_window - docker_window * tick_clock) / (docker_window * tick_clock),
            "cpu_dev_stats_wall_clock": abs(h_mean - d_mean * tick_clock) / (d_mean * tick_clock),
            "reading_pairs": [(round(a, 2), round(b, 2)) for a, b in pairs],
            "mem_max_dev": max(abs(h_ - d) / d for h_, d in mem_pairs), "mem_mb": mem_pairs[-1][1] / 1e6,
            "pss_dev": abs(pss_h - pss_p) / pss_p, "pss_mb": pss_h / 1e6, "memory_kind": h.memory_kind}


def _report(name: str, res: dict) -> None:
    print(f"\n{name}: " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()
                                      if k != "docker_stats_samples"}))
    out = os.environ.get("LANGBENCH_AGREEMENT_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"test": name, **res}) + "\n")


def _assert_agree(res: dict) -> None:
    """Within 5% of what docker stats shows. Where docker's tick clock itself
    ran slow against the wall clock, its figure is off by that much too: the
    5% then hold against docker's figure on the wall clock, and the raw
    difference may exceed 5% by no more than the clock's error."""
    clock_err = abs(1 - res["docker_tick_clock_vs_wall"])
    assert res["cpu_dev_window_wall_clock"] < 0.05, res
    assert res["cpu_dev_stats_wall_clock"] < 0.05, res
    assert res["cpu_dev_window"] < 0.05 + clock_err, res
    assert res["cpu_dev_stats"] < 0.05 + clock_err, res
    assert res["mem_max_dev"] < 0.05, res
    assert res["memory_kind"] == "pss" and res["pss_dev"] < 0.05 and res["pss_mb"] > 0, res


def test_agreement_with_docker_stats_busy_loop(busy, rt, tmp_path):
    impl, sc, _, _ = busy
    h = rt.start(spec(impl, sc, tmp_path / "agree.log"))
    try:
        time.sleep(1.5)
        res = _agreement(h, h.container)
    finally:
        h.stop(grace_s=5)
    _report("busy loop, quota 0.5", res)
    _assert_agree(res)


def test_agreement_with_docker_stats_go_server_under_ghz(rt, dclient, tmp_path):
    assert GHZ.exists(), "tools/bin/ghz missing: run ./setup.sh"
    cat = discover(ROOT)
    sc = cat.scenario("notes-grpc")
    impl = next(i for i in cat.implementations["notes-grpc"] if i.name == "go")
    b = builder.build(impl, sc, ROOT / ".langbench" / "build-cache", tmp_path / "build.log",
                      {"impl_dir": str(impl.dir), "scenario_dir": str(sc.dir), "python": sys.executable,
                       "cpus": "1", "host": "127.0.0.1"})
    assert b.ok, b.error
    rt.prepare(impl, sc, tmp_path)
    port = rt.free_port("server")
    h = rt.start(spec(impl, sc, tmp_path / "go.log", port=port))
    ghz = None
    try:
        wait_ready(sc.readiness, "127.0.0.1", port, h.alive, lambda: h.log_tail(), h.started_at)
        ghz = subprocess.Popen(
            [str(GHZ), "--insecure", "--proto", str(sc.dir / "notes.proto"),
             "--call", "notes.Noticeboard.GetNoteByTitle", "--data-file", str(sc.dir / "data" / "titles.json"),
             "--concurrency", "16", "--connections", "4", "--duration", "16s", "--format", "json",
             f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, {0}))
        time.sleep(2.0)
        res = _agreement(h, h.container)
        assert ghz.poll() is None, "ghz ended before the window did"
    finally:
        if ghz is not None:
            ghz.kill()
            ghz.wait()
        h.stop(grace_s=5)
    _report("go server under ghz c16, quota 0.5", res)
    assert res["harness_window_cpu_pct"] > 10, res     # it was under load
    _assert_agree(res)


# ------------------------------------------------------------------ a real run: Ctrl-C, SIGKILL, next run

LANGBENCH = [sys.executable, "-m", "harness.cli", "--root", str(ROOT)]


def _start_run(out: Path) -> subprocess.Popen:
    return subprocess.Popen([*LANGBENCH, "run", "notes-grpc", "--impl", "go", "--runtime", "docker",
                             "--profile", "quick", "--no-interop", "--no-report", "--no-calibrate",
                             "--workload", "unary", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for_container(dclient, proc, timeout=300) -> str:
    """The run id of the harness's container once it is running and measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-2000:]
        for c in containers_of(dclient):
            if c.labels.get(docker_rt.OWNER_LABEL, "").startswith(f"{proc.pid}:") and c.status == "running":
                return c.labels[RUN_LABEL]
        time.sleep(0.2)
    raise AssertionError("no container appeared")


def test_ctrl_c_removes_the_container(dclient, tmp_path):
    proc = _start_run(tmp_path / "run")
    try:
        run_id = _wait_for_container(dclient, proc)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-2000:]
    assert containers_of(dclient, run_id) == []


def test_a_killed_run_leaves_a_container_the_next_run_removes(dclient, tmp_path):
    proc = _start_run(tmp_path / "killed")
    try:
        run_id = _wait_for_container(dclient, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)      # the harness and its load tool, no cleanup possible
        proc.communicate(timeout=30)
    assert len(containers_of(dclient, run_id)) == 1        # the leftover
    nxt = subprocess.run([*LANGBENCH, "run", "notes-grpc", "--impl", "go", "--runtime", "docker",
                          "--profile", "quick", "--duration", "2", "--warmup", "1", "--no-interop", "--no-report",
                          "--no-calibrate", "--workload", "unary", "--out", str(tmp_path / "next")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert containers_of(dclient, run_id) == [], nxt.stderr[-2000:]
    assert "removed leftover of a killed run: container" in nxt.stderr
    events = json.loads((tmp_path / "next" / "results.json").read_text())["events"]
    assert any(run_id in e["message"] for e in events)
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    assert containers_of(dclient) == [] or all(
        docker_rt._owner_alive(c.labels.get(docker_rt.OWNER_LABEL, "")) for c in containers_of(dclient))


def test_cgroup_pss_sums_the_processes_of_the_cgroup(tmp_path):
    """A container's memory is the PSS of the processes in its cgroup, read
    on the host, the same figure as the process runtime's."""
    import os
    import subprocess
    import sys

    import psutil

    from harness.runtimes.docker import pss_of_rollup
    d = tmp_path / "cg"
    d.mkdir()
    (d / "cpu.stat").write_text("usage_usec 1\n")
    (d / "memory.current").write_text("1\n")
    (d / "memory.stat").write_text("anon 1\nfile_mapped 1\n")
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(30_000_000); time.sleep(30)"])
    try:
        import time
        time.sleep(0.5)
        (d / "cgroup.procs").write_text(f"{os.getpid()}\n{child.pid}\n")
        cg = CgroupFiles(2, d / "cpu.stat", d / "memory.current", d / "memory.stat")
        got = cg.pss_bytes()
        want = psutil.Process(os.getpid()).memory_full_info().pss + psutil.Process(child.pid).memory_full_info().pss
        assert abs(got - want) < 0.05 * want and got > 30_000_000
        # a process gone between the two reads is skipped; an empty cgroup is an error
        (d / "cgroup.procs").write_text(f"{child.pid}\n{2 ** 22 + 7}\n")
        assert cg.pss_bytes() > 30_000_000
        (d / "cgroup.procs").write_text("")
        with pytest.raises(OSError):
            cg.pss_bytes()
    finally:
        child.kill()
        child.wait()
    assert pss_of_rollup("Rss: 10 kB\nPss: 7 kB\n") == 7 * 1024
    with pytest.raises(OSError):
        pss_of_rollup("Rss: 10 kB\n")
