"""A network under mutual TLS: identity comes from certificates, on both legs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import logged, members_of, personal_data, secrets_of
from google.protobuf import field_mask_pb2

from server.app import HubSettings, RunningHub, start_hub
from server.identity import IdentityMode
from simulators.bank import SlipVisibility
from simulators.server import RunningSimulator, SimulatorSettings, start_simulator
from txverify import miniqr, tls
from txverify.errors import ErrorDetails, details_of
from txverify.v1 import (
    common_pb2,
    issuer_pb2,
    issuer_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

CODES = ("002", "014")


@pytest.fixture
def pki(tmp_path: Path) -> tls.Pki:
    return tls.init_dev_pki(tmp_path / "certs", CODES)


@pytest.fixture
async def secure_sim(pki: tls.Pki) -> AsyncIterator[RunningSimulator]:
    sim = await start_simulator(SimulatorSettings(codes=CODES, transactions=30, pki=pki.directory))
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def secure_hub(pki: tls.Pki, secure_sim: RunningSimulator) -> AsyncIterator[RunningHub]:
    hub = await start_hub(
        HubSettings(
            port=0, members=members_of(secure_sim), mode=IdentityMode.TLS, pki=pki.directory
        )
    )
    try:
        yield hub
    finally:
        await hub.stop(grace=0)


def _qr(sim: RunningSimulator, code: str) -> str:
    bank = sim.nodes[code].bank
    return next(
        s.qr_text
        for s in bank.list_slips(100, None)
        if bank.visibility(s.transaction) is SlipVisibility.VISIBLE
    )


def _channel(port: int, pki: tls.Pki, name: str) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", tls.channel_credentials(pki, name))


async def _verify(channel: grpc.aio.Channel, qr: str, *, claim: str = "") -> Any:
    stub = verification_pb2_grpc.VerificationServiceStub(channel)
    metadata = (("x-member-id", claim),) if claim else ()
    return await stub.Verify(
        verification_pb2.VerifyRequest(qr_text=qr), timeout=5, metadata=metadata
    )


async def _fail(call: Any) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return details_of(caught.value)


async def test_member_with_its_certificate_verifies_through_both_tls_legs(
    secure_hub: RunningHub, secure_sim: RunningSimulator, pki: tls.Pki
) -> None:
    qr = _qr(secure_sim, "014")

    async with _channel(secure_hub.port, pki, "002") as channel:
        response = await _verify(channel, qr)

    assert miniqr.parse(qr).trans_ref == response.transaction.trans_ref


async def test_request_claiming_another_member_is_refused(
    secure_hub: RunningHub, secure_sim: RunningSimulator, pki: tls.Pki
) -> None:
    async with _channel(secure_hub.port, pki, "002") as channel:
        error = await _fail(_verify(channel, _qr(secure_sim, "014"), claim="014"))

    assert (grpc.StatusCode.UNAUTHENTICATED, "IDENTITY_MISMATCH") == (error.status, error.reason)


async def test_client_from_another_ca_cannot_connect(
    secure_hub: RunningHub, secure_sim: RunningSimulator, tmp_path: Path
) -> None:
    stranger = tls.init_dev_pki(tmp_path / "other-ca", CODES)

    async with _channel(secure_hub.port, stranger, "002") as channel:
        error = await _fail(_verify(channel, _qr(secure_sim, "014")))

    assert grpc.StatusCode.UNAVAILABLE == error.status


async def test_client_without_a_certificate_cannot_connect(
    secure_hub: RunningHub, secure_sim: RunningSimulator, pki: tls.Pki
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())

    async with grpc.aio.secure_channel(f"127.0.0.1:{secure_hub.port}", credentials) as channel:
        error = await _fail(_verify(channel, _qr(secure_sim, "014")))

    assert grpc.StatusCode.UNAVAILABLE == error.status


async def test_expired_certificate_cannot_connect(
    secure_hub: RunningHub, secure_sim: RunningSimulator, tmp_path: Path, pki: tls.Pki
) -> None:
    # The same CA, a fresh directory: member 002's certificate expired yesterday.
    expired_dir = tmp_path / "expired"
    expired_dir.mkdir()
    for name in ("ca.pem", "ca-key.pem"):
        (expired_dir / name).write_bytes((pki.directory / name).read_bytes())
    expired = tls.init_dev_pki(
        expired_dir, ["002"], not_after=datetime.now(UTC) - timedelta(days=1)
    )

    async with _channel(secure_hub.port, expired, "002") as channel:
        error = await _fail(_verify(channel, _qr(secure_sim, "014")))

    assert grpc.StatusCode.UNAVAILABLE == error.status


async def test_suspended_member_with_a_valid_certificate_is_refused(
    secure_hub: RunningHub, secure_sim: RunningSimulator, pki: tls.Pki
) -> None:
    async with _channel(secure_hub.port, pki, tls.OPERATOR) as channel:
        await registry_pb2_grpc.MemberRegistryStub(channel).SetMemberStatus(
            registry_pb2.SetMemberStatusRequest(
                code="002", status=registry_pb2.MEMBER_STATUS_SUSPENDED
            ),
            timeout=5,
        )
    async with _channel(secure_hub.port, pki, "002") as channel:
        error = await _fail(_verify(channel, _qr(secure_sim, "014")))

    assert (grpc.StatusCode.PERMISSION_DENIED, "MEMBER_SUSPENDED") == (error.status, error.reason)


async def test_only_the_operator_certificate_may_use_the_registry(
    secure_hub: RunningHub, pki: tls.Pki
) -> None:
    async with _channel(secure_hub.port, pki, tls.OPERATOR) as channel:
        listed = await registry_pb2_grpc.MemberRegistryStub(channel).ListMembers(
            registry_pb2.ListMembersRequest(), timeout=5
        )
    async with _channel(secure_hub.port, pki, "002") as channel:
        error = await _fail(
            registry_pb2_grpc.MemberRegistryStub(channel).ListMembers(
                registry_pb2.ListMembersRequest(), timeout=5
            )
        )

    assert list(CODES) == [m.code for m in listed.members]
    assert (grpc.StatusCode.PERMISSION_DENIED, "NOT_OPERATOR") == (error.status, error.reason)


async def _lead_014_to_bank_002(hub: RunningHub, sim: RunningSimulator, pki: tls.Pki) -> None:
    """As operator, point member 014's endpoint at bank 002's server (002's certificate)."""
    async with _channel(hub.port, pki, tls.OPERATOR) as channel:
        await registry_pb2_grpc.MemberRegistryStub(channel).UpdateMember(
            registry_pb2.UpdateMemberRequest(
                code="014",
                member=registry_pb2.Member(issuer_endpoint=sim.nodes["002"].address),
                update_mask=field_mask_pb2.FieldMask(paths=["issuer_endpoint"]),
            ),
            timeout=5,
        )


async def test_hub_refuses_an_issuer_whose_certificate_names_another_member(
    secure_hub: RunningHub, secure_sim: RunningSimulator, pki: tls.Pki
) -> None:
    # Member 014's endpoint now leads to bank 002's server, which presents 002's certificate.
    await _lead_014_to_bank_002(secure_hub, secure_sim, pki)
    async with _channel(secure_hub.port, pki, "002") as channel:
        error = await _fail(_verify(channel, _qr(secure_sim, "014")))

    assert (grpc.StatusCode.UNAVAILABLE, "ISSUER_UNAVAILABLE") == (error.status, error.reason)


async def test_a_member_cannot_query_another_issuer_directly(
    secure_sim: RunningSimulator, pki: tls.Pki
) -> None:
    node = secure_sim.nodes["014"]
    credentials = tls.channel_credentials(pki, "002")
    options = tls.channel_options(tls.member_dns_name("014"))

    async with grpc.aio.secure_channel(node.address, credentials, options=options) as channel:
        error = await _fail(
            issuer_pb2_grpc.IssuerServiceStub(channel).IssuerInquiry(
                issuer_pb2.IssuerInquiryRequest(
                    slip_ref=common_pb2.SlipRef(sending_bank="014", trans_ref="ABC")
                ),
                timeout=5,
            )
        )

    assert (grpc.StatusCode.PERMISSION_DENIED, "NOT_SUBSCRIBED") == (error.status, error.reason)


async def test_no_secret_or_personal_data_in_logs_audit_or_error_messages(
    pki: tls.Pki,
    secure_sim: RunningSimulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "hub.sqlite"
    hub = await start_hub(
        HubSettings(
            port=0,
            members=members_of(secure_sim),
            mode=IdentityMode.TLS,
            pki=pki.directory,
            db=f"sqlite:///{db}",
        )
    )
    messages: list[str] = []

    async def record(call: Any) -> None:
        try:
            await call
        except grpc.aio.AioRpcError as error:
            messages.append(f"{error.details()} {error.trailing_metadata()}")

    stranger = tls.init_dev_pki(tmp_path / "other-ca", CODES)
    try:
        qrs = [s.qr_text for s in secure_sim.nodes["014"].bank.list_slips(30, None)]
        async with _channel(hub.port, pki, "002") as channel:
            for qr in qrs:  # answers, and failures for slips not yet visible or expired
                await record(_verify(channel, qr))
            await record(_verify(channel, qrs[0], claim="014"))  # impersonation
            await record(_verify(channel, "not a slip"))
            await record(
                registry_pb2_grpc.MemberRegistryStub(channel).ListMembers(
                    registry_pb2.ListMembersRequest(), timeout=5
                )
            )
        async with _channel(hub.port, stranger, "002") as channel:  # another CA
            await record(_verify(channel, qrs[0]))
        await _lead_014_to_bank_002(hub, secure_sim, pki)  # an impostor issuer
        async with _channel(hub.port, pki, "002") as channel:
            await record(_verify(channel, qrs[0]))
    finally:
        await hub.stop(grace=0)
    stored = await asyncio.to_thread(
        lambda: b"".join(p.read_bytes() for p in tmp_path.glob("hub.sqlite*"))
    )
    errors = "\n".join(messages)
    log = logged(caplog)
    secret = secrets_of(pki.directory) | secrets_of(stranger.directory)
    personal = personal_data(secure_sim)

    assert len(messages) >= 5
    assert "IDENTITY_MISMATCH" in log  # the hub's own log lines were captured
    assert len(secret) > 20
    assert [] == sorted(s for s in secret if s in log or s in errors or s.encode() in stored)
    assert [] == sorted(v for v in personal if v in log or v in errors or v.encode() in stored)
