"""The project's own error types: what a user got wrong (an option, a file), each shown as one line by the CLIs.

Anything else that escapes a command is a bug and keeps its traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A bad option value or input the user can fix; the message is meant for the user."""
