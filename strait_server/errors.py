"""Domain errors. api/errors.py maps each to a gRPC status with google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass, field


class StraitError(Exception):
    """Base of every error a client may see."""

    reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


# Violations named in an error's message: the message travels in a header, and gRPC caps headers at 16 KiB.
_MESSAGE_VIOLATIONS = 5


class InvalidArgument(StraitError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        text = message or "; ".join(f"{v.field}: {v.description}" for v in violations[:_MESSAGE_VIOLATIONS])
        if message is None and len(violations) > _MESSAGE_VIOLATIONS:
            text += f"; and {len(violations) - _MESSAGE_VIOLATIONS} more"
        super().__init__(text)
        self.violations = violations


def _type_name(noun: str) -> str:
    """The ResourceInfo type of a resource named by `noun` in messages: "workflow run" is "workflow_run", so
    that reasons stay UPPER_SNAKE_CASE (WORKFLOW_RUN_NOT_FOUND)."""
    return noun.replace(" ", "_")


class NotFound(StraitError):
    def __init__(self, resource_type: str, name: str) -> None:
        self.resource_type = _type_name(resource_type)
        super().__init__(f"{resource_type} {name!r} not found", reason=f"{self.resource_type.upper()}_NOT_FOUND")
        self.name = name


class AlreadyExists(StraitError):
    def __init__(self, resource_type: str, name: str) -> None:
        self.resource_type = _type_name(resource_type)
        super().__init__(f"{resource_type} {name!r} already exists",
                         reason=f"{self.resource_type.upper()}_ALREADY_EXISTS")
        self.name = name


class FailedPrecondition(StraitError):
    def __init__(self, message: str, *, reason: str = "RUN_STATUS", subject: str = "",
                 violation_type: str = "RUN_STATUS") -> None:
        super().__init__(message, reason=reason)
        self.subject = subject
        self.violation_type = violation_type


class Aborted(StraitError):
    reason = "ETAG_MISMATCH"


class Unauthenticated(StraitError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(StraitError):
    reason = "PERMISSION_DENIED"


class ResourceExhausted(StraitError):
    def __init__(self, message: str, *, reason: str, retry_after_seconds: float | None = None,
                 quota_subject: str = "") -> None:
        super().__init__(message, reason=reason)
        self.retry_after_seconds = retry_after_seconds
        # Names what the quota applies to ("api_key:key_..."): a QuotaFailure detail when set.
        self.quota_subject = quota_subject


class Unavailable(StraitError):
    reason = "UNAVAILABLE"

    def __init__(self, message: str, *, reason: str | None = None, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_seconds = retry_after_seconds


@dataclass
class Violations:
    """Collects field violations; raise() throws InvalidArgument if any were added."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, path: str, description: str) -> None:
        self.items.append(FieldViolation(path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(list(self.items))
