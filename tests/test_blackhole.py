"""blackhole's tooling (scenarios/blackhole/blackhole.py): the reference
reader, the body derivation, the after-stop check, replay's target rule, the
generated code's freshness, and the harness's server modes and files interop
declarations. Records are written here with the FlatBuffers builder and
python-lz4, as a Python server would."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import lz4.frame
import pytest

ROOT = Path(__file__).resolve().parents[1]
BH = ROOT / "scenarios" / "blackhole"
sys.path.insert(0, str(BH))
sys.path.insert(0, str(BH / "gen" / "python"))

import blackhole  # noqa: E402
from harness import bodies  # noqa: E402
import flatbuffers  # noqa: E402
from fbr import Request as R  # noqa: E402


def record(rid: str, method="POST", uri="/", headers="", body=b"", with_id=True) -> bytes:
    b = flatbuffers.Builder(len(body) + 256)
    i = b.CreateString(rid) if with_id else None
    m, u, h = b.CreateString(method), b.CreateString(uri), b.CreateString(headers)
    bo = b.CreateByteVector(body)
    R.RequestStart(b)
    if i is not None:
        R.RequestAddId(b, i)
    R.RequestAddMethod(b, m)
    R.RequestAddUri(b, u)
    R.RequestAddHeaders(b, h)
    R.RequestAddBody(b, bo)
    b.Finish(R.RequestEnd(b))
    out = bytes(b.Output())
    return struct.pack("<Q", len(out)) + out


def load_record(nonce: str, tid: int, n: int) -> bytes:
    rid = f"{nonce}-{tid}-{n}"
    return record(rid, "POST", f"/bh/{tid}/{n}", f"Host: x\r\nX-Request-ID: {rid}\r\nContent-Length: 2048\r\n",
                  blackhole.body_for(rid, 2048))


def write(path: Path, recs: list[bytes], frames: int = 1) -> None:
    step = max(1, len(recs) // frames)
    parts = [recs[i:i + step] for i in range(0, len(recs), step)]
    path.write_bytes(b"".join(lz4.frame.compress(b"".join(p)) for p in parts))


def read(folder: Path) -> dict:
    return blackhole.read_dir(folder)


def test_body_is_derived_from_the_id():
    a = blackhole.body_for("abc-0-1", 2048)
    assert len(a) == 2048 and a.startswith(b"abc-0-1:")
    assert blackhole.body_for("abc-0-1", 2048) == a                # regenerated identically
    assert blackhole.body_for("abc-0-2", 2048)[8:] != a[8:]        # another offset
    assert blackhole.body_for("abc-1-1", 2048)[8:] != a[8:]
    big = blackhole.body_for("v-0-7", blackhole.MAX_BODY)          # larger than the pool's slice: wraps
    assert len(big) == blackhole.MAX_BODY
    # the pool: xorshift32 (13, 17, 5) from the seed, little-endian words
    x, m = bodies.POOL_SEED, 0xFFFFFFFF
    x ^= (x << 13) & m
    x ^= x >> 17
    x ^= (x << 5) & m
    assert bodies.pool()[:4] == struct.pack("<I", x)
    assert len(bodies.pool()) == 4 << 20


def test_reader_counts_digests_and_takes_concatenated_frames(tmp_path):
    recs = [load_record("n1", 0, k) for k in range(300)]
    write(tmp_path / "bh-1-a-0-000001.lz4", recs[:100], frames=1)
    write(tmp_path / "bh-1-a-0-000002.lz4", recs[100:], frames=4)       # four frames back to back
    s = read(tmp_path)
    assert s["ok"] and s["files"] == 2 and s["tmp_files"] == 0 and s["records"] == 300
    assert s["stream_bytes"] == sum(len(r) for r in recs)
    assert s["file_bytes"] == sum(p.stat().st_size for p in tmp_path.iterdir())
    # the digest is defined over the fields, not the frames: one file with one
    # frame in another folder gives the same
    other = tmp_path / "o"
    other.mkdir()
    write(other / "a.lz4", recs[:100])
    write(other / "b.lz4", recs[100:], frames=1)
    assert read(other)["digest"] == s["digest"]
    # and it is the documented one
    import hashlib
    h = hashlib.sha256()
    for r in recs:
        for f in blackhole.decode(r[8:]):
            h.update(struct.pack("<I", len(f)) + f)
    assert s["digest"] == h.hexdigest()


def test_decoder_agrees_with_the_generated_code_and_rejects_garbage():
    r = record("id-1", "PURGE", "/a?b=%20", "A: b\r\n", bytes(range(256)))[8:]
    assert blackhole.decode(r) == blackhole.decode_generated(r) == (
        b"id-1", b"PURGE", b"/a?b=%20", b"A: b\r\n", bytes(range(256)))
    empty = record("id-2")[8:]
    assert blackhole.decode(empty)[4] == b""
    with pytest.raises(blackhole.FormatError, match="without an id"):
        blackhole.decode(record("", with_id=False)[8:])
    for bad in (b"\x00" * 4, b"\xff\xff\xff\x7f" + b"\x00" * 12, r[:20]):
        with pytest.raises((blackhole.FormatError, struct.error)):
            blackhole.decode(bad)


def test_truncated_tmp_is_read_up_to_the_last_record_but_a_truncated_final_file_fails(tmp_path):
    recs = [load_record("n2", 0, k) for k in range(200)]
    data = lz4.frame.compress(b"".join(recs), block_size=lz4.frame.BLOCKSIZE_MAX64KB)
    (tmp_path / "x.lz4.tmp").write_bytes(data[: len(data) // 2])
    s = read(tmp_path)
    assert s["ok"] and s["tmp_files"] == 1 and s["truncated_tmp"] == 1 and 0 < s["records"] < 200
    assert s["stream_bytes"] == sum(len(r) for r in recs[: s["records"]])
    (tmp_path / "x.lz4.tmp").rename(tmp_path / "x.lz4")
    s = read(tmp_path)
    assert not s["ok"] and "x.lz4" in s["error"] and "ends inside" in s["error"]
    # a record cut inside a complete frame
    (tmp_path / "x.lz4").write_bytes(lz4.frame.compress(b"".join(recs[:3]) + recs[3][:100]))
    s = read(tmp_path)
    assert not s["ok"] and "record" in s["error"] and s["records"] == 3
    # garbage where a frame should be
    (tmp_path / "x.lz4").write_bytes(b"not an lz4 frame at all")
    assert not read(tmp_path)["ok"]


def test_read_command_prints_one_line_and_exit_codes(tmp_path):
    write(tmp_path / "a.lz4", [load_record("n3", 1, k) for k in range(5)])
    cmd = [sys.executable, str(BH / "blackhole.py"), "read", str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    line = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and line["records"] == 5 and line["ok"]
    p = subprocess.run(cmd + ["--records"], capture_output=True, text=True, timeout=60)
    first = json.loads(p.stdout.splitlines()[0])
    assert first["id"] == "n3-1-0" and first["uri"] == "/bh/1/0" and first["body_bytes"] == 2048
    (tmp_path / "b.lz4").write_bytes(b"junk")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "b.lz4" in json.loads(p.stdout)["error"]


def after_stop(tmp_path, folder: Path, expect_ok: int, record="1", sent=None) -> dict:
    args = ["after-stop", "--dir", str(folder), "--expect-ok", str(expect_ok), "--record", record,
            "--exit-code", "0"]
    if sent is not None:
        p = tmp_path / "sent.json"
        p.write_text(json.dumps(sent))
        args += ["--sent", str(p)]
    p = subprocess.run([sys.executable, str(BH / "blackhole.py"), *args], capture_output=True, text=True,
                       timeout=120)
    v = json.loads(p.stdout.strip().splitlines()[-1])
    assert (p.returncode == 0) == v["ok"]
    return {c["name"]: c for c in v["checks"]} | {"_ok": v["ok"], "_metrics": v.get("metrics")}


def test_after_stop_check_passes_exact_recordings_and_catches_each_fault(tmp_path):
    d = tmp_path / "inst"
    d.mkdir()
    recs = [load_record("n4", t, k) for t in range(2) for k in range(50)]
    ready = record("srv-1", "GET", "/langbench-ready", "Host: x\r\n")
    write(d / "a.lz4", recs + [ready])
    v = after_stop(tmp_path, d, 101)
    assert v["_ok"], v
    assert v["_metrics"]["records"]["value"] == 101 and v["_metrics"]["lz4_ratio"]["value"] > 0.9
    # one 200 answer without its record
    v = after_stop(tmp_path, d, 102)
    assert not v["_ok"] and not v["records == 200 answers"]["ok"]
    # a duplicate
    write(d / "a.lz4", recs + [recs[0], ready])
    v = after_stop(tmp_path, d, 102)
    assert not v["no duplicate id"]["ok"]
    # one body byte changed
    bad = bytearray(recs[7])
    bad[bad.find(blackhole.body_for("n4-0-7", 2048)[500:540])] ^= 1
    write(d / "a.lz4", recs[:7] + [bytes(bad)] + recs[8:] + [ready])
    v = after_stop(tmp_path, d, 101)
    assert not v["every body as sent"]["ok"] and "n4-0-7" in v["every body as sent"]["detail"]
    # a .tmp file left at a clean stop
    write(d / "a.lz4", recs + [ready])
    shutil.copy(d / "a.lz4", d / "b.lz4.tmp")
    v = after_stop(tmp_path, d, 202)
    assert not v["every file finalised (no .tmp)"]["ok"]
    (d / "b.lz4.tmp").unlink()
    # RECORD=0: any file is a failure, none is a pass
    assert not after_stop(tmp_path, d, 0, record="0")["_ok"]
    (d / "a.lz4").unlink()
    assert after_stop(tmp_path, d, 0, record="0")["_ok"]


def test_after_stop_checks_verification_requests_against_what_was_sent(tmp_path):
    d = tmp_path / "inst"
    d.mkdir()
    rid = "vx-0-1"
    hdrs = [["Host", "h"], ["X-Dup", "one"], ["X-Dup", "two"], ["X-Request-ID", rid], ["Content-Length", "10"]]
    sent = {"nonce": "vx", "sent": [{"id": rid, "method": "PUT", "uri": "/a?b=1", "headers": hdrs,
                                     "body_bytes": 10, "body_id": rid}],
            "absent": ["vx-0-2"], "noid": [{"id": None, "method": "POST", "uri": "/noid/0", "headers": [],
                                            "body_bytes": 10, "body_id": "vx-9-3"}]}
    block = "".join(f"{a}: {b}\r\n" for a, b in hdrs)
    good = record(rid, "PUT", "/a?b=1", block, blackhole.body_for(rid, 10))
    noid = record("server-made-1", "POST", "/noid/0", "Host: h\r\n", blackhole.body_for("vx-9-3", 10))
    write(d / "a.lz4", [good, noid])
    assert after_stop(tmp_path, d, 2, sent=sent)["_ok"]
    # a header lost, the URI changed, a 413 request recorded
    block2 = block.replace("X-Dup: two\r\n", "")
    write(d / "a.lz4", [record(rid, "PUT", "/a?b=2", block2, blackhole.body_for(rid, 10)), noid,
                        record("vx-0-2", "POST", "/over", "", b"")])
    v = after_stop(tmp_path, d, 3, sent=sent)
    assert not v["method, URI and headers as sent"]["ok"]
    assert not v["413 and hung-up requests not recorded"]["ok"]


def test_replay_refuses_targets_off_loopback(tmp_path):
    p = subprocess.run([sys.executable, str(BH / "blackhole.py"), "replay", str(tmp_path), "--target",
                        "10.1.2.3:80"], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "only loopback" in p.stderr
    assert blackhole.loopback_target("127.0.0.1:9") == ("127.0.0.1", 9)
    assert blackhole.loopback_target("[::1]:9") == ("::1", 9)


def test_generated_code_is_what_gen_sh_writes(tmp_path):
    """The committed FlatBuffers code of every language equals a fresh
    generation by flatc 23.5.26 (built from crates.io's vendored source)."""
    p = subprocess.run(["bash", str(BH / "gen.sh"), str(tmp_path)], capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-2000:]
    impl = ROOT / "implementations" / "blackhole"
    pairs = {"scenario-python/fbr/Request.py": BH / "gen/python/fbr/Request.py",
             "go/fbr/Request.go": impl / "go/fbr/Request.go",
             "rust/request_generated.rs": impl / "rust/src/request_generated.rs",
             "python/fbr/Request.py": impl / "python/fbr/Request.py",
             "scala/fbr/Request.java": impl / "scala/src/main/java/fbr/Request.java"}
    for fresh, committed in pairs.items():
        assert (tmp_path / fresh).read_text() == committed.read_text(), fresh
    assert "FLATBUFFERS_23_5_26" in (tmp_path / "scala/fbr/Request.java").read_text()


def test_scenario_declares_two_server_modes_and_files_interop():
    from harness.manifest import load_scenario
    from harness.runner import make_plan
    sc = load_scenario(BH / "scenario.toml")
    assert sc.interop_kind == "files" and "read" in sc.interop.command
    assert sc.modes() == [({}, ["record"]), ({"RECORD": "0"}, ["discard"])]

    class Impl:
        def __init__(self, name):
            self.name = self.id = name
    plan = make_plan([(sc, [Impl("go"), Impl("rust")])], trials=2, seed=1)
    assert len(plan) == 8
    assert {(p.mode, tuple(w.name for w in p.scenario.workloads)) for p in plan} == {
        ("", ("record",)), ("record0", ("discard",))}
    assert all(p.server_env == ({"RECORD": "0"} if p.mode else {}) for p in plan)


def test_manifest_rejects_a_bad_interop_kind_and_server_env(tmp_path):
    from harness.errors import InputError
    from harness.manifest import load_scenario
    d = tmp_path / "blackhole"
    shutil.copytree(BH, d, ignore=shutil.ignore_patterns("flatc", "__pycache__"))
    toml = d / "scenario.toml"
    text = toml.read_text()
    toml.write_text(text.replace('kind = "files"', 'kind = "disks"'))
    with pytest.raises(InputError, match=r"scenario.toml.*interop.kind.*disks"):
        load_scenario(toml)
    toml.write_text(text.replace('server_env = { RECORD = "0" }', 'server_env = { RECORD = [0] }'))
    with pytest.raises(InputError, match=r"server_env.RECORD"):
        load_scenario(toml)


def test_raw_request_survives_a_server_that_resets_while_the_body_is_sent():
    """A server that refuses a large body unread and closes makes the kernel
    reset the connection: the check's client must report that, not crash
    (CI: 'ConnectionResetError' ended the whole conformance run)."""
    import socket
    import struct
    import threading
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.recv(1024)                      # the request head, not the body
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()                         # a reset, with 2 MiB still on the way
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        ans = blackhole._raw("127.0.0.1", port, b"POST / HTTP/1.1\r\nContent-Length: 2097152\r\n\r\n" + b"x" * 2097152)
    finally:
        th.join(5)
        srv.close()
    assert ans == b"" and ans.reset
