"""One error root for everything mlrun reports to a user.

Every failure a user can cause or meet (bad recipe, bad query, failed step,
network down) is an MlrunError with a one-paragraph message, an optional hint,
and the exit code the CLI returns: 2 for usage/recipe/resolution errors,
1 for a step that failed while running.
"""
import errno
import os


class MlrunError(Exception):
    exit_code = 2

    def __init__(self, message, hint=None, exit_code=None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self):
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class RecipeError(MlrunError):
    """A recipe file is malformed; the message names the file and line."""

    def __init__(self, message, path=None, line=None, hint=None):
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(where + message, hint)
        self.path, self.line = path, line


class ResolutionError(MlrunError):
    """A query cannot become a concrete plan (no match, conflict, cycle...)."""


class UsageError(MlrunError):
    """The command line itself is wrong."""


class StepError(MlrunError):
    """A step ran and failed (exit code 1)."""
    exit_code = 1


class DownloadError(StepError):
    """A download failed: network down, HTTP error, or checksum mismatch."""


class UnrecordableFileError(MlrunError):
    """A file mlrun cannot hash or record: a FIFO, socket or device, or a name that is not UTF-8."""

    def __init__(self, path, why):
        super().__init__(f"{printable(path)}: {why}")
        self.path = path


def printable(text):
    """A path or text whose bytes that are not UTF-8 (surrogate escapes from os and sys.argv) show as \\xNN."""
    text = os.fsdecode(text) if isinstance(text, bytes) else str(text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class os_errors:
    """`with os_errors(operation, path):` reports an OSError raised inside as `operation path: reason`."""

    def __init__(self, operation, path=None):
        self.operation, self.path = operation, path

    def __enter__(self):
        return self

    def __exit__(self, kind, e, traceback):
        if isinstance(e, OSError):
            raise from_os_error(e, self.operation, self.path) from None


def from_os_error(e, operation, path=None):
    """An OSError the file system raised as a usage/environment error: the operation, the path, the reason."""
    given = [path] if path is not None else [p for p in (e.filename, e.filename2) if p is not None]
    paths = " -> ".join(printable(p) for p in given)
    hint = {errno.ENOSPC: "the disk is full: free space, or point --cache/--runs (or -o) at another disk",
            errno.EROFS: "that file system is read-only: point --cache/--runs at a writable folder",
            errno.EACCES: "no permission: point --cache/--runs at a folder you may write",
            errno.ENOTDIR: "a part of that path is a file, not a folder",
            errno.EISDIR: "that path is a folder: name a file"}.get(e.errno)
    return MlrunError(f"{operation}{' ' + paths if paths else ''}: {e.strerror or e}", hint)
