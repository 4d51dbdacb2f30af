"""End to end in containers: events-kafka with the docker runtime, every
language, the Kafka broker itself in a container of its own image.

Needs a Docker daemon and the local base images (./setup.sh provides both);
not skipped without them: it fails, saying so.
"""
from __future__ import annotations


import pytest

from harness import results

from ..conftest import quick_run

pytestmark = pytest.mark.e2e
LANGS = {"python", "go", "rust", "scala"}


@pytest.fixture(scope="module")
def kafka_docker_run(tmp_path_factory, dclient):
    # the load tools' ceilings do not depend on the runtime (their null servers
    # run as native processes): measured in the process-runtime test only
    return quick_run(tmp_path_factory, "events-kafka", "docker", "--no-calibrate")


def test_broker_runs_in_its_own_container(kafka_docker_run, dclient):
    proc, out = kafka_docker_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = results.load(out)
    svc = data["services"]["events-kafka"]["kafka"]
    assert svc["runtime"] == "docker", svc
    img = svc["image"]
    assert img["tag"].startswith("langbench/svc-events-kafka-kafka:") and img["size_mb"] > 50, img
    assert img["base"]["ref"] == "langbench/base-java:bookworm"
    ctr = svc["container"]
    assert ctr["network_mode"] == "host" and ctr["cpus"] == data["cpu_layout"]["client"], ctr
    assert not set(ctr["cpus"]) & set(data["cpu_layout"]["server"])
    assert ctr["cpu_accounting"].startswith("cgroup file"), ctr
    assert svc["restarts"] == len(data["instances"])       # stopped and restarted for "broker stopped"
    # The broker container's own log came back through the SDK.
    assert (out / "logs" / "service-events-kafka-kafka.log").stat().st_size > 0


def test_every_language_verified_with_exact_event_counts_in_containers(kafka_docker_run):
    proc, out = kafka_docker_run
    data = results.load(out)
    impls = data["implementations"]
    assert {v["language"] for v in impls.values()} == LANGS
    for iid, rec in impls.items():
        assert rec["status"] == "ok", (iid, rec.get("failure"))
        assert rec["image"]["size_mb"] > 1
    for inst in data["instances"]:
        assert inst["runtime"]["container_id"], inst["runtime"]
        assert inst["verify"]["ok"], inst["verify"]
        assert [s["name"] for s in inst["verify"]["steps"]] == ["status cases", "broker stopped", "broker back"]
        assert inst["idle"]["services"]["kafka"]["rss_mb"] > 50
    for m in data["measurements"]:
        assert m["ok"], m["error"]
        assert m["after_load"]["ok"], m["after_load"]["detail"]
        assert m["load"]["ok_count"] > 0
        assert m["services"]["kafka"]["cpu_s"] > 0
    rows = results.flat_rows(data)
    assert rows and all(r["runtime"] == "docker" and r["image_mb"] > 1 and r["services_rss_mb"] > 0 for r in rows)


def test_report_names_the_broker_image(kafka_docker_run, tmp_path):
    _, out = kafka_docker_run
    from harness.report import write_report
    html = write_report(out / "results.json", tmp_path / "r.html").read_text()
    tag = results.load(out)["services"]["events-kafka"]["kafka"]["image"]["tag"]
    assert f"a container of image <code>{tag}</code>" in html


def test_no_container_is_left(kafka_docker_run, dclient):
    _, out = kafka_docker_run
    run_id = results.load(out)["run_id"]
    assert dclient.containers.list(all=True, filters={"label": f"langbench.run={run_id}"}) == []
