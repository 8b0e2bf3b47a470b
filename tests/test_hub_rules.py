"""The hub as a clearing point: every row of the error table from a real request,
membership changes applied to the next request, and forwarding that one bad issuer
cannot spread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import member_channel
from txverify import miniqr
from txverify.errors import ErrorDetails, details_of
from txverify.hub.app import RunningHub
from txverify.hub.registry import Member
from txverify.hub.resilience.breaker import BreakerSettings
from txverify.hub.resilience.ratelimit import RateLimit
from txverify.hub.settings import HubSettings
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.server import RunningSimulator
from txverify.v1 import (
    registry_pb2,
    registry_pb2_grpc,
    simulator_pb2,
    verification_pb2,
    verification_pb2_grpc,
)
from txverify.wire import issuer_health_name

if TYPE_CHECKING:
    from typing import TypeAlias

    from txverify.v1.simulator_pb2_grpc import BankSimulatorAsyncStub

    Verifier: TypeAlias = verification_pb2_grpc.VerificationServiceAsyncStub
    Registry: TypeAlias = registry_pb2_grpc.MemberRegistryAsyncStub

HubFactory = Callable[..., Awaitable[RunningHub]]


def _visible_qr(
    sim: RunningSimulator, code: str, state: SlipVisibility = SlipVisibility.VISIBLE
) -> str:
    bank = sim.nodes[code].bank
    for slip in bank.list_slips(1000, None):
        if bank.visibility(slip.transaction) is state:
            return slip.qr_text
    raise AssertionError(f"no {state} slip at {code}")


async def _fail(call: Awaitable[Any]) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return details_of(caught.value)


def _row(error: ErrorDetails) -> tuple[grpc.StatusCode, str, str]:
    return error.status, error.reason, error.code


async def _verify(port: int, qr: str, member: str = "002", deadline: float = 5) -> Any:
    async with member_channel(port, member) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        return await stub.Verify(verification_pb2.VerifyRequest(qr_text=qr), timeout=deadline)


@pytest.fixture
async def registry(hub: RunningHub) -> AsyncIterator[Registry]:
    async with member_channel(hub.port, "operator") as channel:
        yield registry_pb2_grpc.MemberRegistryStub(channel)


# --- identity and membership -----------------------------------------------------------


async def test_unknown_caller_is_unauthenticated_unknown_member(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    error = await _fail(_verify(hub.port, _visible_qr(simulator, "014"), member="777"))

    assert (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_MEMBER", "6421") == _row(error)


async def test_caller_without_identity_is_unauthenticated(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        error = await _fail(
            stub.Verify(
                verification_pb2.VerifyRequest(qr_text=_visible_qr(simulator, "014")), timeout=5
            )
        )

    assert (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_MEMBER") == (error.status, error.reason)


async def test_suspended_requester_is_refused_until_resumed(
    hub: RunningHub, simulator: RunningSimulator, registry: Registry
) -> None:
    qr = _visible_qr(simulator, "014")

    await registry.SetMemberStatus(
        registry_pb2.SetMemberStatusRequest(
            code="002", status=registry_pb2.MEMBER_STATUS_SUSPENDED, reason="audit"
        ),
        timeout=5,
    )
    refused = await _fail(_verify(hub.port, qr))
    await registry.SetMemberStatus(
        registry_pb2.SetMemberStatusRequest(code="002", status=registry_pb2.MEMBER_STATUS_ACTIVE),
        timeout=5,
    )
    answered = await _verify(hub.port, qr)

    assert (grpc.StatusCode.PERMISSION_DENIED, "MEMBER_SUSPENDED", "6403") == _row(refused)
    assert miniqr.parse(qr).trans_ref == answered.transaction.trans_ref


async def test_requester_not_subscribed_is_permission_denied(
    hub: RunningHub, simulator: RunningSimulator, registry: Registry
) -> None:
    await registry.Unsubscribe(
        registry_pb2.UnsubscribeRequest(code="002", role=registry_pb2.ROLE_REQUESTER), timeout=5
    )

    error = await _fail(_verify(hub.port, _visible_qr(simulator, "014")))

    assert (grpc.StatusCode.PERMISSION_DENIED, "NOT_SUBSCRIBED", "6403") == _row(error)


async def test_terminated_member_stays_out_until_registered_again(
    hub: RunningHub, simulator: RunningSimulator, registry: Registry
) -> None:
    qr = _visible_qr(simulator, "014")
    await registry.SetMemberStatus(
        registry_pb2.SetMemberStatusRequest(
            code="002", status=registry_pb2.MEMBER_STATUS_TERMINATED
        ),
        timeout=5,
    )

    refused = await _fail(_verify(hub.port, qr))
    resume = await _fail(
        registry.SetMemberStatus(
            registry_pb2.SetMemberStatusRequest(
                code="002", status=registry_pb2.MEMBER_STATUS_ACTIVE
            ),
            timeout=5,
        )
    )
    await registry.RegisterMember(
        registry_pb2.RegisterMemberRequest(member=registry_pb2.Member(code="002", name="BBL")),
        timeout=5,
    )
    answered = await _verify(hub.port, qr)
    history = await registry.GetMember(
        registry_pb2.GetMemberRequest(code="002", include_history=True), timeout=5
    )

    assert (grpc.StatusCode.PERMISSION_DENIED, "MEMBER_TERMINATED") == (
        refused.status,
        refused.reason,
    )
    assert (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION") == (
        resume.status,
        resume.reason,
    )
    assert miniqr.parse(qr).trans_ref == answered.transaction.trans_ref
    assert ["REGISTER", "STATUS", "REGISTER_AGAIN"] == [c.action for c in history.history]


async def test_issuer_not_subscribed_is_not_found_issuer_not_subscribed(
    hub: RunningHub, simulator: RunningSimulator, registry: Registry
) -> None:
    await registry.Unsubscribe(
        registry_pb2.UnsubscribeRequest(code="014", role=registry_pb2.ROLE_ISSUER), timeout=5
    )

    error = await _fail(_verify(hub.port, _visible_qr(simulator, "014")))

    assert (grpc.StatusCode.NOT_FOUND, "ISSUER_NOT_SUBSCRIBED", "6501") == _row(error)


async def test_terminated_issuer_is_not_found_issuer_not_found(
    hub: RunningHub, simulator: RunningSimulator, registry: Registry
) -> None:
    await registry.SetMemberStatus(
        registry_pb2.SetMemberStatusRequest(
            code="014", status=registry_pb2.MEMBER_STATUS_TERMINATED
        ),
        timeout=5,
    )

    error = await _fail(_verify(hub.port, _visible_qr(simulator, "014")))

    assert (grpc.StatusCode.NOT_FOUND, "ISSUER_NOT_FOUND", "6501") == _row(error)


async def test_expired_slip_is_not_found_slip_expired(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr = _visible_qr(simulator, "014", SlipVisibility.EXPIRED)

    error = await _fail(_verify(hub.port, qr))

    assert (grpc.StatusCode.NOT_FOUND, "SLIP_EXPIRED", "8404") == _row(error)


async def test_endpoint_change_applies_to_the_next_request(
    hub: RunningHub, simulator: RunningSimulator, registry: Registry
) -> None:
    qr = _visible_qr(simulator, "014")
    good = simulator.nodes["014"].address

    async def move(endpoint: str) -> None:
        await registry.UpdateMember(
            registry_pb2.UpdateMemberRequest(
                code="014",
                member=registry_pb2.Member(issuer_endpoint=endpoint),
                update_mask=field_mask_pb2.FieldMask(paths=["issuer_endpoint"]),
            ),
            timeout=5,
        )

    await move("127.0.0.1:1")  # nothing listens on port 1
    moved = await _fail(_verify(hub.port, qr))
    await move(good)
    back = await _verify(hub.port, qr)

    assert (grpc.StatusCode.UNAVAILABLE, "ISSUER_UNAVAILABLE") == (moved.status, moved.reason)
    assert miniqr.parse(qr).trans_ref == back.transaction.trans_ref


async def test_member_cannot_use_the_registry(hub: RunningHub) -> None:
    async with member_channel(hub.port, "002") as channel:
        stub = registry_pb2_grpc.MemberRegistryStub(channel)
        error = await _fail(stub.ListMembers(registry_pb2.ListMembersRequest(), timeout=5))

    assert (grpc.StatusCode.PERMISSION_DENIED, "NOT_OPERATOR") == (error.status, error.reason)


async def test_registry_errors_name_their_reason(registry: Registry) -> None:
    missing = await _fail(registry.GetMember(registry_pb2.GetMemberRequest(code="777"), timeout=5))
    exists = await _fail(
        registry.RegisterMember(
            registry_pb2.RegisterMemberRequest(member=registry_pb2.Member(code="002", name="x")),
            timeout=5,
        )
    )
    bad = await _fail(
        registry.RegisterMember(
            registry_pb2.RegisterMemberRequest(member=registry_pb2.Member(code="12", name="x")),
            timeout=5,
        )
    )
    no_mask = await _fail(
        registry.UpdateMember(registry_pb2.UpdateMemberRequest(code="002"), timeout=5)
    )

    assert [
        (grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND"),
        (grpc.StatusCode.ALREADY_EXISTS, "MEMBER_EXISTS"),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"),
    ] == [(e.status, e.reason) for e in (missing, exists, bad, no_mask)]


# --- rate limits, limits, bugs ----------------------------------------------------------


async def test_member_over_its_rate_limit_is_resource_exhausted_with_retry_info(
    hub_factory: HubFactory, simulator: RunningSimulator
) -> None:
    hub = await hub_factory(rate_limit=RateLimit(rate=1.0, burst=2))
    qr = _visible_qr(simulator, "014")

    await _verify(hub.port, qr)
    await _verify(hub.port, qr)
    error = await _fail(_verify(hub.port, qr))
    other_member = await _verify(hub.port, qr, member="014")

    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED") == (error.status, error.reason)
    assert error.retry_after is not None
    assert 0 < error.retry_after <= 1.0
    assert other_member.transaction.trans_ref == miniqr.parse(qr).trans_ref


async def test_a_bug_is_internal_and_never_unknown(
    hub: RunningHub, simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(hub.gateway, "inquire", broken)

    error = await _fail(_verify(hub.port, _visible_qr(simulator, "014")))

    assert (grpc.StatusCode.INTERNAL, "INTERNAL", "6500") == _row(error)
    assert "simulated bug" not in error.message


async def test_oversize_request_is_refused_by_size_not_internal(hub: RunningHub) -> None:
    # Over what the hub reads at all (twice a slip image's cap): gRPC refuses it unread.
    error = await _fail(_verify(hub.port, "0" * (5 << 20)))

    assert grpc.StatusCode.RESOURCE_EXHAUSTED == error.status


def test_dev_mode_refuses_to_listen_beyond_loopback() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        HubSettings(host="0.0.0.0", members=(Member("002"),))


async def test_health_and_reflection_list_the_hub_services(hub: RunningHub) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        states = [
            (await health.Check(health_pb2.HealthCheckRequest(service=s), timeout=5)).status
            for s in ("", "txverify.v1.VerificationService", "txverify.v1.MemberRegistry")
        ]
        reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
        listed: list[str] = []
        async for reply in reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            listed += [s.name for s in reply.list_services_response.service]

    assert [health_pb2.HealthCheckResponse.SERVING] * 3 == states
    assert {"txverify.v1.VerificationService", "txverify.v1.MemberRegistry"} <= set(listed)


# --- one bad issuer ---------------------------------------------------------------------


async def _set_faults(control: BankSimulatorAsyncStub, bank: str, **faults: Any) -> None:
    await control.SetFaults(
        simulator_pb2.SetFaultsRequest(bank=bank, faults=simulator_pb2.Faults(**faults)), timeout=5
    )


async def test_hanging_issuer_opens_its_circuit_while_others_stay_fast(
    hub_factory: HubFactory,
    simulator: RunningSimulator,
    control: BankSimulatorAsyncStub,
) -> None:
    hub = await hub_factory(
        issuer_timeout=0.3,
        breaker=BreakerSettings(failure_threshold=3, cooldown=1.0, failing_seconds=0.0),
    )
    bad, good = _visible_qr(simulator, "014"), _visible_qr(simulator, "002")
    await _set_faults(control, "014", hang=True)

    timeouts = [await _fail(_verify(hub.port, bad)) for _ in range(3)]
    started = time.perf_counter()
    fast = await _fail(_verify(hub.port, bad))
    fail_fast = time.perf_counter() - started
    healthy_latencies = []
    for _ in range(20):
        started = time.perf_counter()
        await _verify(hub.port, good)
        healthy_latencies.append(time.perf_counter() - started)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        circuit = await health.Check(
            health_pb2.HealthCheckRequest(service=issuer_health_name("014")), timeout=5
        )

    assert [("ISSUER_TIMEOUT", grpc.StatusCode.DEADLINE_EXCEEDED)] * 3 == [
        (e.reason, e.status) for e in timeouts
    ]
    assert ("ISSUER_UNAVAILABLE", "circuit_open") == (fast.reason, fast.metadata["cause"])
    assert fail_fast < 0.1
    assert sorted(healthy_latencies)[len(healthy_latencies) // 2] < 0.1
    assert health_pb2.HealthCheckResponse.NOT_SERVING == circuit.status


async def test_open_circuit_closes_after_the_issuer_recovers(
    hub_factory: HubFactory,
    simulator: RunningSimulator,
    control: BankSimulatorAsyncStub,
) -> None:
    hub = await hub_factory(
        breaker=BreakerSettings(failure_threshold=2, cooldown=0.5, failing_seconds=0.0)
    )
    qr = _visible_qr(simulator, "014")
    await _set_faults(control, "014", error_rate=1.0)
    for _ in range(2):
        await _fail(_verify(hub.port, qr))
    opened = hub.gateway.circuit_state("014")

    await _set_faults(control, "014")
    await asyncio.sleep(0.6)
    answered = await _verify(hub.port, qr)

    assert ("OPEN", "CLOSED") == (str(opened), str(hub.gateway.circuit_state("014")))
    assert miniqr.parse(qr).trans_ref == answered.transaction.trans_ref


async def test_bulkhead_fails_excess_inquiries_at_once(
    hub_factory: HubFactory,
    simulator: RunningSimulator,
    control: BankSimulatorAsyncStub,
) -> None:
    hub = await hub_factory(max_in_flight_per_issuer=2)
    qr = _visible_qr(simulator, "014")
    await _set_faults(control, "014", latency_ms=500)

    results = await asyncio.gather(
        *(_verify(hub.port, qr) for _ in range(5)), return_exceptions=True
    )

    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [details_of(r) for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert 2 == len(ok)
    assert [("ISSUER_UNAVAILABLE", "bulkhead")] * 3 == [
        (e.reason, e.metadata["cause"]) for e in refused
    ]
