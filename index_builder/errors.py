"""The index builder's user-facing errors: the CLI prints the message (no traceback) and exits with
``exit_code``."""

from __future__ import annotations

__all__ = ["BuildError", "UsageError"]


class BuildError(Exception):
    """A failure the user can act on; the CLI prints the message (no traceback) and exits non-zero."""

    exit_code = 1


class UsageError(BuildError):
    """A bad command-line value (exit code 2)."""

    exit_code = 2
