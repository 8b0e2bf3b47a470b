"""MemberRegistry and AuditLog over gRPC: whatever an operator sends, a documented answer.

Every refusal is INVALID_ARGUMENT/INVALID_REQUEST (or the registry's own reasons)
with ErrorInfo and, for a bad field, a BadRequest violation naming it as the
request does (`member.rate_limit_rps`); never UNKNOWN, never a message that echoes
a huge value back (gRPC cannot send trailers over 16 KB: the caller would get
RESOURCE_EXHAUSTED with nothing to read). A hub without banks: no issuer is asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from conftest import member_channel
from txverify.errors import ErrorDetails, details_of
from txverify.hub.app import RunningHub, start_hub
from txverify.hub.registry import Member, with_default_roles
from txverify.hub.settings import HubSettings
from txverify.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    registry_pb2,
    registry_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    Registry: TypeAlias = registry_pb2_grpc.MemberRegistryAsyncStub

HUGE = "7" * 100_000  # far over what a status message can carry back


@pytest.fixture
async def hub() -> AsyncIterator[RunningHub]:
    member = with_default_roles(Member("002", name="Bangkok Bank"))
    running = await start_hub(HubSettings(port=0, members=(member,)))
    try:
        yield running
    finally:
        await running.stop(grace=0)


@pytest.fixture
async def registry(hub: RunningHub) -> AsyncIterator[Registry]:
    async with member_channel(hub.port, "operator") as channel:
        yield registry_pb2_grpc.MemberRegistryStub(channel)


async def _fail(call: Awaitable[Any]) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return details_of(caught.value)


def _refusal(error: ErrorDetails) -> tuple[grpc.StatusCode, str, tuple[str, ...]]:
    return error.status, error.reason, tuple(v.field for v in error.violations)


def _invalid(*fields: str) -> tuple[grpc.StatusCode, str, tuple[str, ...]]:
    return grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", fields


def _register(**fields: Any) -> registry_pb2.RegisterMemberRequest:
    return registry_pb2.RegisterMemberRequest(
        member=registry_pb2.Member(**{"code": "101", **fields})
    )


_BAD_RATES: list[tuple[dict[str, Any], str]] = [
    ({"rate_limit_rps": 1e-300}, "member.rate_limit_rps"),
    ({"rate_limit_rps": 0.0001}, "member.rate_limit_rps"),
    ({"rate_limit_rps": float("nan")}, "member.rate_limit_rps"),
    ({"rate_limit_rps": float("inf")}, "member.rate_limit_rps"),
    ({"rate_limit_rps": -1.0}, "member.rate_limit_rps"),
    ({"rate_limit_rps": 1e300}, "member.rate_limit_rps"),
    ({"rate_limit_burst": 1_000_001}, "member.rate_limit_burst"),
    ({"rate_limit_burst": 4_294_967_295}, "member.rate_limit_burst"),
]


async def test_register_with_a_rate_limit_out_of_range_is_invalid_request_naming_it(
    registry: Registry,
) -> None:
    answers = [
        await _fail(registry.RegisterMember(_register(**f), timeout=5)) for f, _ in _BAD_RATES
    ]

    assert [_invalid(field) for _, field in _BAD_RATES] == [_refusal(a) for a in answers]
    assert all("0.001-1,000,000" in a.message for a in answers[:-2])
    assert all("0-1,000,000" in a.message for a in answers[-2:])
    listed = await registry.ListMembers(registry_pb2.ListMembersRequest(), timeout=5)
    assert ["002"] == [m.code for m in listed.members]


async def test_update_to_a_rate_limit_out_of_range_is_invalid_request_naming_it(
    registry: Registry,
) -> None:
    mask = field_mask_pb2.FieldMask(paths=["rate_limit_rps", "rate_limit_burst"])

    answers = [
        await _fail(
            registry.UpdateMember(
                registry_pb2.UpdateMemberRequest(
                    code="002", member=registry_pb2.Member(**f), update_mask=mask
                ),
                timeout=5,
            )
        )
        for f, _ in _BAD_RATES
    ]

    assert [_invalid(field) for _, field in _BAD_RATES] == [_refusal(a) for a in answers]


async def test_the_slowest_rate_allowed_tells_a_member_when_to_retry(
    hub: RunningHub, registry: Registry
) -> None:
    # Item 3 of M10: at 1e-300/s the retry delay overflowed a Duration and Verify said UNKNOWN.
    await registry.RegisterMember(_register(rate_limit_rps=0.001, rate_limit_burst=1), timeout=5)
    async with member_channel(hub.port, "101") as channel:
        verify = verification_pb2_grpc.VerificationServiceStub(channel)
        first = await _fail(verify.Verify(verification_pb2.VerifyRequest(qr_text="x"), timeout=5))
        second = await _fail(verify.Verify(verification_pb2.VerifyRequest(qr_text="x"), timeout=5))

    assert "INVALID_SLIP_QR" == first.reason  # took the one token
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED") == (second.status, second.reason)
    assert second.retry_after is not None
    assert 999 < second.retry_after <= 1000


async def test_huge_values_are_refused_without_being_echoed(registry: Registry) -> None:
    # Each of these answered RESOURCE_EXHAUSTED "received metadata size exceeds hard
    # limit", with no ErrorInfo: the message quoted all 100,000 characters.
    got = await _fail(registry.GetMember(registry_pb2.GetMemberRequest(code=HUGE), timeout=5))
    answers = [
        await _fail(registry.RegisterMember(_register(code=HUGE), timeout=5)),
        await _fail(registry.RegisterMember(_register(issuer_endpoint=HUGE), timeout=5)),
        await _fail(registry.RegisterMember(_register(cert_identity=HUGE), timeout=5)),
        await _fail(
            registry.UpdateMember(
                registry_pb2.UpdateMemberRequest(
                    code="002", update_mask=field_mask_pb2.FieldMask(paths=[HUGE])
                ),
                timeout=5,
            )
        ),
    ]

    assert (grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND") == (got.status, got.reason)
    assert [
        _invalid("member.code"),
        _invalid("member.issuer_endpoint"),
        _invalid("member.cert_identity"),
        _invalid("update_mask"),
    ] == [_refusal(a) for a in answers]
    assert all(len(a.message) < 300 for a in [got, *answers])


async def test_an_unknown_kind_or_role_is_invalid_request_not_a_bank(registry: Registry) -> None:
    # An unknown kind was registered as a BANK without a word.
    kind = await _fail(registry.RegisterMember(_register(kind=77), timeout=5))
    roles = await _fail(
        registry.RegisterMember(
            registry_pb2.RegisterMemberRequest(
                member=registry_pb2.Member(code="101"),
                roles=[9],  # type: ignore[list-item]  # proto3 enums are open: any number arrives
            ),
            timeout=5,
        )
    )

    assert [_invalid("member.kind"), _invalid("roles")] == [_refusal(kind), _refusal(roles)]


async def test_an_unspecified_kind_is_a_bank(registry: Registry) -> None:
    reply = await registry.RegisterMember(_register(), timeout=5)

    assert common_pb2.MEMBER_KIND_BANK == reply.member.kind


async def test_a_bug_in_the_registry_is_internal_and_never_unknown(
    hub: RunningHub, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(code: str) -> Member:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(hub.membership, "get", broken)

    error = await _fail(registry.GetMember(registry_pb2.GetMemberRequest(code="002"), timeout=5))

    assert (grpc.StatusCode.INTERNAL, "INTERNAL", "6500") == (
        error.status,
        error.reason,
        error.code,
    )
    assert "simulated bug" not in error.message


async def test_a_bug_in_the_audit_log_is_internal_and_never_unknown(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(where: object) -> list[object]:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(hub.audit.store, "aquery", broken)
    async with member_channel(hub.port, "operator") as channel:
        stub = audit_pb2_grpc.AuditLogStub(channel)
        error = await _fail(stub.QueryAudit(audit_pb2.QueryAuditRequest(), timeout=5))

    assert (grpc.StatusCode.INTERNAL, "INTERNAL", "6500") == (
        error.status,
        error.reason,
        error.code,
    )
    assert "simulated bug" not in error.message


@pytest.mark.parametrize("identity", ["operator", "hub", "qa", "simulator", "Operator"])
async def test_a_member_cannot_take_the_name_of_one_of_the_hubs_own_certificates(
    registry: Registry, identity: str
) -> None:
    error = await _fail(registry.RegisterMember(_register(cert_identity=identity), timeout=5))

    assert _invalid("member.cert_identity") == _refusal(error)
