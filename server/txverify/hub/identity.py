"""Who is calling: the member code from an mTLS certificate, or in dev mode from a header."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import grpc

from txverify.errors import Reason, ServiceError
from txverify.runtime.tls import peer_identity, peer_is_loopback
from txverify.wire import MEMBER_HEADER

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
    claims = {
        value
        for key, value in context.invocation_metadata() or ()
        if key == MEMBER_HEADER and isinstance(value, str)
    }
    if len(claims) > 1:
        return f"<{len(claims)} different {MEMBER_HEADER} values>"
    claim = next(iter(claims), "")[:MAX_CLAIM]
    if claim.isascii() and claim.isprintable():
        return claim
    return claim.encode("unicode_escape").decode("ascii")[:MAX_CLAIM]


def identify(context: grpc.aio.ServicerContext[Any, Any], mode: IdentityMode) -> Caller:
    """The caller, or UNAUTHENTICATED/UNKNOWN_MEMBER when it cannot be told."""
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
