"""Typed exceptions for a failed Verify: one class per txverify reason the hub can return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import grpc

from txverify.errors import ErrorDetails, Reason


class VerifyFailed(Exception):
    """The hub (or gRPC on the way to it) answered Verify with an error.

    `details` holds everything decoded from the status; the properties are
    shortcuts to it. `retryable` says whether the same request, sent again
    later with the same request_id, may succeed.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, details: ErrorDetails) -> None:
        super().__init__(details.message)
        self.details = details

    @property
    def status(self) -> grpc.StatusCode:
        return self.details.status

    @property
    def reason(self) -> str:
        """The ErrorInfo reason, or the status name when the answer carried none."""
        return self.details.reason or self.details.status.name

    @property
    def code(self) -> str:
        """The existing central system's outcome code ("8404"), "" when there is none."""
        return self.details.code

    @property
    def message(self) -> str:
        return self.details.message

    @property
    def metadata(self) -> Mapping[str, str]:
        """ErrorInfo metadata: e.g. `issuer`, `field`, `cause`, `issuer_status`."""
        return self.details.metadata

    @property
    def retry_after(self) -> float | None:
        """Seconds the hub asks the caller to wait (google.rpc.RetryInfo), else None."""
        return self.details.retry_after

    def __reduce__(self) -> tuple[type[VerifyFailed], tuple[ErrorDetails]]:
        return type(self), (self.details,)  # picklable despite the custom __init__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status.name}, {self.reason}, {self.message!r})"


# Bad input: the same request fails the same way again.
class InvalidSlipQRError(VerifyFailed):
    """INVALID_SLIP_QR: the QR text is not a slip QR; metadata `field` names the QR tag."""


class InvalidRequest(VerifyFailed):
    """INVALID_REQUEST: a request field is malformed (metadata `field`), or the request_id
    was used before with another slip."""


class InvalidSlipImage(VerifyFailed):
    """SLIP_IMAGE_*: the slip_image gives no single slip QR; `reason` says why: UNREADABLE
    (not PNG, JPEG or WebP), TOO_LARGE, NO_QR, NOT_A_SLIP (e.g. a payment QR) or
    SEVERAL_SLIPS."""


class ImageDecoderBusy(VerifyFailed):
    """SLIP_IMAGE_BUSY: the hub is reading as many slip images as it will; retry after
    `retry_after` seconds, or send the QR text."""

    retryable = True


# Not allowed: the caller's identity or membership.
class UnknownMember(VerifyFailed):
    """UNKNOWN_MEMBER: the caller is not a member (or named none)."""


class IdentityMismatch(VerifyFailed):
    """IDENTITY_MISMATCH: the header claims another member than the certificate."""


class MemberSuspended(VerifyFailed):
    """MEMBER_SUSPENDED: the caller is suspended."""


class MemberTerminated(VerifyFailed):
    """MEMBER_TERMINATED: the caller is terminated."""


class NotSubscribed(VerifyFailed):
    """NOT_SUBSCRIBED: the caller does not subscribe to slip verification as requester."""


# Not found.
class IssuerNotFound(VerifyFailed):
    """ISSUER_NOT_FOUND: the slip's sending bank is not a member (metadata `issuer`)."""


class IssuerNotSubscribed(VerifyFailed):
    """ISSUER_NOT_SUBSCRIBED: the sending bank is a member but does not answer inquiries."""


class SlipNotFound(VerifyFailed):
    """SLIP_NOT_FOUND: the issuer knows no such slip."""

    # Right after a transfer a slip can be briefly not yet visible at the
    # issuer; callers retry a not-found a few times with backoff (domain.md).
    # The hub does not remember failed requests, so a retry asks again.
    retryable = True


class SlipExpired(VerifyFailed):
    """SLIP_EXPIRED: the slip is older than the issuer's retention."""


class SlipPending(VerifyFailed):
    """SLIP_PENDING: the issuer knows the transfer but has not settled it yet; retry after
    `retry_after` seconds (when the issuer said)."""

    retryable = True


# Unavailable or too slow.
class IssuerUnavailable(VerifyFailed):
    """ISSUER_UNAVAILABLE: the issuer is unreachable, its circuit is open (metadata
    `cause` = `circuit_open`, with retry_after) or it is saturated (`cause` = `bulkhead`)."""

    retryable = True


class IssuerError(VerifyFailed):
    """ISSUER_ERROR: the issuer failed (metadata `issuer_status`) or answered about another slip."""


class IssuerTimeout(VerifyFailed):
    """ISSUER_TIMEOUT: the issuer did not answer within the deadline."""

    retryable = True


class RateLimited(VerifyFailed):
    """RATE_LIMITED: the caller is over its rate limit; retry_after says for how long."""

    retryable = True


class AuditUnavailable(VerifyFailed):
    """AUDIT_UNAVAILABLE: the hub could not record the verification, so did not answer."""

    retryable = True


class InternalError(VerifyFailed):
    """INTERNAL: a bug in the hub."""


# Without a txverify reason.
class HubUnavailable(VerifyFailed):
    """SHUTTING_DOWN (the hub is stopping and did not start the request), or UNAVAILABLE
    without a reason this client knows: the hub is down, draining or unreachable (nothing
    says the request was answered; the same request_id may be resent)."""

    retryable = True


class UnexpectedError(VerifyFailed):
    """Any other failure: a status without a reason this client knows (a deadline that
    expired on the client, RESOURCE_EXHAUSTED from gRPC itself, ...)."""


BY_REASON: Mapping[Reason, type[VerifyFailed]] = {
    Reason.INVALID_SLIP_QR: InvalidSlipQRError,
    Reason.INVALID_REQUEST: InvalidRequest,
    Reason.UNKNOWN_MEMBER: UnknownMember,
    Reason.IDENTITY_MISMATCH: IdentityMismatch,
    Reason.MEMBER_SUSPENDED: MemberSuspended,
    Reason.MEMBER_TERMINATED: MemberTerminated,
    Reason.NOT_SUBSCRIBED: NotSubscribed,
    Reason.ISSUER_NOT_FOUND: IssuerNotFound,
    Reason.ISSUER_NOT_SUBSCRIBED: IssuerNotSubscribed,
    Reason.SLIP_NOT_FOUND: SlipNotFound,
    Reason.SLIP_EXPIRED: SlipExpired,
    Reason.SLIP_PENDING: SlipPending,
    Reason.ISSUER_UNAVAILABLE: IssuerUnavailable,
    Reason.ISSUER_ERROR: IssuerError,
    Reason.ISSUER_TIMEOUT: IssuerTimeout,
    Reason.RATE_LIMITED: RateLimited,
    Reason.AUDIT_UNAVAILABLE: AuditUnavailable,
    Reason.INTERNAL: InternalError,
    Reason.SHUTTING_DOWN: HubUnavailable,
    Reason.SLIP_IMAGE_UNREADABLE: InvalidSlipImage,
    Reason.SLIP_IMAGE_TOO_LARGE: InvalidSlipImage,
    Reason.SLIP_IMAGE_NO_QR: InvalidSlipImage,
    Reason.SLIP_IMAGE_NOT_A_SLIP: InvalidSlipImage,
    Reason.SLIP_IMAGE_SEVERAL_SLIPS: InvalidSlipImage,
    Reason.SLIP_IMAGE_BUSY: ImageDecoderBusy,
}
_BY_NAME: Mapping[str, type[VerifyFailed]] = {r.value: cls for r, cls in BY_REASON.items()}


def error_from_details(details: ErrorDetails) -> VerifyFailed:
    """The exception for a failed Verify: by its reason, else by its gRPC status."""
    cls = _BY_NAME.get(details.reason)
    if cls is None:
        unavailable = details.status is grpc.StatusCode.UNAVAILABLE
        cls = HubUnavailable if unavailable else UnexpectedError
    return cls(details)
