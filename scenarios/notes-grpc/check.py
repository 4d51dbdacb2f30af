"""Verification of a notes-grpc server against the shared data file.

Run by the harness before any load:

    python check.py --target 127.0.0.1:PORT --data data/notes.json --proto notes.proto

Prints one JSON verdict {"ok": bool, "checks": [{"name", "ok", "detail"}]}
and exits 0 only when every check passed.
"""
from __future__ import annotations

import argparse
import importlib
import json
import random
import sys
import tempfile
from pathlib import Path

import grpc
from grpc_tools import protoc

DEADLINE_S = 5.0


def load_stubs(proto: Path, out: Path):
    rc = protoc.main([
        "grpc_tools.protoc", f"-I{proto.parent}", f"--python_out={out}",
        f"--grpc_python_out={out}", str(proto.name),
    ])
    if rc != 0:
        raise SystemExit(f"{proto}: protoc failed with exit code {rc}")
    sys.path.insert(0, str(out))
    return importlib.import_module("notes_pb2"), importlib.import_module("notes_pb2_grpc")


def note_dict(msg) -> dict:
    return {"title": msg.title, "content": msg.content,
            "author": {"nickname": msg.author.nickname, "mail": msg.author.mail}}


def run_checks(target: str, notes: list[dict], pb, pb_grpc, seed: int) -> list[dict]:
    rng = random.Random(seed)
    checks: list[dict] = []

    def record(name: str, ok: bool, detail: str) -> None:
        checks.append({"name": name, "ok": ok, "detail": detail})

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.NoticeboardStub(channel)
        # Hits: the three original notes plus titles sampled over the whole file.
        sample = notes[:3] + rng.sample(notes[3:], 47)
        bad = []
        for note in sample:
            try:
                got = note_dict(stub.GetNoteByTitle(pb.Title(title=note["title"]), timeout=DEADLINE_S))
            except grpc.RpcError as exc:
                bad.append(f"{note['title']!r}: {exc.code().name}")
                continue
            if got != note:
                bad.append(f"{note['title']!r}: got {got!r}")
        record("get_hits", not bad, f"{len(sample) - len(bad)}/{len(sample)} equal to the file" +
               (f"; first mismatch {bad[0]}" if bad else ""))

        # Misses must be NOT_FOUND, not UNKNOWN or an empty note.
        bad = []
        for i in range(5):
            title = f"no such note {rng.randrange(10**9)}-{i}"
            try:
                got = stub.GetNoteByTitle(pb.Title(title=title), timeout=DEADLINE_S)
                bad.append(f"{title!r}: answered OK with {note_dict(got)!r}")
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    bad.append(f"{title!r}: {exc.code().name} instead of NOT_FOUND")
        record("get_misses", not bad, "5/5 NOT_FOUND" if not bad else bad[0])

        # Streams: every note of the author in file order, matched on mail only.
        by_mail: dict[str, list[dict]] = {}
        for note in notes:
            by_mail.setdefault(note["author"]["mail"], []).append(note)
        mails = ["hans@gmail.com", "lisa@gmail.com"]
        mails += rng.sample(sorted(set(by_mail) - set(mails)), 8)
        bad = []
        for mail in mails:
            # A wrong nickname must not matter: the match is on mail only.
            req = pb.Author(nickname="ignored", mail=mail)
            try:
                got = [note_dict(n) for n in stub.ListNotesByAuthor(req, timeout=DEADLINE_S)]
            except grpc.RpcError as exc:
                bad.append(f"{mail}: {exc.code().name}")
                continue
            if got != by_mail[mail]:
                bad.append(f"{mail}: {len(got)} notes, expected {len(by_mail[mail])} in file order")
        try:
            got = list(stub.ListNotesByAuthor(pb.Author(mail="nobody@example.invalid"), timeout=DEADLINE_S))
            if got:
                bad.append(f"unknown mail: {len(got)} notes instead of an empty stream")
        except grpc.RpcError as exc:
            bad.append(f"unknown mail: {exc.code().name} instead of an empty OK stream")
        record("streams", not bad, f"{len(mails) - len(bad)}/{len(mails)} authors exact, unknown mail empty"
               if not bad else bad[0])
    return checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--proto", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    notes = json.loads(args.data.read_text())
    with tempfile.TemporaryDirectory(prefix="langbench-check-") as tmp:
        pb, pb_grpc = load_stubs(args.proto.resolve(), Path(tmp))
        try:
            checks = run_checks(args.target, notes, pb, pb_grpc, args.seed)
        except grpc.RpcError as exc:  # channel-level failure
            checks = [{"name": "connect", "ok": False, "detail": f"{exc.code().name}: {exc.details()}"}]
    ok = bool(checks) and all(c["ok"] for c in checks)
    print(json.dumps({"target": args.target, "ok": ok, "checks": checks}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
