"""Errors the user can act on, and the exit codes of the CLI."""
from __future__ import annotations

import enum
from pathlib import Path


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1        # the job ran, but something it measured failed or regressed
    USAGE = 2          # bad input: arguments, manifests, results files
    INTERRUPTED = 130  # Ctrl-C / SIGTERM to the harness


class LangbenchError(Exception):
    """A known error: shown as one line, without a traceback (unless --debug)."""

    exit_code = ExitCode.FAILURE


class InputError(LangbenchError):
    """Bad input from the user: arguments, files, names."""

    exit_code = ExitCode.USAGE


class ManifestError(InputError):
    """A malformed manifest, named by file and field."""

    def __init__(self, path: Path | str, field: str, message: str):
        self.path = Path(path)
        self.field = field
        self.message = message
        super().__init__(f"{path}: field '{field}': {message}")


class ServerError(LangbenchError):
    """A server under test misbehaved: did not start, crashed, failed checks."""


class ToolError(LangbenchError):
    """A load tool or toolchain is missing or failed."""


class QuotaError(InputError):
    """The CPU quota the profile declares cannot be applied here (exit 2):
    measuring without it would publish figures under a budget that was not in force."""
