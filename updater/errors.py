"""One error root for the whole product. Every domain error carries a `reason`, a short
snake_case string that is safe to use as a metric label."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from updater.keys import UpdateKey


class PulsegateError(Exception):
    """Root of every error pulsegate raises on purpose."""

    reason = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(PulsegateError):
    """Bad input. Names the offending field and the rule it broke; nothing was written."""

    reason = "invalid_request"

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class TransitionError(PulsegateError):
    """A status change the state machine does not allow."""

    reason = "invalid_transition"


class NotFound(PulsegateError):
    """The job or update does not exist."""

    reason = "not_found"


class UpdateConflict(PulsegateError):
    """The job already has an active update; carries its key."""

    reason = "update_conflict"

    def __init__(self, message: str, active: UpdateKey) -> None:
        super().__init__(message)
        self.active = active


class JobUpdating(PulsegateError):
    """A job change was refused because an update is active on the job."""

    reason = "job_updating"

    def __init__(self, message: str, active: UpdateKey) -> None:
        super().__init__(message)
        self.active = active


class NoopUpdate(PulsegateError):
    """The requested update would change nothing."""

    reason = "noop_update"


class AlreadyExists(PulsegateError):
    """Something that must be unique was created twice."""

    reason = "already_exists"


class StaleWrite(PulsegateError):
    """A compare-and-set write lost: the stored value changed since it was read."""

    reason = "stale_write"


class ValueTooLarge(PulsegateError):
    """A value does not fit the storage's per-value limit; nothing was written."""

    reason = "value_too_large"


class Unavailable(PulsegateError):
    """No leader, or storage unreachable: the caller should retry later."""

    reason = "unavailable"


class AuthError(PulsegateError):
    """The caller is not authenticated or not allowed to do this."""

    reason = "auth"
