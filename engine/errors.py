"""Errors a user can act on: each carries what went wrong and how to fix it."""
from __future__ import annotations


class DDAuditError(Exception):
    """Base class: a problem the user can fix; the CLI prints it without a traceback (exit 2)."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return self.problem if not self.fix else f"{self.problem}\n  fix: {self.fix}"


class InvalidArgument(DDAuditError):
    """A parameter is out of range or of the wrong kind."""


class DataUnavailable(DDAuditError):
    """A dataset's source files cannot be found or read."""


class CorruptArtifact(DDAuditError):
    """A cached or stored file failed its integrity check."""


class Cancelled(DDAuditError):
    """A long computation was cancelled cooperatively."""

    exit_code = 130
