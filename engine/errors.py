"""One error root for everything mlrun reports to a user.

Every failure a user can cause or meet (bad recipe, bad query, failed step,
network down) is an MlrunError with a one-paragraph message, an optional hint,
and the exit code the CLI returns: 2 for usage/recipe/resolution errors,
1 for a step that failed while running.
"""


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
