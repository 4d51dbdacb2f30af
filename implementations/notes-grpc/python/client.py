"""notes-grpc conformance client (synchronous grpc API).

    client.py --target HOST:PORT

Runs the fixed sequence of scenarios/notes-grpc/README.md (hit, miss, stream),
prints one JSON verdict on stdout and exits 0 only when every check passed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
import notes_pb2  # noqa: E402
import notes_pb2_grpc  # noqa: E402

DEADLINE_S = 5.0


def rpc_error(exc: grpc.RpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def check_hit(stub) -> tuple[bool, str]:
    try:
        note = stub.GetNoteByTitle(notes_pb2.Title(title="Hello"), timeout=DEADLINE_S)
    except grpc.RpcError as exc:
        return False, f"GetNoteByTitle('Hello') failed with {rpc_error(exc)}"
    got = (note.title, note.author.nickname, note.author.mail, note.content)
    want = ("Hello", "Hans", "hans@gmail.com", "Hello, world of notes.")
    if got != want:
        return False, f"got {got!r}, want {want!r}"
    return True, "Hello by Hans <hans@gmail.com>"


def check_miss(stub) -> tuple[bool, str]:
    try:
        note = stub.GetNoteByTitle(notes_pb2.Title(title="no such note"), timeout=DEADLINE_S)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return True, "NOT_FOUND"
        return False, f"want NOT_FOUND, got {rpc_error(exc)}"
    return False, f"want NOT_FOUND, got a note titled {note.title!r}"


def check_stream(stub) -> tuple[bool, str]:
    titles: list[str] = []
    call = stub.ListNotesByAuthor(notes_pb2.Author(mail="hans@gmail.com"), timeout=DEADLINE_S)
    try:
        for note in call:
            titles.append(note.title)
    except grpc.RpcError as exc:
        return False, f"stream failed after {titles!r} with {rpc_error(exc)}"
    want = ["Hello", "Goodbye"]
    if call.code() != grpc.StatusCode.OK:
        return False, f"stream ended with {call.code().name}"
    if titles != want:
        return False, f"got titles {titles!r}, want {want!r}"
    return True, "Hello, Goodbye; status OK"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of a notes-grpc server")
    args = parser.parse_args(argv)

    checks = []
    with grpc.insecure_channel(args.target) as channel:
        stub = notes_pb2_grpc.NoticeboardStub(channel)
        for name, fn in (("hit", check_hit), ("miss", check_miss), ("stream", check_stream)):
            try:
                ok, detail = fn(stub)
            except Exception as exc:  # a client bug must still yield a verdict
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            checks.append({"name": name, "ok": ok, "detail": detail})

    ok = all(c["ok"] for c in checks)
    print(json.dumps({"client": "python", "target": args.target, "ok": ok, "checks": checks}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
