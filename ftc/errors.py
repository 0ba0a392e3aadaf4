"""Errors a user can fix (printed as one message, no traceback, exit code 2)."""


class UserError(Exception):
    """A mistake the user can fix: printed as one message, no traceback, exit code 2."""
