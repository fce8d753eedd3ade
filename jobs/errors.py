"""How a job says an attempt failed."""
from __future__ import annotations


class ActionError(Exception):
    """An attempt failed; it is retried on the action's schedule."""


class PermanentError(ActionError):
    """An attempt failed in a way retrying cannot fix (a 4xx, a refused URL): failed at once."""


class ActionFailed(Exception):
    """Raised to RQ after the failure is recorded, so RQ's own records say "failed" too."""


class Postpone(Exception):
    """Not now, and not a failure (an FTP server's connections are all in use): run again in ``delay`` seconds.

    The attempt is not counted and the retry schedule is not used.
    """

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay
