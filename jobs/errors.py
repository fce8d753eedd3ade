"""How a job says an attempt failed."""
from __future__ import annotations


class ActionError(Exception):
    """An attempt failed; it is retried on the action's schedule."""


class PermanentError(ActionError):
    """An attempt failed in a way retrying cannot fix (a 4xx, a refused URL): failed at once."""


class ActionFailed(Exception):
    """Raised to RQ after the failure is recorded, so RQ's own records say "failed" too."""
