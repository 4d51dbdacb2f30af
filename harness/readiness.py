"""Readiness probes: wait for a server's first successful answer."""
from __future__ import annotations

import base64
import http.client
import socket
import subprocess
import time
from typing import Callable

from .errors import ServerError
from .manifest import Readiness


def _tcp(host: str, port: int, params: dict) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _http(host: str, port: int, params: dict) -> bool:
    """One HTTP request; ready on `expect_status` (default: any status below 500)."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=7)
        body = params.get("body") or None
        headers = {"Content-Type": params.get("content_type", "application/json")} if body else {}
        conn.request(params.get("method", "GET"), params.get("path", "/"), body=body, headers=headers)
        status = conn.getresponse().status
        conn.close()
    except (OSError, http.client.HTTPException):
        return False
    want = params.get("expect_status") or 0
    return status == want if want else status < 500


def _command(host: str, port: int, params: dict) -> bool:
    """A command (placeholders already filled in) that exits 0 once ready."""
    try:
        return subprocess.run(params["command"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _grpc(host: str, port: int, params: dict) -> bool:
    """One unary call with a raw protobuf request; an OK answer means ready.

    A TCP connect gates the call, and each attempt uses a fresh channel: a
    gRPC channel that saw a refused connection backs off for a second or
    more, which would inflate the start-up time measured.
    """
    if not _tcp(host, port, params):
        return False
    import grpc
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        call = channel.unary_unary(params["method"], request_serializer=None, response_deserializer=None)
        try:
            call(base64.b64decode(params.get("request_b64", "")), timeout=2.0, wait_for_ready=False)
            return True
        except grpc.RpcError:
            return False


PROBES: dict[str, Callable[[str, int, dict], bool]] = {"tcp": _tcp, "http": _http, "grpc": _grpc,
                                                        "command": _command}


def wait_ready(readiness: Readiness, host: str, port: int, alive: Callable[[], bool],
               why_dead: Callable[[], str], started_at: float, poll_s: float = 0.02) -> float:
    """Poll until the first successful answer; return seconds since `started_at`.

    Raises ServerError when the server exits first or the timeout passes.
    """
    probe = PROBES[readiness.kind]
    deadline = started_at + readiness.timeout_s
    while True:
        if not alive():
            raise ServerError(f"exited before it was ready: {why_dead()}")
        if probe(host, port, readiness.params):
            return time.monotonic() - started_at
        if time.monotonic() > deadline:
            raise ServerError(f"not ready after {readiness.timeout_s:g} s "
                              f"({readiness.kind} probe on {host}:{port})")
        time.sleep(poll_s)
