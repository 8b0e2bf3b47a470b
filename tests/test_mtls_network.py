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
from google.protobuf import field_mask_pb2

from conftest import logged, members_of, personal_data, secrets_of
from txverify import miniqr
from txverify.cli.scenario.files import load_scenario
from txverify.cli.scenario.network import Target
from txverify.cli.scenario.runner import run_scenario
from txverify.client import AsyncTxVerifyClient, SlipQuery
from txverify.client.channels import control_aio_channel
from txverify.errors import ErrorDetails, details_of
from txverify.hub.app import RunningHub, start_hub
from txverify.hub.identity import IdentityMode
from txverify.hub.settings import HubSettings
from txverify.runtime import tls
from txverify.runtime.grpcserver import bind, new_server
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.control import BankSimulatorServicer
from txverify.simulators.server import RunningSimulator, start_simulator
from txverify.simulators.settings import SimulatorSettings
from txverify.v1 import (
    common_pb2,
    issuer_pb2,
    issuer_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

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


async def test_client_library_verifies_through_the_hub_it_pins(
    secure_hub: RunningHub, secure_sim: RunningSimulator, pki: tls.Pki
) -> None:
    qr = _qr(secure_sim, "014")

    async with AsyncTxVerifyClient(
        f"127.0.0.1:{secure_hub.port}", member="002", certs=pki.directory, timeout=5
    ) as client:
        response = await client.verify(SlipQuery(qr_text=qr))

    assert miniqr.parse(qr).trans_ref == response.transaction.trans_ref


SCENARIOS = Path(__file__).parents[1] / "scenarios"
TRANSFER_AND_FAULTS = """
name: Transfer, faults and verify under mTLS
network: {banks: ["002", "014"]}
steps:
  - transfer: {save: s1, bank: "014", to: "0812345678", amount: "150.00"}
  - verify: {slip: s1, as: "002"}
    expect: {verdict: VALID}
  - faults: {bank: "014", refuse: true}
    expect: {fields: {issuer_listening: false}}
  - verify: {slip: s1, as: "002", reference: during}
    expect: {status: UNAVAILABLE, reason: ISSUER_UNAVAILABLE}
  - faults: {bank: "014", clear: true}
  - reverse: {slip: s1}
"""


@pytest.mark.parametrize("scenario", ["suspended_requester.yaml", "transfer_and_faults.yaml"])
async def test_scenarios_run_over_mtls_with_each_callers_certificate(
    secure_hub: RunningHub,
    secure_sim: RunningSimulator,
    pki: tls.Pki,
    tmp_path: Path,
    scenario: str,
) -> None:
    path = SCENARIOS / scenario
    if not path.exists():
        path = tmp_path / scenario
        path.write_text(TRANSFER_AND_FAULTS, encoding="utf-8")
    target = Target(f"127.0.0.1:{secure_hub.port}", secure_sim.control_address, pki.directory)

    result = await run_scenario(load_scenario(path), target)

    assert ([], "") == ([(s.label, s.problems) for s in result.steps if s.problems], result.error)
    assert result.passed


# --- the simulator's control API (BankSimulator): moves money, lists every slip ------


def _control(
    address: str, pki: tls.Pki, name: str, *, server_name: str = tls.SIMULATOR_DNS
) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        address, tls.channel_credentials(pki, name), options=tls.channel_options(server_name)
    )


def _transfer(channel: grpc.aio.Channel) -> Any:
    return simulator_pb2_grpc.BankSimulatorStub(channel).Transfer(
        simulator_pb2.TransferRequest(
            bank="014",
            amount_satang=15_000,
            to_proxy=common_pb2.Proxy(type=common_pb2.PROXY_TYPE_MSISDN, value="0812345678"),
        ),
        timeout=5,
    )


@pytest.mark.parametrize("name", [tls.OPERATOR, tls.QA])
async def test_control_api_serves_the_operator_and_qa_certificates(
    secure_sim: RunningSimulator, pki: tls.Pki, name: str
) -> None:
    async with _control(secure_sim.control_address, pki, name) as channel:
        listed = await simulator_pb2_grpc.BankSimulatorStub(channel).ListBanks(
            simulator_pb2.ListBanksRequest(), timeout=5
        )
        moved = await _transfer(channel)

    assert list(CODES) == [b.code for b in listed.banks]
    assert 15_000 == moved.transaction.amount.satang


async def test_control_api_refuses_a_plaintext_caller(secure_sim: RunningSimulator) -> None:
    async with grpc.aio.insecure_channel(secure_sim.control_address) as channel:
        error = await _fail(_transfer(channel))

    assert grpc.StatusCode.UNAVAILABLE == error.status


async def test_control_api_refuses_a_caller_without_a_certificate(
    secure_sim: RunningSimulator, pki: tls.Pki
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    options = tls.channel_options(tls.SIMULATOR_DNS)

    async with grpc.aio.secure_channel(secure_sim.control_address, credentials, options) as ch:
        error = await _fail(_transfer(ch))

    assert grpc.StatusCode.UNAVAILABLE == error.status


async def test_control_api_refuses_a_certificate_from_another_ca(
    secure_sim: RunningSimulator, pki: tls.Pki, tmp_path: Path
) -> None:
    other = tls.init_dev_pki(tmp_path / "other-ca", CODES).files(tls.OPERATOR)
    # Trusts the simulator's CA, so only the client certificate can be what fails.
    foreign = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=other.key.read_bytes(),
        certificate_chain=other.cert.read_bytes(),
    )
    options = tls.channel_options(tls.SIMULATOR_DNS)

    async with grpc.aio.secure_channel(secure_sim.control_address, foreign, options) as channel:
        error = await _fail(_transfer(channel))

    assert grpc.StatusCode.UNAVAILABLE == error.status


@pytest.mark.parametrize("name", ["002", "014", tls.HUB])
async def test_control_api_refuses_members_and_the_hub_on_every_rpc(
    secure_sim: RunningSimulator, pki: tls.Pki, name: str
) -> None:
    # Certificates of the network's own CA, but not for driving the banks; every RPC
    # of the service (taken from its descriptor, so a new one cannot be forgotten).
    service = simulator_pb2.DESCRIPTOR.services_by_name["BankSimulator"]
    refused = {}
    async with _control(secure_sim.control_address, pki, name) as channel:
        for method in service.methods:
            kind = getattr(simulator_pb2, method.input_type.name)
            request = kind(bank="014") if "bank" in kind.DESCRIPTOR.fields_by_name else kind()
            call = channel.unary_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=getattr(simulator_pb2, method.output_type.name).FromString,
            )
            error = await _fail(call(request, timeout=5))
            refused[method.name] = (error.status, error.reason)

    denied = (grpc.StatusCode.PERMISSION_DENIED, "NOT_OPERATOR")
    assert {m.name: denied for m in service.methods} == refused
    assert 30 == secure_sim.nodes["014"].bank.ledger.count_transactions()  # nothing moved


async def test_control_api_presents_a_certificate_only_the_simulator_holds(
    secure_sim: RunningSimulator, pki: tls.Pki
) -> None:
    # Not the hub's name, nor a member's: the simulator cannot pose as either.
    async with _control(
        secure_sim.control_address, pki, tls.OPERATOR, server_name=tls.HUB_DNS
    ) as channel:
        error = await _fail(_transfer(channel))

    assert grpc.StatusCode.UNAVAILABLE == error.status


async def test_control_clients_refuse_a_server_not_named_simulator(pki: tls.Pki) -> None:
    # A control API on loopback presenting the hub's certificate (valid for 127.0.0.1):
    # the CLI's, console's and load generator's channel to it must not connect.
    impostor = new_server()
    simulator_pb2_grpc.add_BankSimulatorServicer_to_server(BankSimulatorServicer({}), impostor)
    address = f"127.0.0.1:{bind(impostor, '127.0.0.1', 0, tls.server_credentials(pki, tls.HUB))}"
    await impostor.start()
    list_banks = simulator_pb2.ListBanksRequest()
    try:
        async with control_aio_channel(address, certs=pki.directory) as channel:
            error = await _fail(
                simulator_pb2_grpc.BankSimulatorStub(channel).ListBanks(list_banks, timeout=5)
            )
        # The same certificates without the pinned name: the address alone would pass it.
        async with _channel(int(address.rsplit(":", 1)[1]), pki, tls.OPERATOR) as unpinned:
            answered = await simulator_pb2_grpc.BankSimulatorStub(unpinned).ListBanks(
                list_banks, timeout=5
            )
    finally:
        await impostor.stop(None)

    assert grpc.StatusCode.UNAVAILABLE == error.status
    assert [] == list(answered.banks)


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
