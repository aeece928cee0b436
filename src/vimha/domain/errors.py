"""One small error hierarchy. Drivers translate library exceptions into these, in one place.

`Temporary` means "retry later" (carries `retry_after` seconds); `Permanent` means the same call
will fail again. The API maps each class to one HTTP status (see api/problems.py).
"""

from __future__ import annotations


class VimhaError(Exception):
    """Base of every error vimha raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Temporary(VimhaError):
    """A failure that may go away: the caller may retry after `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Permanent(VimhaError):
    """A failure that will not go away by retrying the same call."""


class InvalidInput(Permanent):
    """The request or configuration is malformed; `detail` names the bad part."""


class NotFound(Permanent):
    """The named resource does not exist."""


class Conflict(Permanent):
    """The request conflicts with the resource's current state."""


class PreconditionFailed(Permanent):
    """A conditional request (If-Match) did not match the resource's current version."""


class StoreUnavailable(Temporary):
    """The state store cannot be reached or is busy."""


class SchemaMismatch(Permanent):
    """The database schema is not the one this version of vimha knows."""


class DeliveryFailed(Temporary):
    """A notification could not be delivered to a consumer."""
