"""Fuzz target: who is calling, from metadata, peer address and certificate names.

Input: lines. Line 1's first byte is flags (bit 0: mTLS, else dev mode); line 2
the peer as gRPC reports it ("ipv4:127.0.0.1:5000"); line 3 the certificate
common names, comma-separated (none when empty); every further line a metadata
entry "key:value". Text is decoded as gRPC Python decodes metadata (UTF-8, else
Latin-1) and keys ending in "-bin" keep bytes values, as gRPC delivers them.

txverify.hub.identity.identify must name a caller or refuse with ServiceError, and a
named caller goes on to admission (Admission.requester), which must admit it or
refuse with ServiceError too.
"""

from __future__ import annotations

from offline_hub import FakeContext, grpc_text, network
from txverify.errors import Reason, ServiceError
from txverify.hub.identity import MAX_CLAIM, IdentityMode, claimed_member, identify
from txverify.runtime.tls import is_loopback_host, is_loopback_peer
from txverify.wire import MEMBER_HEADER

_ADMISSION_REASONS = {
    Reason.UNKNOWN_MEMBER,
    Reason.IDENTITY_MISMATCH,
    Reason.MEMBER_SUSPENDED,
    Reason.MEMBER_TERMINATED,
    Reason.NOT_SUBSCRIBED,
    Reason.RATE_LIMITED,
}


def _check_refusal(error: ServiceError, reasons: set[Reason]) -> None:
    assert error.reason in reasons, f"{error.reason}: {error}"
    error.to_status().SerializeToString()  # what abort() sends must encode


def context_of(data: bytes) -> tuple[FakeContext, IdentityMode]:
    lines = data.split(b"\n")
    flags, peer, names = [*lines, b"", b""][:3]
    metadata: list[tuple[str, str | bytes]] = []
    for entry in lines[3:]:
        raw_key, _, raw_value = entry.partition(b":")
        key = grpc_text(raw_key)
        metadata.append((key, raw_value if key.endswith("-bin") else grpc_text(raw_value)))
    context = FakeContext(
        metadata=metadata,
        peer=grpc_text(peer),
        common_names=names.split(b",") if names else (),
    )
    return context, IdentityMode.TLS if flags[:1] and flags[0] & 1 else IdentityMode.DEV


def TestOneInput(data: bytes) -> None:
    """One fuzz input (the name atheris looks for)."""
    context, mode = context_of(data)
    peer = context.peer()
    loopback = is_loopback_peer(peer)
    is_loopback_host(peer.partition(":")[2])
    claimed = claimed_member(context.as_grpc())
    assert len(claimed) <= MAX_CLAIM
    assert claimed.isascii()
    assert claimed.isprintable()  # safe to log and to echo
    try:
        caller = identify(context.as_grpc(), mode)
    except ServiceError as error:
        _check_refusal(error, {Reason.UNKNOWN_MEMBER})
        return
    assert claimed == caller.claimed
    if mode is IdentityMode.DEV:
        assert loopback
        assert claimed
        assert caller.identity == claimed
        assert any(key == MEMBER_HEADER for key, _ in context.invocation_metadata())
    try:
        member = network().admission.requester(caller)
    except ServiceError as error:
        _check_refusal(error, _ADMISSION_REASONS)
        return
    assert member.identity == caller.identity
