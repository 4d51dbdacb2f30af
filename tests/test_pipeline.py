"""pipeline without nodes: the digest against README's vectors, the ledger
check's counts (lost, duplicated, wrong digest, torn tail, what it hashes
again), and the recovery time the harness computes for a level with a fault
(the real pipelines run in tests/e2e/test_pipeline.py)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness import bodies
from harness.recovery import metrics, recovery

CHECK = Path(__file__).resolve().parents[1] / "scenarios" / "pipeline" / "check.py"
ROUNDS = 100


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("pipeline_check", CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_digest_matches_the_readme_vectors(check):
    readme = (CHECK.parent / "README.md").read_text()
    for (op_id, payload), want in check.VECTORS.items():
        assert check.digest(op_id, payload, ROUNDS) == want
        assert f"`{op_id}`" in readme and want in readme
    # the transform is chained: 3 x ROUNDS rounds over id '\n' payload
    assert check.digest("x", b"y", 2) == check.transform(b"x\ny", 6).hex()
    assert check.digest("x", b"y", 2) != check.digest("x", b"z", 2)


def _ledger_run(check, tmp_path, lines: list[str], acked: list[str], live=False, tail=""):
    inst = tmp_path / "inst"
    (inst / "acked").mkdir(parents=True, exist_ok=True)
    (inst / "acked" / "n1.txt").write_text("".join(a + "\n" for a in acked))
    ledger = inst / "ledger.txt"
    ledger.write_text("".join(ln + "\n" for ln in lines) + tail)
    args = ["ledger", "--instance-dir", str(inst), "--ledger", str(ledger), "--rounds", "2", "--body-bytes", "64"]
    return inst, args + (["--live"] if live else [])


def _verdict(check, capsys, args):
    code = check.main(args)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return code, out, {k: v["value"] for k, v in out["metrics"].items()}


def _line(check, op_id, good=True):
    d = check.digest(op_id, bodies.body_for(op_id, 64), 2)
    return f"{op_id} {d if good else 'f' * 64}"


def test_ledger_check_counts_lost_duplicated_and_wrong(check, tmp_path, capsys):
    ids = [f"ab12-0-{n}" for n in range(1, 6)]
    lines = [_line(check, i) for i in ids] + [_line(check, ids[1]), _line(check, "ab12-1-1", good=False),
                                              "op-1 " + "0" * 64]
    inst, args = _ledger_run(check, tmp_path, lines, ids + ["ab12-9-9"])
    code, out, met = _verdict(check, capsys, args)
    assert code == 1 and not out["ok"]
    assert met == {"acked": 6, "lost": 1, "duplicated": 1, "wrong_digest": 1, "unacked_committed": 1}
    # nothing is remembered as verified while a digest is wrong
    assert not (inst / check.STATE_FILE).exists()


def test_ledger_check_passes_and_hashes_each_line_once(check, tmp_path, capsys):
    ids = [f"cd34-{c}-{n}" for c in range(2) for n in range(1, 4)]
    inst, args = _ledger_run(check, tmp_path, [_line(check, i) for i in ids], ids[:4])
    code, out, met = _verdict(check, capsys, args)
    assert code == 0 and out["ok"], out
    assert met["lost"] == met["duplicated"] == met["wrong_digest"] == 0 and met["unacked_committed"] == 2
    assert "6 new lines" in next(c["detail"] for c in out["checks"] if "digest" in c["name"])
    with open(inst / "ledger.txt", "a") as f:
        f.write(_line(check, "cd34-3-1") + "\n")
    code, out, _ = _verdict(check, capsys, args)
    assert code == 0 and "1 new lines" in next(c["detail"] for c in out["checks"] if "digest" in c["name"])


def test_a_torn_tail_is_an_append_in_progress_only_while_live(check, tmp_path, capsys):
    ids = ["ef56-0-1", "ef56-0-2"]
    half = _line(check, "ef56-0-3")[:20]
    _, args = _ledger_run(check, tmp_path, [_line(check, i) for i in ids], ids, live=True, tail=half)
    assert _verdict(check, capsys, args)[0] == 0
    code, out, _ = _verdict(check, capsys, [a for a in args if a != "--live"])
    assert code == 1 and "20 bytes after the last newline" in out["detail"]
    # a malformed complete line fails either way
    _, args = _ledger_run(check, tmp_path, [_line(check, i) for i in ids] + ["ef56-0-3 nothex"], ids, live=True)
    code, out, _ = _verdict(check, capsys, args)
    assert code == 1 and "1 malformed" in out["detail"]


def test_no_ledger_and_nothing_acknowledged_is_fine_but_acks_without_ledger_are_lost(check, tmp_path, capsys):
    inst = tmp_path / "empty"
    inst.mkdir()
    args = ["ledger", "--instance-dir", str(inst), "--ledger", str(inst / "ledger.txt"), "--rounds", "2",
            "--body-bytes", "64"]
    assert _verdict(check, capsys, args)[0] == 0
    (inst / "acked").mkdir()
    (inst / "acked" / "x.txt").write_text("aa-0-1\n")
    code, _, met = _verdict(check, capsys, args)
    assert code == 1 and met["lost"] == 1


def _events(t0, fault, back, action="stop"):
    return [{"action": action, "target": "b", "t": t0 + fault, "ok": True},
            {"action": "start", "target": "b", "t": t0 + back, "ok": True}]


def test_recovery_is_the_end_of_the_first_bin_back_at_rate():
    # 500/s, B down from 4.0 s, started at 6.0 s, 300 in bin 6, back at bin 7
    secs = [480, 500, 500, 500, 200, 0, 300, 495, 500, 500]
    rec = recovery(secs, 100.0, _events(100.0, 4.0, 6.0), 10.0)
    assert rec["baseline_per_s"] == 500.0 and rec["bin"] == 7 and rec["recovery_s"] == 2.0
    assert metrics(rec)["recovery_s"]["value"] == 2.0
    # a backlog flushed in the restart's own second counts: bin 6, 0.6 s after a restart at 6.4 s
    rec = recovery([500] * 4 + [0, 0, 900, 500, 500, 500], 0.0, _events(0.0, 4.0, 6.4), 10.0)
    assert rec["bin"] == 6 and rec["recovery_s"] == pytest.approx(0.6)


def test_recovery_none_when_not_back_or_no_fault():
    rec = recovery([500] * 4 + [0] * 6, 0.0, _events(0.0, 4.0, 6.0, "kill"), 10.0)
    assert rec["recovery_s"] is None and metrics(rec) == {}
    assert recovery([500] * 10, 0.0, [], 10.0) is None
    # a restart that failed, or one after the window, gives no figure
    failed = _events(0.0, 4.0, 6.0)
    failed[1]["ok"] = False
    assert recovery([500] * 10, 0.0, failed, 10.0) is None
    assert recovery([500] * 10, 0.0, _events(0.0, 4.0, 11.0), 10.0) is None
