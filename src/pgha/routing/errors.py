"""The one error type the routing adapters raise.

It is an ``OSError`` on purpose: every routing failure is a failure of the
machine around the agent (a command, a socket, a file), and the executor
already treats ``OSError`` as "this action failed; skip the rest".  ``str()``
is one line that names the problem and the fix.
"""

from __future__ import annotations


class RoutingError(OSError):
    """A VIP, PgBouncer or hook operation failed; ``str()`` is one line naming the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
