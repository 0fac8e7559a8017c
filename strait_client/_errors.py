"""Typed exceptions for failed calls, decoded from the gRPC status and its google.rpc details."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status

_DETAILS_KEY = "grpc-status-details-bin"


class StraitError(Exception):
    """Base of every error a call can raise; also the fallback for status codes without a subclass.

    Attributes come from the status and its details; the ones a status does not carry are empty/None.
    """

    code: grpc.StatusCode
    message: str
    reason: str
    """ErrorInfo.reason, e.g. "RUN_NOT_FOUND"; "" when the status carried no ErrorInfo."""
    domain: str
    field_violations: list[tuple[str, str]]
    """(field, description) pairs from BadRequest."""
    precondition_violations: list[tuple[str, str, str]]
    """(type, subject, description) triples from PreconditionFailure."""
    retry_delay: float | None
    """Seconds to wait before retrying, from RetryInfo."""
    resource_type: str
    resource_name: str
    request_id: str
    """RequestInfo.request_id, set on internal errors: quote it when reporting a problem."""

    def __init__(self, code: grpc.StatusCode, message: str, status: status_pb2.Status | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = ""
        self.domain = ""
        self.field_violations = []
        self.precondition_violations = []
        self.retry_delay = None
        self.resource_type = ""
        self.resource_name = ""
        self.request_id = ""
        if status is not None:
            for detail in status.details:
                self._absorb(detail)

    def _absorb(self, detail: Any) -> None:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            self.reason, self.domain = info.reason, info.domain
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            self.field_violations.extend((v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            self.precondition_violations.extend((v.type, v.subject, v.description) for v in failure.violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            self.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            detail.Unpack(resource)
            self.resource_type, self.resource_name = resource.resource_type, resource.resource_name
        elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            request = error_details_pb2.RequestInfo()
            detail.Unpack(request)
            self.request_id = request.request_id

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        extra = f", reason={self.reason!r}" if self.reason else ""
        return f"{type(self).__name__}({self.code.name}, {self.message!r}{extra})"


class InvalidArgumentError(StraitError):
    """The request was malformed; `field_violations` names each bad field."""


class NotFoundError(StraitError):
    """The named resource does not exist (or is not visible to this key); see `resource_type/resource_name`."""


class AlreadyExistsError(StraitError):
    """A resource with that name already exists; see `resource_type/resource_name`."""


class FailedPreconditionError(StraitError):
    """The resource is not in a state that allows the call (e.g. a disabled job, a finished run)."""


class AbortedError(StraitError):
    """A concurrent change won, e.g. an etag mismatch: re-read and retry."""


class UnauthenticatedError(StraitError):
    """The API key is missing, malformed, unknown or revoked."""


class PermissionDeniedError(StraitError):
    """The key is valid but may not make this call."""


class ResourceExhaustedError(StraitError):
    """A limit or quota was hit; `retry_delay` says how long to wait when the server knows."""


class UnavailableError(StraitError):
    """The server (or its database) is unreachable for now; retrying later may succeed."""


class DeadlineExceededError(StraitError):
    """The call did not finish within the client's timeout."""


class InternalError(StraitError):
    """The server failed unexpectedly; `request_id` identifies the failure in its logs."""


_BY_CODE: dict[grpc.StatusCode, type[StraitError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def _sync_status(call: Any) -> status_pb2.Status | None:
    try:
        status: status_pb2.Status | None = rpc_status.from_call(call)
    except (ValueError, DecodeError):  # inconsistent or corrupt details: keep the code and message only
        return None
    return status


def _aio_status(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in err.trailing_metadata() or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def from_rpc_error(err: grpc.RpcError) -> StraitError:
    """The typed exception for a failed call (sync grpc.Call errors and grpc.aio.AioRpcError alike)."""
    if isinstance(err, grpc.aio.AioRpcError):
        code, message, status = err.code(), err.details() or "", _aio_status(err)
    elif isinstance(err, grpc.Call):
        code, message, status = err.code(), err.details() or "", _sync_status(err)
    else:  # an RpcError that is not a call (should not happen with real channels)
        code, message, status = grpc.StatusCode.UNKNOWN, str(err), None
    cls = _BY_CODE.get(code, StraitError)
    return cls(code, message, status)
