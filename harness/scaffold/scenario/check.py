"""Verification for ${name}: prints one JSON verdict, exit 0 when all checks pass."""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import uuid


def get(target: str, path: str) -> tuple[int | None, bytes]:
    host, port = target.rsplit(":", 1)
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return None, str(exc).encode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    args = ap.parse_args()
    name = f"check-{uuid.uuid4().hex[:8]}"
    checks = []
    status, body = get(args.target, f"/hello?name={name}")
    checks.append({"name": "hello", "ok": status == 200 and body == f"hello {name}".encode(),
                   "detail": f"status {status}, body {body[:60]!r}"})
    status, _ = get(args.target, "/hello")
    checks.append({"name": "no name", "ok": status == 400, "detail": f"status {status}"})
    status, _ = get(args.target, "/nope")
    checks.append({"name": "unknown path", "ok": status == 404, "detail": f"status {status}"})
    ok = all(c["ok"] for c in checks)
    print(json.dumps({"ok": ok, "checks": checks}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
