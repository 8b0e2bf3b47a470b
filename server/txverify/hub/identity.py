"""Who is calling: the member code from an mTLS certificate, or in dev mode from a header."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import grpc

from txverify.errors import Reason, ServiceError
from txverify.runtime.tls import peer_identity, peer_is_loopback
from txverify.wire import MEMBER_HEADER, TRACEPARENT_HEADER, TRACESTATE_HEADER

# Dev mode only: the caller names itself. Trusted only from loopback and
# logged as insecure at start-up. Under mTLS it may still be sent, and must
# then agree with the certificate.


class IdentityMode(StrEnum):
    """How the hub learns who calls."""

    DEV = "dev"  # x-member-id header, loopback callers only
    TLS = "tls"  # the common name of the verified client certificate


@dataclass(frozen=True, slots=True)
class Caller:
    """A caller as identified: `identity` is a certificate identity (or the header's value)."""

    identity: str
    claimed: str  # what x-member-id said, "" when absent


MAX_CLAIM = 64  # characters of the member header kept: a code is 3, "operator" 8


def claimed_member(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """What x-member-id says, "" when absent; safe to log and to echo.

    gRPC passes any bytes through (control characters, non-UTF-8 decoded as
    latin-1): a value that is not printable ASCII is kept escaped, so it names no
    member and cannot forge a log line; two different values name no one either.
    """
    return _claim(
        {
            value
            for key, value in context.invocation_metadata() or ()
            if key == MEMBER_HEADER and isinstance(value, str)
        }
    )


def verify_headers(
    context: grpc.aio.ServicerContext[Any, Any],
) -> tuple[str, str | None, str | None]:
    """What Verify reads of its metadata, in one pass: x-member-id as claimed_member
    gives it, and the raw traceparent and tracestate (None when absent).

    One pass rather than one per header: each invocation_metadata() builds the
    tuple anew (~1.2 µs over gRPC; over the JSON API a Metadata from the headers).
    Two different traceparents give "" (no valid trace); several tracestates are
    one list, joined with commas, as HTTP joins repeated headers.
    """
    claims: set[str] = set()
    traceparent = tracestate = None
    for key, value in context.invocation_metadata() or ():
        if not isinstance(value, str):  # a -bin header's bytes: none of these
            continue
        if key == MEMBER_HEADER:
            claims.add(value)
        elif key == TRACEPARENT_HEADER:
            traceparent = value if traceparent is None or traceparent == value else ""
        elif key == TRACESTATE_HEADER:
            tracestate = value if tracestate is None else f"{tracestate},{value}"
    return _claim(claims), traceparent, tracestate


def _claim(claims: set[str]) -> str:
    if len(claims) > 1:
        return f"<{len(claims)} different {MEMBER_HEADER} values>"
    claim = next(iter(claims), "")[:MAX_CLAIM]
    if claim.isascii() and claim.isprintable():
        return claim
    return claim.encode("unicode_escape").decode("ascii")[:MAX_CLAIM]


def identify(
    context: grpc.aio.ServicerContext[Any, Any], mode: IdentityMode, claimed: str | None = None
) -> Caller:
    """The caller, or UNAUTHENTICATED/UNKNOWN_MEMBER when it cannot be told (`claimed`:
    x-member-id as already read by verify_headers; None: read it here)."""
    if claimed is None:
        claimed = claimed_member(context)
    if mode is IdentityMode.TLS:
        identity = peer_identity(context)
        if identity is None:
            raise ServiceError(
                Reason.UNKNOWN_MEMBER, "no client certificate: this hub requires mTLS"
            )
        return Caller(identity, claimed)
    if not peer_is_loopback(context):
        raise ServiceError(
            Reason.UNKNOWN_MEMBER, "dev mode identifies loopback callers only; use mTLS"
        )
    if not claimed:
        raise ServiceError(
            Reason.UNKNOWN_MEMBER,
            f"dev mode: name your member code in the {MEMBER_HEADER} metadata header",
        )
    return Caller(claimed, claimed)


def readable_member(
    caller: Caller,
    asked: str,
    operators: frozenset[str],
    by_identity: Callable[[str], Any],
    what: str,
) -> str:
    """Whose `what` (audit records, usage) the caller may read: `asked` for an operator
    ("" = not named), else the caller's own member code (NOT_OPERATOR for another's)."""
    if caller.identity in operators:
        return asked
    member = by_identity(caller.identity)
    if member is None:
        raise ServiceError(Reason.UNKNOWN_MEMBER, "not a member of the service")
    if asked and asked != member.code:
        raise ServiceError(Reason.NOT_OPERATOR, f"a member may read only its own {what}")
    code: str = member.code
    return code
