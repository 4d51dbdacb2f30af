"""events-kafka's check.py without a broker: reasons, the state the steps
share, the late-event decision, and the broker-down and recovery steps with
the HTTP calls and the topic replaced (the real check runs in tests/e2e)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[1] / "scenarios" / "events-kafka" / "check.py"


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("events_kafka_check", CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sent(check, reason, step, status, at="2026-11-25T10:00:00.000Z", took=5.1, error=None):
    return check.sent_record(reason, step, status, at, took, error)


def event(check, offset, reason, ts=None):
    return check.event_record(offset, json.dumps({"id": 1, "reason": reason}).encode(), ts)


def verdicts(checks):
    return {name: (ok, detail) for name, ok, detail in checks}


def test_reasons_are_distinct_and_derivable_from_the_instance(check):
    base = check.nonce_base("go-t1-abc123")
    assert base == check.nonce_base("go-t1-abc123") == "lb-go-t1-abc123"
    reasons = [check.reason_for(base, step, i) for step in ("down", "back") for i in range(3)]
    assert len(set(reasons)) == 6 and all(r.startswith(base + "-") for r in reasons)
    assert check.nonce_base(None) != check.nonce_base(None)     # random without an instance


def test_wait_is_past_the_delivery_timeout(check):
    assert check.LATE_EVENT_WAIT_S > check.DELIVERY_TIMEOUT_S == 5.0


def test_clean_run_passes(check):
    base = "lb-x"
    s = [sent(check, f"{base}-down-0", "broker-down", 503), sent(check, f"{base}-down-1", "broker-down", 503),
         sent(check, f"{base}-back-0", "recovery", 503), sent(check, f"{base}-back-1", "recovery", 200, took=0.01)]
    v = verdicts(check.judge_delivery(s, [event(check, 7, f"{base}-back-1")], base, strict=True))
    assert v == {"no late events": (True, "none of the 3 requests answered other than 200 has an event in the topic"),
                 "one event per 200 answer": (True, "1 answer(s) 200, each with exactly one event")}


def test_late_event_of_a_503_fails_with_one_clear_detail(check):
    base = "lb-scala-t1-0f0f0f"
    s = [sent(check, f"{base}-down-0", "broker-down", 503, at="2026-11-25T10:00:05.100Z", took=5.0),
         sent(check, f"{base}-down-1", "broker-down", 503),
         sent(check, f"{base}-back-0", "recovery", 200, took=0.02)]
    events = [event(check, 4, f"{base}-down-0", ts=1795600830000), event(check, 5, f"{base}-back-0")]
    v = verdicts(check.judge_delivery(s, events, base, strict=True))
    ok, detail = v["no late events"]
    assert not ok
    assert detail == (f"late event: reason {base}-down-0 was answered 503 at 2026-11-25T10:00:05.100Z after 5.0 s "
                      f"(step broker-down) and reached the topic (offset 4, written 2026-11-25T10:00:30.000Z)")
    assert v["one event per 200 answer"][0]


def test_never_answered_request_with_an_event_is_late_too(check):
    base = "lb-y"
    s = [sent(check, f"{base}-back-0", "recovery", None, took=15.0, error="timed out"),
         sent(check, f"{base}-back-1", "recovery", 200)]
    events = [event(check, 0, f"{base}-back-0"), event(check, 1, f"{base}-back-1")]
    ok, detail = verdicts(check.judge_delivery(s, events, base, strict=False))["no late events"]
    assert not ok and "was never answered (timed out)" in detail and "step recovery" in detail


def test_several_late_events_are_counted_in_the_same_detail(check):
    base = "lb-z"
    s = [sent(check, f"{base}-down-{i}", "broker-down", 503) for i in range(2)]
    s += [sent(check, f"{base}-back-{i}", "recovery", 503) for i in range(4)] + [sent(check, f"{base}-back-4", "recovery", 200)]
    events = [event(check, i, r["reason"]) for i, r in enumerate(s)]
    ok, detail = verdicts(check.judge_delivery(s, events, base, strict=True))["no late events"]
    assert not ok and detail.startswith(f"late event: reason {base}-down-0 ") and "; 5 more late event(s): " in detail


def test_derived_broker_down_records_when_its_record_is_missing(check):
    base = "lb-w"
    down = check.down_records(base, {})
    assert [d["reason"] for d in down] == [f"{base}-down-{i}" for i in range(check.BROKER_DOWN_ATTEMPTS)]
    s = down + [sent(check, f"{base}-back-0", "recovery", 200)]
    ok, detail = verdicts(check.judge_delivery(s, [event(check, 9, f"{base}-down-1"),
                                                    event(check, 10, f"{base}-back-0")], base, strict=False))["no late events"]
    assert not ok and "answered other than 200" in detail and f"{base}-down-1" in detail


@pytest.mark.parametrize("n_events", [0, 2])
def test_a_200_needs_exactly_one_event(check, n_events):
    base = "lb-v"
    s = [sent(check, f"{base}-back-0", "recovery", 200)]
    events = [event(check, i, f"{base}-back-0") for i in range(n_events)]
    ok, detail = verdicts(check.judge_delivery(s, events, base, strict=True))["one event per 200 answer"]
    assert not ok and detail == f"reason {base}-back-0 was answered 200 (step recovery) and has {n_events} events in the topic"


def test_unexpected_events(check):
    base = "lb-u"
    s = [sent(check, f"{base}-back-0", "recovery", 200)]
    events = [event(check, 3, "readiness probe"), event(check, 4, f"{base}-back-0"),
              check.event_record(5, b"not json")]
    strict = verdicts(check.judge_delivery(s, events, base, strict=True))
    ok, detail = strict["no unexpected events"]
    assert not ok and detail.startswith("event at offset 3 with reason 'readiness probe' matches no request") \
        and detail.endswith("; 1 more")
    # Read from the topic's start (no offset noted): earlier steps' events are not this check's.
    assert "no unexpected events" not in verdicts(check.judge_delivery(s, events, base, strict=False))
    # ...but an unknown reason with this run's prefix is.
    loose = verdicts(check.judge_delivery(s, events + [event(check, 6, f"{base}-back-7")], base, strict=False))
    assert not loose["no unexpected events"][0]


def test_state_round_trip(check, tmp_path):
    assert check.load_state("i-1", tmp_path) == {}
    check.save_state("i-1", {"offset": 4}, tmp_path)
    assert check.load_state("i-1", tmp_path) == {"offset": 4}
    check.save_state(None, {"offset": 5}, tmp_path)           # no instance: nothing kept
    check.drop_state("i-1", tmp_path)
    assert check.load_state("i-1", tmp_path) == {} and list(tmp_path.iterdir()) == []
    assert check.state_path("a/../b", tmp_path).parent == tmp_path


class FakeServer:
    """Answers POSTs from a script of statuses and records what was sent."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.reasons = []

    def post(self, target, path, body, timeout=10.0):
        self.reasons.append(json.loads(body)["reason"])
        status = self.statuses.pop(0)
        return status, b"" if status else b"timed out", 0.01 if status == 200 else 5.0


def run_steps(check, monkeypatch, tmp_path, capsys, down, back, topic_reasons, offset=4):
    """broker-down then recovery for instance "inst", the topic holding
    topic_reasons from `offset` on; returns both verdicts."""
    monkeypatch.setattr(check, "STATE_DIR", tmp_path)
    monkeypatch.setattr(check.time, "sleep", lambda s: None)
    check.save_state("inst", {"offset": offset})               # what the status cases step notes
    srv = FakeServer(down + back)
    monkeypatch.setattr(check, "post", srv.post)
    reads = []

    def read_events(bootstrap, topic, start, timeout_s=30.0):
        reads.append(start)
        evs = [event(check, offset + i, r) for i, r in enumerate(topic_reasons(srv.reasons))]
        return offset, offset + len(evs), evs

    monkeypatch.setattr(check, "read_events", read_events)
    rc1 = check.main(["broker-down", "--target", "127.0.0.1:1", "--instance", "inst"])
    v1 = json.loads(capsys.readouterr().out)
    rc2 = check.main(["recovery", "--target", "127.0.0.1:1", "--bootstrap", "127.0.0.1:2", "--topic", "t",
                      "--instance", "inst"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1                                       # one JSON verdict
    assert reads == [offset] and list(tmp_path.iterdir()) == []
    return (rc1, v1), (rc2, json.loads(out[0])), srv


def test_recovery_step_passes_for_a_correct_server(check, monkeypatch, tmp_path, capsys):
    (rc1, v1), (rc2, v2), srv = run_steps(check, monkeypatch, tmp_path, capsys, [503, 503], [503, 200],
                                          lambda sent: [sent[-1]])
    assert rc1 == 0 and v1["ok"] and v1["produced"] == 0
    assert rc2 == 0 and v2["ok"] and v2["produced"] == 1, v2
    assert srv.reasons == ["lb-inst-down-0", "lb-inst-down-1", "lb-inst-back-0", "lb-inst-back-1"]


def test_recovery_step_fails_on_a_phantom_event(check, monkeypatch, tmp_path, capsys):
    """The Scala case: 503 while the broker is down, record delivered later."""
    (rc1, v1), (rc2, v2), _ = run_steps(check, monkeypatch, tmp_path, capsys, [503, 503], [200],
                                        lambda sent: [sent[1], sent[2]])
    assert rc1 == 0 and v1["ok"]
    assert rc2 == 1 and not v2["ok"] and v2["produced"] == 1
    failed = [c for c in v2["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["no late events"]
    assert failed[0]["detail"].startswith("late event: reason lb-inst-down-1 was answered 503 at ")
    assert "(step broker-down) and reached the topic (offset 4" in failed[0]["detail"]
    print(failed[0]["detail"])


def test_broker_down_counts_a_wrong_200_and_keeps_no_state(check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(check, "STATE_DIR", tmp_path)
    monkeypatch.setattr(check, "post", FakeServer([200, 503]).post)
    assert check.main(["broker-down", "--target", "127.0.0.1:1", "--instance", "inst2"]) == 1
    v = json.loads(capsys.readouterr().out)
    assert not v["ok"] and v["produced"] == 1 and list(tmp_path.iterdir()) == []
