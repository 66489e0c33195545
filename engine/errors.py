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


def from_os_error(exc: OSError) -> DDAuditError:
    """An operating-system error the user can act on (a full disk, a file where a folder should be, no
    permission, a read-only disk) as one problem and its fix."""
    import errno
    where = exc.filename or "a file"
    fixes = {
        errno.ENOSPC: (f"the disk is full (writing {where})", "free some disk space, or point DDAUDIT_HOME / --out "
                                                               "at a disk with room, then run the command again"),
        errno.EDQUOT: (f"the disk quota is exceeded (writing {where})", "free some space within your quota"),
        errno.ENOTDIR: (f"{where}: a part of this path is a file, not a folder",
                        "remove or rename that file (check DDAUDIT_HOME, --out and --data-root)"),
        errno.EEXIST: (f"{where} exists and is not a folder", "remove or rename it (check DDAUDIT_HOME and --out)"),
        errno.EISDIR: (f"{where} is a folder where a file was expected", "remove or rename that folder"),
        errno.EACCES: (f"no permission for {where}", "fix the permissions or use another folder"),
        errno.EROFS: (f"{where} is on a read-only disk", "use a writable folder (DDAUDIT_HOME / --out)"),
    }
    problem, fix = fixes.get(exc.errno, (f"{exc.strerror or exc} ({where})", "check the path and try again"))
    return DDAuditError(problem, fix)


class Cancelled(DDAuditError):
    """A long computation was cancelled cooperatively."""

    exit_code = 130
