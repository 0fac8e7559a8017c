"""Maps domain errors to gRPC status codes with google.rpc details (ErrorInfo always, one detail per type)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from strait_server import errors

DOMAIN = "strait.dev"
# Details travel in the grpc-status-details-bin trailer, and gRPC caps a reply's headers at 16 KiB (8 KiB by
# default in some clients): field violations beyond these bounds are summed up in one last entry instead.
MAX_FIELD_VIOLATIONS = 40
MAX_DETAIL_TEXT = 160

_CODES: list[tuple[type[errors.StraitError], grpc.StatusCode, int]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    (errors.Aborted, grpc.StatusCode.ABORTED, code_pb2.ABORTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _details(err: errors.StraitError) -> list[any_pb2.Any]:
    details = [_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN))]
    if isinstance(err, errors.InvalidArgument):
        details.append(_pack(_bad_request(err.violations)))
    elif isinstance(err, errors.NotFound | errors.AlreadyExists):
        details.append(_pack(error_details_pb2.ResourceInfo(resource_type=err.resource_type,
                                                            resource_name=err.name)))
    elif isinstance(err, errors.FailedPrecondition):
        details.append(_pack(error_details_pb2.PreconditionFailure(violations=[
            error_details_pb2.PreconditionFailure.Violation(type=err.violation_type, subject=err.subject,
                                                            description=err.message)
        ])))
    elif isinstance(err, errors.ResourceExhausted):
        if err.quota_subject:
            details.append(_pack(error_details_pb2.QuotaFailure(violations=[
                error_details_pb2.QuotaFailure.Violation(subject=err.quota_subject, description=err.message)])))
        if err.retry_after_seconds is not None:
            details.append(_pack(_retry_info(err.retry_after_seconds)))
    elif isinstance(err, errors.Unavailable):
        details.append(_pack(_retry_info(err.retry_after_seconds)))
    return details


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(int(seconds * 1000))
    return retry


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_TEXT else text[: MAX_DETAIL_TEXT - 1] + "…"


def _bad_request(violations: list[errors.FieldViolation]) -> error_details_pb2.BadRequest:
    listed = [error_details_pb2.BadRequest.FieldViolation(field=_clip(v.field), description=_clip(v.description))
              for v in violations[:MAX_FIELD_VIOLATIONS]]
    if len(violations) > MAX_FIELD_VIOLATIONS:
        listed.append(error_details_pb2.BadRequest.FieldViolation(
            field="request", description=f"{len(violations) - MAX_FIELD_VIOLATIONS} more violations not listed"))
    return error_details_pb2.BadRequest(field_violations=listed)


def to_grpc(err: errors.StraitError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes | str], ...]]:
    status_code, numeric = next(((c, n) for cls, c, n in _CODES if isinstance(err, cls)),
                                (grpc.StatusCode.INTERNAL, code_pb2.INTERNAL))
    status = status_pb2.Status(code=numeric, message=err.message, details=_details(err))
    grpc_status = rpc_status.to_status(status)
    return status_code, err.message, tuple(grpc_status.trailing_metadata)


def internal(request_id: str) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes | str], ...]]:
    message = f"internal error (request {request_id})"
    status = status_pb2.Status(code=code_pb2.INTERNAL, message=message, details=[
        _pack(error_details_pb2.RequestInfo(request_id=request_id))])
    return grpc.StatusCode.INTERNAL, message, tuple(rpc_status.to_status(status).trailing_metadata)
