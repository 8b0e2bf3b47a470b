"""The client library: error classes, retries, sync (grpcio-testing) and asyncio (real hub)."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc_testing
import pytest

from conftest import impostor_hub, loopback_member_pki
from txverify import miniqr
from txverify.client import (
    MAX_BACKOFF,
    AsyncTxVerifyClient,
    SlipQuery,
    TxVerifyClient,
    retry_delay,
)
from txverify.client.errors import (
    BY_REASON,
    AuditUnavailable,
    HubUnavailable,
    ImageDecoderBusy,
    IssuerTimeout,
    IssuerUnavailable,
    RateLimited,
    SlipExpired,
    SlipNotFound,
    SlipPending,
    UnexpectedError,
    UnknownMember,
    VerifyFailed,
    error_from_details,
)
from txverify.errors import REASONS, ErrorDetails, Reason, ServiceError
from txverify.hub.app import RunningHub
from txverify.runtime import tls
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.ledger import LedgerTransaction, TxStatus
from txverify.simulators.server import RunningSimulator
from txverify.v1 import common_pb2, simulator_pb2, simulator_pb2_grpc, verification_pb2

T = TypeVar("T")
SERVICE = verification_pb2.DESCRIPTOR.services_by_name["VerificationService"]
VERIFY = SERVICE.methods_by_name["Verify"]
WAIT = 5.0  # seconds: the bound on every cross-thread wait, so a broken test fails, not hangs
QUERY = SlipQuery(sending_bank="014", trans_ref="20261127014ABCDEFGHIJ")

# --- sync client over grpcio-testing -------------------------------------------------------
#
# The testing channel answers nothing by itself: the client's call blocks until the test
# takes the RPC and terminates it, and taking blocks until the client has called. So the
# client runs in a daemon thread and every wait on either side is bounded by WAIT.


def _in_thread(call: Callable[[], T]) -> Future[T]:
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


Taken = tuple[Any, verification_pb2.VerifyRequest, Any]  # invocation metadata, request, rpc


def _take(channel: Any) -> Taken:
    """The client's next Verify RPC."""
    taken: Taken = _in_thread(lambda: channel.take_unary_unary(VERIFY)).result(timeout=WAIT)
    return taken


def _fail(rpc: Any, error: ServiceError) -> None:
    rpc.terminate(None, error.trailing_metadata(), error.status_code, error.message)


def _answer(rpc: Any, request: verification_pb2.VerifyRequest) -> verification_pb2.VerifyResponse:
    response = verification_pb2.VerifyResponse(request_id=request.request_id)
    rpc.terminate(response, (), grpc.StatusCode.OK, "")
    return response


@pytest.fixture
def channel() -> Any:
    return grpc_testing.channel(
        SERVICE.file.services_by_name.values(), grpc_testing.strict_real_time()
    )


@pytest.fixture
def client(channel: Any) -> Iterator[TxVerifyClient]:
    with TxVerifyClient(member="002", channel=channel) as verifying:
        yield verifying


def _error_of(client: TxVerifyClient, error: ServiceError | None, channel: Any) -> VerifyFailed:
    """What verify raises when the hub answers `error` (None: a bare UNAVAILABLE)."""
    verifying = _in_thread(lambda: client.verify(QUERY))
    _, _, rpc = _take(channel)
    if error is None:
        rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "connection refused")
    else:
        _fail(rpc, error)
    raised = verifying.exception(timeout=WAIT)
    assert isinstance(raised, VerifyFailed)
    return raised


@pytest.mark.parametrize(("reason", "cls"), BY_REASON.items(), ids=lambda r: str(r))
def test_each_reason_raises_its_class_with_status_reason_and_code(
    client: TxVerifyClient, channel: Any, reason: Reason, cls: type[VerifyFailed]
) -> None:
    raised = _error_of(client, ServiceError(reason, "it failed"), channel)

    assert (cls, REASONS[reason].status, reason.value, REASONS[reason].code) == (
        type(raised),
        raised.status,
        raised.reason,
        raised.code,
    )


def test_error_carries_the_message_and_metadata(client: TxVerifyClient, channel: Any) -> None:
    hub_error = ServiceError(
        Reason.ISSUER_NOT_FOUND, "011 is not a member", metadata={"issuer": "011"}
    )

    raised = _error_of(client, hub_error, channel)

    assert ("011 is not a member", {"issuer": "011", "code": "6501"}) == (
        raised.message,
        dict(raised.metadata),
    )


def test_retry_info_gives_retry_after(client: TxVerifyClient, channel: Any) -> None:
    raised = _error_of(
        client, ServiceError(Reason.RATE_LIMITED, "slow down", retry_after=1.5), channel
    )

    assert 1.5 == raised.retry_after


def test_error_without_retry_info_has_no_retry_after(client: TxVerifyClient, channel: Any) -> None:
    raised = _error_of(client, ServiceError(Reason.SLIP_NOT_FOUND, "no such slip"), channel)

    assert raised.retry_after is None


def test_unavailable_without_a_reason_is_hub_unavailable_and_retryable(
    client: TxVerifyClient, channel: Any
) -> None:
    raised = _error_of(client, None, channel)

    assert (HubUnavailable, "UNAVAILABLE", True) == (type(raised), raised.reason, raised.retryable)


def test_status_without_a_reason_is_unexpected_and_not_retryable() -> None:
    details = ErrorDetails(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent RPCs")

    raised = error_from_details(details)

    assert (UnexpectedError, "RESOURCE_EXHAUSTED", False) == (
        type(raised),
        raised.reason,
        raised.retryable,
    )


def test_only_transient_failures_are_retryable() -> None:
    classes: set[type[VerifyFailed]] = {*BY_REASON.values(), HubUnavailable, UnexpectedError}

    retryable = {cls for cls in classes if cls.retryable}

    assert {
        IssuerUnavailable,
        IssuerTimeout,
        RateLimited,
        AuditUnavailable,
        SlipNotFound,
        SlipPending,
        HubUnavailable,
        ImageDecoderBusy,
    } == retryable


def test_error_survives_pickling() -> None:
    error = error_from_details(
        ErrorDetails(grpc.StatusCode.NOT_FOUND, "gone", "SLIP_EXPIRED", "8404")
    )

    copy = pickle.loads(pickle.dumps(error))

    assert (SlipExpired, error.details) == (type(copy), copy.details)


def test_client_sends_the_member_header(client: TxVerifyClient, channel: Any) -> None:
    verifying = _in_thread(lambda: client.verify(QUERY))
    metadata, request, rpc = _take(channel)
    _answer(rpc, request)
    verifying.result(timeout=WAIT)

    assert ("x-member-id", "002") in metadata


def test_client_sends_the_given_request_id_and_reference(
    client: TxVerifyClient, channel: Any
) -> None:
    verifying = _in_thread(lambda: client.verify(QUERY, request_id="pos-1", reference="shop-1"))
    _, request, rpc = _take(channel)
    _answer(rpc, request)
    verifying.result(timeout=WAIT)

    assert ("pos-1", "shop-1") == (request.request_id, request.requester_reference)


def test_client_makes_a_request_id_when_none_is_given(client: TxVerifyClient, channel: Any) -> None:
    verifying = _in_thread(lambda: client.verify(QUERY))
    _, request, rpc = _take(channel)
    _answer(rpc, request)
    verifying.result(timeout=WAIT)

    assert 32 == len(request.request_id)


def test_retryable_failure_is_retried_with_the_same_request_id(channel: Any) -> None:
    client = TxVerifyClient(member="002", channel=channel, retries=2, backoff=0.0)
    verifying = _in_thread(lambda: client.verify(QUERY))
    _, first, rpc = _take(channel)
    _fail(rpc, ServiceError(Reason.ISSUER_UNAVAILABLE, "issuer 014 is unreachable"))
    _, second, rpc = _take(channel)
    answer = _answer(rpc, second)

    assert answer == verifying.result(timeout=WAIT)
    assert first.request_id == second.request_id


def test_non_retryable_failure_is_raised_at_once(channel: Any) -> None:
    client = TxVerifyClient(member="002", channel=channel, retries=3, backoff=0.0)
    verifying = _in_thread(lambda: client.verify(QUERY))
    _, _, rpc = _take(channel)
    _fail(rpc, ServiceError(Reason.SLIP_EXPIRED, "too old"))

    # verify has returned after one RPC: a retry would block on the testing channel.
    assert SlipExpired is type(verifying.exception(timeout=WAIT))


def test_no_retry_by_default(client: TxVerifyClient, channel: Any) -> None:
    raised = _error_of(client, ServiceError(Reason.ISSUER_UNAVAILABLE, "unreachable"), channel)

    assert IssuerUnavailable is type(raised)


def test_retries_exhausted_raise_the_last_failure(channel: Any) -> None:
    client = TxVerifyClient(member="002", channel=channel, retries=2, backoff=0.0)
    verifying = _in_thread(lambda: client.verify(QUERY))
    request_ids = []
    for reason in (Reason.ISSUER_UNAVAILABLE, Reason.ISSUER_TIMEOUT, Reason.AUDIT_UNAVAILABLE):
        _, request, rpc = _take(channel)
        request_ids.append(request.request_id)
        _fail(rpc, ServiceError(reason, "failed"))

    assert AuditUnavailable is type(verifying.exception(timeout=WAIT))
    assert 1 == len(set(request_ids))


def test_retry_waits_at_least_what_retry_info_asks(channel: Any) -> None:
    client = TxVerifyClient(member="002", channel=channel, retries=1, backoff=0.0)
    verifying = _in_thread(lambda: client.verify(QUERY))
    _, _, rpc = _take(channel)
    _fail(rpc, ServiceError(Reason.RATE_LIMITED, "slow down", retry_after=0.3))
    failed_at = time.monotonic()
    _, request, rpc = _take(channel)
    waited = time.monotonic() - failed_at
    _answer(rpc, request)
    verifying.result(timeout=WAIT)

    assert waited >= 0.3


def test_negative_retries_are_refused(channel: Any) -> None:
    with pytest.raises(ValueError, match="retries"):
        TxVerifyClient(channel=channel, retries=-1)


# --- the retry schedule ----------------------------------------------------------------------


@pytest.mark.parametrize("retried", [0, 1, 2, 3])
def test_retry_delay_doubles_within_the_jitter(retried: int) -> None:
    base = 0.2 * 2**retried

    delay = retry_delay(retried, 0.2)

    assert 0.8 * base <= delay <= 1.2 * base


def test_retry_delay_is_capped() -> None:
    delay = retry_delay(30, 0.2)

    assert delay <= 1.2 * MAX_BACKOFF


def test_retry_delay_is_never_less_than_retry_after() -> None:
    delay = retry_delay(0, 0.2, retry_after=5.0)

    assert 5.0 == delay


# --- asyncio client against a real hub ------------------------------------------------------


def _seeded(sim: RunningSimulator, code: str) -> LedgerTransaction:
    """A seeded transfer an inquiry finds: visible and completed."""
    bank = sim.nodes[code].bank
    for slip in bank.list_slips(100, None):
        tx = slip.transaction
        if bank.visibility(tx) is SlipVisibility.VISIBLE and tx.status is TxStatus.COMPLETED:
            return tx
    raise AssertionError(f"no visible seeded slip at {code}")


def _async_client(hub: RunningHub, **options: Any) -> AsyncTxVerifyClient:
    return AsyncTxVerifyClient(f"127.0.0.1:{hub.port}", member="002", timeout=WAIT, **options)


async def test_async_verify_returns_the_transaction(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    raw = _seeded(simulator, "014")

    async with _async_client(hub) as client:
        response = await client.verify(SlipQuery(qr_text=miniqr.build("014", raw.trans_ref)))

    assert (raw.trans_ref, "014") == (
        response.transaction.trans_ref,
        response.transaction.sending_bank,
    )


async def test_async_unknown_ref_raises_slip_not_found(hub: RunningHub) -> None:
    async with _async_client(hub) as client:
        with pytest.raises(SlipNotFound) as caught:
            await client.verify(SlipQuery(sending_bank="014", trans_ref="20991231014NoSuchRef"))

    assert (grpc.StatusCode.NOT_FOUND, "8404") == (caught.value.status, caught.value.code)


async def test_async_stopped_issuer_raises_retryable_issuer_unavailable(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    raw = _seeded(simulator, "014")
    await simulator.nodes["014"].close()

    async with _async_client(hub) as client:
        with pytest.raises(IssuerUnavailable) as caught:
            await client.verify(SlipQuery(sending_bank="014", trans_ref=raw.trans_ref))

    assert (True, "014") == (caught.value.retryable, caught.value.metadata["issuer"])


async def test_async_caller_without_a_member_code_raises_unknown_member(hub: RunningHub) -> None:
    async with AsyncTxVerifyClient(f"127.0.0.1:{hub.port}", timeout=WAIT) as client:
        with pytest.raises(UnknownMember):
            await client.verify(QUERY)


async def test_async_retry_finds_a_new_slip_once_the_issuer_shows_it(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    async with grpc.aio.insecure_channel(simulator.control_address) as control_channel:
        control = simulator_pb2_grpc.BankSimulatorStub(control_channel)
        await control.SetFaults(
            simulator_pb2.SetFaultsRequest(
                bank="014", faults=simulator_pb2.Faults(visibility_delay_ms=300)
            ),
            timeout=WAIT,
        )
        transfer = simulator_pb2.TransferRequest(
            bank="014",
            to_bank="011",
            amount_satang=15_000,
            to_proxy=common_pb2.Proxy(type=common_pb2.PROXY_TYPE_MSISDN, value="0812345678"),
        )
        slip = await control.Transfer(transfer, timeout=WAIT)

    async with _async_client(hub, retries=8, backoff=0.05) as client:
        response = await client.verify(SlipQuery(qr_text=slip.qr_text), request_id="pos-7")

    assert (slip.transaction.trans_ref, "pos-7") == (
        response.transaction.trans_ref,
        response.request_id,
    )


async def test_sync_client_verifies_through_a_real_hub(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    raw = _seeded(simulator, "002")
    query = SlipQuery(sending_bank="002", trans_ref=raw.trans_ref)

    def verify() -> verification_pb2.VerifyResponse:
        with TxVerifyClient(f"127.0.0.1:{hub.port}", member="002", timeout=WAIT) as client:
            return client.verify(query)

    response = await asyncio.to_thread(verify)  # the hub runs on this test's event loop

    assert raw.trans_ref == response.transaction.trans_ref


# --- whom the client talks to under mTLS -------------------------------------------------
#
# Every member certificate is valid for its holder's name; the client must accept only
# the hub's (hub.txverify), whatever address it dials. Member certificates issued before
# M10 also carry localhost and 127.0.0.1, so a member's server on loopback passed as a hub.


@pytest.fixture
def member_pki(tmp_path: Path) -> tls.Pki:
    return tls.init_dev_pki(tmp_path / "certs", ["002", "014"])


def _impostor_pki(kind: str, pki: tls.Pki, tmp_path: Path) -> tls.Pki:
    return loopback_member_pki(pki, "014", tmp_path / "old") if kind == "loopback names" else pki


@pytest.mark.parametrize("kind", ["as issued now", "loopback names"])
def test_client_refuses_a_hub_presenting_a_member_certificate(
    member_pki: tls.Pki, tmp_path: Path, kind: str
) -> None:
    with impostor_hub(_impostor_pki(kind, member_pki, tmp_path), "014") as fake:
        hub = f"127.0.0.1:{fake.port}"
        client = TxVerifyClient(hub, member="002", certs=member_pki.directory, timeout=WAIT)
        with client, pytest.raises(HubUnavailable) as caught:
            client.verify(QUERY)

    assert [] == fake.calls  # no request ever reached it, so no answer could be taken
    assert tls.HUB_DNS in caught.value.message


async def test_async_client_refuses_a_hub_presenting_a_member_certificate(
    member_pki: tls.Pki, tmp_path: Path
) -> None:
    with impostor_hub(_impostor_pki("loopback names", member_pki, tmp_path), "014") as fake:
        async with AsyncTxVerifyClient(
            f"localhost:{fake.port}", member="002", certs=member_pki.directory, timeout=WAIT
        ) as client:
            with pytest.raises(HubUnavailable) as caught:
                await client.verify(QUERY)

    assert [] == fake.calls
    assert tls.HUB_DNS in caught.value.message
