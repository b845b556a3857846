"""Errors a user can act on. The CLI prints these as one line and exits non-zero, no traceback;
anything else is a bug and keeps its traceback."""


class ReczeroError(Exception):
    """Base of user-facing errors: the message names the file, line or field and what was expected."""


class DataError(ReczeroError):
    """A missing, unreadable or unusable input file."""
