"""Errors that name the file and the problem, so the CLI can print them without a traceback."""

from __future__ import annotations


class BreastcadError(Exception):
    """Base class for errors the CLI reports as one clear line (exit status 2)."""


class DataError(BreastcadError, ValueError):
    """Input data that cannot be used: names the file (when there is one) and the problem."""

    def __init__(self, problem: str, path: object | None = None, kind: str = "invalid") -> None:
        self.path = path
        self.problem = problem
        self.kind = kind
        """invalid, unsupported (not a format this tool reads) or too_large (the service
        answers 400, 415 and 413)."""
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class BundleError(BreastcadError, ValueError):
    """A model bundle that is missing, incomplete or has been modified since it was written."""


class ConfigError(BreastcadError, ValueError):
    """Settings that cannot work together, or name something unknown (a model, a policy)."""


class Interrupted(BreastcadError):
    """The user stopped a long command (Ctrl-C); says what was kept and how to go on (the CLI
    exits with 130, as a shell does for an interrupted program)."""
