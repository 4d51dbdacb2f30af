"""End to end: events-kafka with a real Kafka broker, wrk, all four languages."""
from __future__ import annotations


import pytest

from harness import results

from ..conftest import langbench_processes, quick_run, run_cli

pytestmark = pytest.mark.e2e
LANGS = {"python", "go", "rust", "scala"}


@pytest.fixture(scope="module")
def kafka_run(tmp_path_factory):
    return quick_run(tmp_path_factory, "events-kafka", "process")


def test_every_language_verified_with_exact_event_counts(kafka_run):
    proc, out = kafka_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = results.load(out)
    assert {v["language"] for v in data["implementations"].values()} == LANGS
    assert all(v["status"] == "ok" for v in data["implementations"].values())
    for inst in data["instances"]:
        names = [s["name"] for s in inst["verify"]["steps"]]
        assert names == ["status cases", "broker stopped", "broker back"] and inst["verify"]["ok"]
        assert inst["idle"]["services"]["kafka"]["rss_mb"] > 50
    for m in data["measurements"]:
        assert m["ok"], m["error"]
        check = m["after_load"]
        assert check["ok"], check["detail"]
        count = next(c for c in check["checks"] if c["name"] == "count")
        assert count["ok"] and "events in the topic" in count["detail"]
        assert m["load"]["ok_count"] > 0 and m["load"]["cut_off"] == 0
        assert m["services"]["kafka"]["cpu_s"] >= 0
    assert data["services"]["events-kafka"]["kafka"]["restarts"] == len(data["instances"])
    rows = results.flat_rows(data)
    assert all(r["services_rss_mb"] > 0 for r in rows)


def test_report_has_the_hackday_table(kafka_run):
    _, out = kafka_run
    html = (out.parent / "report.html")
    assert run_cli("report", str(out), "-o", str(html)).returncode == 0
    text = html.read_text()
    assert "The original comparison, measured" in text and "services memory idle" in text
    for lang in LANGS:
        assert f"<b>{lang}</b>" in text


def test_broker_and_servers_are_gone(kafka_run):
    assert langbench_processes() == []
