"""End to end in containers: notes-grpc with the docker runtime, every language.

Needs a Docker daemon and the local base images (./setup.sh provides both on
Debian as root; CI runs it). Not skipped without a daemon: it fails, saying so.
"""
from __future__ import annotations


import pytest

from harness import results
from harness.manifest import discover

from ..conftest import ROOT, quick_run

pytestmark = pytest.mark.e2e
EXPECTED = {"python", "go", "rust", "scala"}


@pytest.fixture(scope="module")
def docker_run(tmp_path_factory, dclient):
    # the load tools' ceilings do not depend on the runtime (their null servers
    # run as native processes): measured in the process-runtime test only
    return quick_run(tmp_path_factory, "notes-grpc", "docker", "--no-calibrate")


def test_every_language_verified_and_measured_in_containers(docker_run):
    proc, out = docker_run
    data = results.load(out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert data["status"] == "complete"
    assert data["runtime"] == "docker"
    assert data["runtime_info"]["selected"] == "--runtime docker"
    found = {i.language for i in discover(ROOT).implementations["notes-grpc"]}
    assert found == EXPECTED, f"notes-grpc implementations on disk: {sorted(found)}"
    impls = data["implementations"]
    assert {v["language"] for v in impls.values()} == found
    for iid, rec in impls.items():
        assert rec["status"] == "ok", (iid, rec.get("failure"))
        img = rec["image"]
        assert img["id"].startswith("sha256:") and img["size_mb"] > 1, (iid, img)
        assert img["tag"].startswith(f"langbench/notes-grpc-{rec['name']}:")
        assert img["base"]["ref"], img
    bases = {rec["language"]: rec["image"]["base"]["ref"] for rec in impls.values()}
    assert bases["go"] == "scratch"
    for inst in data["instances"]:
        rt = inst["runtime"]
        assert rt["container_id"] and rt["cpus"] == data["cpu_layout"]["server"]
        assert rt["network_mode"] == "host"
        assert rt["cpu_accounting"].startswith("cgroup file"), rt
        assert inst["verify"]["ok"], inst["verify"]
        assert inst["startup_ms"] > 0
        assert inst["shutdown"]["exit_code"] == 0, (inst["key"], inst["shutdown"])
        assert inst["idle"]["rss_mb"] > 0
        assert len(inst["timeseries"]["cpu_cores"]) > 10
    rows = results.flat_rows(data)
    assert len(rows) == len(found) * 2 * 3
    for r in rows:
        assert r["runtime"] == "docker"
        assert r["ok"] and r["verified"], r
        assert r["image_mb"] and r["image_mb"] > 1, r
        assert r["rps"] > 0 and r["cpu_cores"] > 0 and r["rss_mb"] > 0


def test_interop_in_containers(docker_run):
    _, out = docker_run
    cells = results.load(out)["interop"]["notes-grpc"]
    n = len({c["server"] for c in cells})
    assert len(cells) == n * n
    bad = [c for c in cells if not c["ok"]]
    assert not bad, bad


def test_report_has_the_image_sizes_and_bases(docker_run, tmp_path):
    _, out = docker_run
    from harness.report import _fmt, write_report
    html = write_report(out / "results.json", tmp_path / "r.html").read_text()
    assert "image base" in html and "memory under load" in html      # the hackday comparison table
    data = results.load(out)
    for rec in data["implementations"].values():
        assert f"<td>{_fmt(rec['image']['size_mb'])}</td>" in html
        assert rec["image"]["base"]["ref"] in html


def test_no_container_is_left(docker_run, dclient):
    _, out = docker_run
    run_id = results.load(out)["run_id"]
    assert dclient.containers.list(all=True, filters={"label": f"langbench.run={run_id}"}) == []
