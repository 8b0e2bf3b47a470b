"""The txverify error model: reasons, their status codes and outcome codes, as google.rpc.Status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "txverify"
# The trailing-metadata key that carries a serialized google.rpc.Status.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The longest wait a RetryInfo says (seconds). A longer one, or one that is not a
# number, would say nothing useful, and past about 1e10 s a Duration cannot hold it.
MAX_RETRY_DELAY = 86_400.0


class Reason(StrEnum):
    """Stable, machine-readable failure reasons (google.rpc.ErrorInfo.reason)."""

    INVALID_SLIP_QR = "INVALID_SLIP_QR"
    INVALID_REQUEST = "INVALID_REQUEST"
    UNKNOWN_MEMBER = "UNKNOWN_MEMBER"
    MEMBER_SUSPENDED = "MEMBER_SUSPENDED"
    NOT_SUBSCRIBED = "NOT_SUBSCRIBED"
    ISSUER_NOT_FOUND = "ISSUER_NOT_FOUND"
    ISSUER_NOT_SUBSCRIBED = "ISSUER_NOT_SUBSCRIBED"
    SLIP_NOT_FOUND = "SLIP_NOT_FOUND"
    SLIP_EXPIRED = "SLIP_EXPIRED"
    # The issuer knows the transfer but has not settled it yet: ask again later.
    SLIP_PENDING = "SLIP_PENDING"
    ISSUER_UNAVAILABLE = "ISSUER_UNAVAILABLE"
    ISSUER_ERROR = "ISSUER_ERROR"
    ISSUER_TIMEOUT = "ISSUER_TIMEOUT"
    RATE_LIMITED = "RATE_LIMITED"
    AUDIT_UNAVAILABLE = "AUDIT_UNAVAILABLE"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    INTERNAL = "INTERNAL"
    IDENTITY_MISMATCH = "IDENTITY_MISMATCH"
    MEMBER_TERMINATED = "MEMBER_TERMINATED"
    # A slip image (VerifyRequest.slip_image) that does not give one slip QR.
    SLIP_IMAGE_UNREADABLE = "SLIP_IMAGE_UNREADABLE"
    SLIP_IMAGE_TOO_LARGE = "SLIP_IMAGE_TOO_LARGE"
    SLIP_IMAGE_NO_QR = "SLIP_IMAGE_NO_QR"
    SLIP_IMAGE_NOT_A_SLIP = "SLIP_IMAGE_NOT_A_SLIP"
    SLIP_IMAGE_SEVERAL_SLIPS = "SLIP_IMAGE_SEVERAL_SLIPS"
    SLIP_IMAGE_BUSY = "SLIP_IMAGE_BUSY"
    # Member registry (operators) only.
    NOT_OPERATOR = "NOT_OPERATOR"
    MEMBER_NOT_FOUND = "MEMBER_NOT_FOUND"
    MEMBER_EXISTS = "MEMBER_EXISTS"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    # Simulator control (BankSimulator) only.
    UNKNOWN_BANK = "UNKNOWN_BANK"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    ACCOUNT_EXISTS = "ACCOUNT_EXISTS"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    ALREADY_REVERSED = "ALREADY_REVERSED"


@dataclass(frozen=True, slots=True)
class ReasonSpec:
    """How a reason travels: its gRPC status and the existing central system's code."""

    status: grpc.StatusCode
    code: str  # "" where the existing system has no equivalent


REASONS: Mapping[Reason, ReasonSpec] = {
    Reason.INVALID_SLIP_QR: ReasonSpec(grpc.StatusCode.INVALID_ARGUMENT, "6400"),
    Reason.INVALID_REQUEST: ReasonSpec(grpc.StatusCode.INVALID_ARGUMENT, "6400"),
    Reason.UNKNOWN_MEMBER: ReasonSpec(grpc.StatusCode.UNAUTHENTICATED, "6421"),
    Reason.MEMBER_SUSPENDED: ReasonSpec(grpc.StatusCode.PERMISSION_DENIED, "6403"),
    Reason.NOT_SUBSCRIBED: ReasonSpec(grpc.StatusCode.PERMISSION_DENIED, "6403"),
    Reason.ISSUER_NOT_FOUND: ReasonSpec(grpc.StatusCode.NOT_FOUND, "6501"),
    Reason.ISSUER_NOT_SUBSCRIBED: ReasonSpec(grpc.StatusCode.NOT_FOUND, "6501"),
    Reason.SLIP_NOT_FOUND: ReasonSpec(grpc.StatusCode.NOT_FOUND, "8404"),
    Reason.SLIP_EXPIRED: ReasonSpec(grpc.StatusCode.NOT_FOUND, "8404"),
    # UNAVAILABLE: the status gRPC retry policies and HTTP clients (503) retry; 8404:
    # what the existing system answers for it, having no pending code (ARCHITECTURE.md).
    Reason.SLIP_PENDING: ReasonSpec(grpc.StatusCode.UNAVAILABLE, "8404"),
    Reason.ISSUER_UNAVAILABLE: ReasonSpec(grpc.StatusCode.UNAVAILABLE, "8503"),
    Reason.ISSUER_ERROR: ReasonSpec(grpc.StatusCode.UNAVAILABLE, "8500"),
    Reason.ISSUER_TIMEOUT: ReasonSpec(grpc.StatusCode.DEADLINE_EXCEEDED, "8503"),
    Reason.RATE_LIMITED: ReasonSpec(grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    Reason.AUDIT_UNAVAILABLE: ReasonSpec(grpc.StatusCode.UNAVAILABLE, "6500"),
    Reason.SHUTTING_DOWN: ReasonSpec(grpc.StatusCode.UNAVAILABLE, ""),
    Reason.INTERNAL: ReasonSpec(grpc.StatusCode.INTERNAL, "6500"),
    Reason.IDENTITY_MISMATCH: ReasonSpec(grpc.StatusCode.UNAUTHENTICATED, "6421"),
    Reason.MEMBER_TERMINATED: ReasonSpec(grpc.StatusCode.PERMISSION_DENIED, "6403"),
    Reason.SLIP_IMAGE_UNREADABLE: ReasonSpec(grpc.StatusCode.INVALID_ARGUMENT, "6400"),
    Reason.SLIP_IMAGE_TOO_LARGE: ReasonSpec(grpc.StatusCode.INVALID_ARGUMENT, "6400"),
    Reason.SLIP_IMAGE_NO_QR: ReasonSpec(grpc.StatusCode.INVALID_ARGUMENT, "6400"),
    Reason.SLIP_IMAGE_NOT_A_SLIP: ReasonSpec(grpc.StatusCode.INVALID_ARGUMENT, "6400"),
    Reason.SLIP_IMAGE_SEVERAL_SLIPS: ReasonSpec(grpc.StatusCode.INVALID_ARGUMENT, "6400"),
    Reason.SLIP_IMAGE_BUSY: ReasonSpec(grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    Reason.NOT_OPERATOR: ReasonSpec(grpc.StatusCode.PERMISSION_DENIED, "6403"),
    Reason.MEMBER_NOT_FOUND: ReasonSpec(grpc.StatusCode.NOT_FOUND, ""),
    Reason.MEMBER_EXISTS: ReasonSpec(grpc.StatusCode.ALREADY_EXISTS, ""),
    Reason.INVALID_TRANSITION: ReasonSpec(grpc.StatusCode.FAILED_PRECONDITION, ""),
    Reason.UNKNOWN_BANK: ReasonSpec(grpc.StatusCode.NOT_FOUND, ""),
    Reason.UNKNOWN_ACCOUNT: ReasonSpec(grpc.StatusCode.NOT_FOUND, ""),
    Reason.ACCOUNT_EXISTS: ReasonSpec(grpc.StatusCode.ALREADY_EXISTS, ""),
    Reason.INSUFFICIENT_FUNDS: ReasonSpec(grpc.StatusCode.FAILED_PRECONDITION, ""),
    Reason.ALREADY_REVERSED: ReasonSpec(grpc.StatusCode.FAILED_PRECONDITION, ""),
}


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


class ServiceError(Exception):
    """A failure with a stable reason, raised by domain code and turned into a gRPC status.

    `code` overrides the reason's default outcome code (an issuer may say 8400
    where the hub says 6400 for the same reason).
    """

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        violations: tuple[FieldViolation, ...] = (),
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.code = REASONS[reason].code if code is None else code
        self.metadata = dict(metadata or {})
        self.violations = violations
        self.retry_after = retry_after

    @property
    def status_code(self) -> grpc.StatusCode:
        return REASONS[self.reason].status

    def to_status(self) -> status_pb2.Status:
        """The google.rpc.Status carrying ErrorInfo (and BadRequest when fields are named)."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason.value,
            domain=DOMAIN,
            metadata={**self.metadata, **({"code": self.code} if self.code else {})},
        )
        details = [_pack(info)]
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            details.append(_pack(bad))
        if self.retry_after is not None:
            delay = retry_delay(self.retry_after)
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return status_pb2.Status(
            code=_rpc_code(self.status_code), message=self.message, details=details
        )

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        """Trailing metadata that carries the rich status to the client."""
        return ((STATUS_DETAILS_KEY, self.to_status().SerializeToString()),)


def retry_delay(seconds: float) -> duration_pb2.Duration:
    """A RetryInfo delay for any float: 0 to MAX_RETRY_DELAY (negative and NaN as 0)."""
    capped = min(seconds, MAX_RETRY_DELAY) if seconds > 0 else 0.0  # NaN > 0 is False
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round(capped * 1e9))
    return delay


def invalid_field(field: str, problem: str) -> ServiceError:
    """INVALID_ARGUMENT/INVALID_REQUEST naming one bad field (ErrorInfo and BadRequest)."""
    return ServiceError(
        Reason.INVALID_REQUEST,
        f"{field}: {problem}",
        metadata={"field": field},
        violations=(FieldViolation(field, problem),),
    )


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """What a client can read back from a failed call."""

    status: grpc.StatusCode
    message: str
    reason: str = ""
    code: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()
    retry_after: float | None = None  # seconds, from google.rpc.RetryInfo


def details_from_metadata(
    status: grpc.StatusCode,
    message: str,
    trailing: object,
) -> ErrorDetails:
    """Decode ErrorInfo/BadRequest from a failed call's trailing metadata (sync or asyncio)."""
    raw = _find_details(trailing)
    if raw is None:
        return ErrorDetails(status=status, message=message)
    rich = status_pb2.Status()
    try:
        rich.ParseFromString(raw)
    except Exception:  # a peer sent garbage; keep the plain status
        return ErrorDetails(status=status, message=message)
    reason, code, metadata = "", "", {}
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    for detail in rich.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if detail.Is(retry.DESCRIPTOR) and detail.Unpack(retry):
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
            reason = info.reason
            metadata = dict(info.metadata)
            code = metadata.get("code", "")
        elif detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return ErrorDetails(
        status=status,
        message=rich.message or message,
        reason=reason,
        code=code,
        metadata=metadata,
        violations=tuple(violations),
        retry_after=retry_after,
    )


def details_of(error: grpc.RpcError) -> ErrorDetails:
    """ErrorDetails of a grpc.RpcError or grpc.aio.AioRpcError."""
    call: grpc.Call = error  # type: ignore[assignment]  # every RpcError raised by a stub is a Call
    return details_from_metadata(call.code(), call.details() or "", call.trailing_metadata())


def _find_details(trailing: object) -> bytes | None:
    if trailing is None:
        return None
    for item in trailing:  # type: ignore[attr-defined]  # tuples (sync) or aio Metadata
        key, value = item
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _rpc_code(status: grpc.StatusCode) -> int:
    # grpc.StatusCode values are (int, name) with the same numbers as google.rpc.Code.
    value: int = status.value[0]
    return value


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: ServiceError) -> NoReturn:
    """End an asyncio RPC with the error's status, message and rich details."""
    await context.abort(error.status_code, error.message, error.trailing_metadata())
    raise AssertionError("grpc.aio abort() returned")  # it raises; this tells mypy so
