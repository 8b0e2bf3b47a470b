"""Mutual TLS: identities from client certificates, refused clients, issuer names, reloading."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from txverify.runtime import tls
from txverify.runtime.grpcserver import new_server

TIMEOUT = 3.0  # seconds per RPC; loopback handshakes take milliseconds
WHO = "/txverify.test.Who/Ask"
EXPIRED_MEMBER = "025"


async def _who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    """Echo what the server learnt about its caller."""
    seen = {
        "identity": tls.peer_identity(context),
        "loopback": tls.peer_is_loopback(context),
        "peer": context.peer(),
    }
    return json.dumps(seen).encode()


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start servers (health + Who) on loopback port 0; plain when credentials are None."""
    servers: list[grpc.aio.Server] = []

    async def start(credentials: grpc.ServerCredentials | None, host: str = "127.0.0.1") -> int:
        server = new_server()
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "txverify.test.Who", {"Ask": grpc.unary_unary_rpc_method_handler(_who)}
                ),
            )
        )
        address = f"[{host}]:0" if ":" in host else f"{host}:0"
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
        servers.append(server)
        await server.start()
        return port

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(grace=None)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tls.Pki:
    """Hub, operator, members 002 and 014, and member 025 whose certificate has expired."""
    directory = tmp_path_factory.mktemp("pki")
    tls.init_dev_pki(directory, ["002", "014"])
    yesterday = datetime.now(UTC) - timedelta(days=1)
    return tls.init_dev_pki(directory, [EXPIRED_MEMBER], not_after=yesterday)


async def _ask(
    port: int,
    credentials: grpc.ChannelCredentials | None,
    options: tuple[tuple[str, str], ...] = (),
    host: str = "127.0.0.1",
) -> dict[str, Any]:
    """Call Who on a fresh channel and return what the server saw."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if credentials is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    async with channel:
        ask: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(WHO)
        seen: dict[str, Any] = json.loads(await ask(b"", timeout=TIMEOUT))
        return seen


async def _refusal(
    port: int, credentials: grpc.ChannelCredentials, options: tuple[tuple[str, str], ...] = ()
) -> grpc.StatusCode:
    """The status of a health check that must fail, on a fresh channel."""
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as ch:
        health: Any = health_pb2_grpc.HealthStub(ch)  # its type stubs omit the methods
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    return caught.value.code()


def _replace_files(target: tls.Pki, source: tls.Pki) -> None:
    """Copy source's files over target's in place, as an operator renewing certificates would."""
    for path in source.directory.iterdir():
        destination = target.directory / path.name
        before = destination.stat().st_mtime_ns if destination.exists() else 0
        shutil.copyfile(path, destination)
        # A later mtime even on a file system with coarse timestamps.
        bumped = max(destination.stat().st_mtime_ns, before + 1_000_000_000)
        os.utime(destination, ns=(bumped, bumped))


# --- who the server sees ------------------------------------------------------


async def test_member_is_identified_by_its_certificate(serve: Serve, pki: tls.Pki) -> None:
    port = await serve(tls.server_credentials(pki, tls.HUB))

    seen = await _ask(port, tls.channel_credentials(pki, "014"))

    assert "014" == seen["identity"]


async def test_operator_is_identified_by_its_certificate(serve: Serve, pki: tls.Pki) -> None:
    port = await serve(tls.server_credentials(pki, tls.HUB))

    seen = await _ask(port, tls.channel_credentials(pki, tls.OPERATOR))

    assert tls.OPERATOR == seen["identity"]


async def test_plain_connection_has_no_identity(serve: Serve) -> None:
    port = await serve(None)

    seen = await _ask(port, None)

    assert seen["identity"] is None


async def test_tls_without_client_auth_has_no_identity(serve: Serve, pki: tls.Pki) -> None:
    port = await serve(tls.server_credentials(pki, tls.HUB, require_client_auth=False))

    seen = await _ask(port, tls.channel_credentials(pki, "014"))

    assert seen["identity"] is None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_loopback_caller_is_seen_as_loopback(serve: Serve, pki: tls.Pki, host: str) -> None:
    try:
        port = await serve(tls.server_credentials(pki, tls.HUB), host=host)
    except RuntimeError:
        pytest.skip(f"cannot listen on {host}")

    seen = await _ask(port, tls.channel_credentials(pki, "014"), host=host)

    assert seen["loopback"] is True, seen["peer"]


# --- who cannot call ----------------------------------------------------------


async def test_client_without_certificate_cannot_call(serve: Serve, pki: tls.Pki) -> None:
    port = await serve(tls.server_credentials(pki, tls.HUB))
    server_auth_only = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())

    assert grpc.StatusCode.UNAVAILABLE == await _refusal(port, server_auth_only)


async def test_client_certificate_from_another_ca_cannot_call(
    serve: Serve, pki: tls.Pki, tmp_path: Path
) -> None:
    port = await serve(tls.server_credentials(pki, tls.HUB))
    other = tls.init_dev_pki(tmp_path / "other", ["014"]).files("014")
    # Trusts the hub's CA, so only the client certificate can be what fails.
    foreign = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=other.key.read_bytes(),
        certificate_chain=other.cert.read_bytes(),
    )

    assert grpc.StatusCode.UNAVAILABLE == await _refusal(port, foreign)


async def test_client_with_expired_certificate_cannot_call(serve: Serve, pki: tls.Pki) -> None:
    port = await serve(tls.server_credentials(pki, tls.HUB))

    refusal = await _refusal(port, tls.channel_credentials(pki, EXPIRED_MEMBER))

    assert grpc.StatusCode.UNAVAILABLE == refusal


# --- the issuer the hub meant ---------------------------------------------------


async def test_issuer_certificate_naming_another_member_is_refused(
    serve: Serve, pki: tls.Pki
) -> None:
    port = await serve(tls.server_credentials(pki, "002"))
    expecting_014 = tls.channel_options(tls.member_dns_name("014"))

    refusal = await _refusal(port, tls.channel_credentials(pki, tls.HUB), expecting_014)

    assert grpc.StatusCode.UNAVAILABLE == refusal


async def test_issuer_certificate_naming_the_member_meant_is_accepted(
    serve: Serve, pki: tls.Pki
) -> None:
    port = await serve(tls.server_credentials(pki, "002"))
    expecting_002 = tls.channel_options(tls.member_dns_name("002"))

    seen = await _ask(port, tls.channel_credentials(pki, tls.HUB), expecting_002)

    assert tls.HUB == seen["identity"]


# --- the hub the member meant -------------------------------------------------------


async def test_member_certificate_does_not_pass_for_the_hub(serve: Serve, pki: tls.Pki) -> None:
    port = await serve(tls.server_credentials(pki, "014"))
    expecting_hub = tls.channel_options(tls.HUB_DNS)

    refusal = await _refusal(port, tls.channel_credentials(pki, "002"), expecting_hub)

    assert grpc.StatusCode.UNAVAILABLE == refusal


async def test_hub_certificate_passes_for_the_hub(serve: Serve, pki: tls.Pki) -> None:
    port = await serve(tls.server_credentials(pki, tls.HUB))
    expecting_hub = tls.channel_options(tls.HUB_DNS)

    seen = await _ask(port, tls.channel_credentials(pki, "002"), expecting_hub)

    assert "002" == seen["identity"]


# --- replacing certificates under a running server -------------------------------


@pytest.fixture
def renewal(tmp_path: Path) -> tuple[tls.Pki, tls.Pki]:
    """A PKI the server starts from, and a fresh one (new CA) to replace its files with."""
    return (
        tls.init_dev_pki(tmp_path / "a", ["014"]),
        tls.init_dev_pki(tmp_path / "b", ["014"]),
    )


async def test_replaced_certificates_serve_new_connections_without_restart(
    serve: Serve, renewal: tuple[tls.Pki, tls.Pki]
) -> None:
    current, fresh = renewal
    port = await serve(tls.server_credentials(current, tls.HUB))
    assert "014" == (await _ask(port, tls.channel_credentials(current, "014")))["identity"]

    _replace_files(current, fresh)
    seen = await _ask(port, tls.channel_credentials(fresh, "014"))

    assert "014" == seen["identity"]


async def test_old_ca_is_refused_after_replacement(
    serve: Serve, renewal: tuple[tls.Pki, tls.Pki]
) -> None:
    current, fresh = renewal
    port = await serve(tls.server_credentials(current, tls.HUB))
    old_client = tls.channel_credentials(current, "014")  # read before the files change
    assert "014" == (await _ask(port, old_client))["identity"]

    _replace_files(current, fresh)

    assert grpc.StatusCode.UNAVAILABLE == await _refusal(port, old_client)


async def test_established_connection_survives_replacement(
    serve: Serve, renewal: tuple[tls.Pki, tls.Pki]
) -> None:
    current, fresh = renewal
    port = await serve(tls.server_credentials(current, tls.HUB))
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", tls.channel_credentials(current, "014")
    ) as channel:
        ask: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(WHO)
        await ask(b"", timeout=TIMEOUT)

        _replace_files(current, fresh)
        seen = json.loads(await ask(b"", timeout=TIMEOUT))

    assert "014" == seen["identity"]


async def test_certificate_without_its_new_key_is_not_loaded(
    serve: Serve, renewal: tuple[tls.Pki, tls.Pki]
) -> None:
    current, fresh = renewal
    port = await serve(tls.server_credentials(current, tls.HUB))
    client = tls.channel_credentials(current, "014")

    # Half-way through a renewal: the hub's certificate is new, its key still old.
    shutil.copyfile(fresh.files(tls.HUB).cert, current.files(tls.HUB).cert)
    seen = await _ask(port, client)

    assert "014" == seen["identity"]


# --- the dev PKI ----------------------------------------------------------------


def test_init_keeps_the_ca_and_issues_only_missing_members(tmp_path: Path) -> None:
    pki = tls.init_dev_pki(tmp_path, ["014"])
    ca_before = pki.ca.read_bytes()
    member_before = pki.files("014").cert.read_bytes()

    tls.init_dev_pki(tmp_path, ["014", "002"])

    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    added = x509.load_pem_x509_certificate(pki.files("002").cert.read_bytes())
    added.verify_directly_issued_by(ca)
    assert (ca_before, member_before) == (pki.ca.read_bytes(), pki.files("014").cert.read_bytes())


def test_init_with_overwrite_makes_a_new_ca(tmp_path: Path) -> None:
    pki = tls.init_dev_pki(tmp_path, ["014"])
    ca_before = pki.ca.read_bytes()

    tls.init_dev_pki(tmp_path, ["014"], overwrite=True)

    assert ca_before != pki.ca.read_bytes()


def test_key_files_are_readable_by_owner_only(tmp_path: Path) -> None:
    tls.init_dev_pki(tmp_path, ["014", "900"])

    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("*-key.pem")}

    names = ["ca", tls.HUB, tls.OPERATOR, tls.SIMULATOR, tls.QA, "014", "900"]
    assert {f"{name}-key.pem": 0o600 for name in names} == modes


@pytest.mark.parametrize(
    ("name", "dns_name"),
    [
        (tls.HUB, tls.HUB_DNS),
        (tls.OPERATOR, "operator.txverify"),
        (tls.SIMULATOR, "simulator.txverify"),
        (tls.QA, "qa.txverify"),
        ("900", tls.member_dns_name("900")),
    ],
)
def test_certificate_names_its_holder(tmp_path: Path, name: str, dns_name: str) -> None:
    pki = tls.init_dev_pki(tmp_path, ["900"])

    cert = x509.load_pem_x509_certificate(pki.files(name).cert.read_bytes())

    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert (name, True) == (common_name, dns_name in sans.get_values_for_type(x509.DNSName))


@pytest.mark.parametrize(
    ("name", "usage"),
    [
        (tls.OPERATOR, ExtendedKeyUsageOID.CLIENT_AUTH),
        (tls.QA, ExtendedKeyUsageOID.CLIENT_AUTH),
        (tls.SIMULATOR, ExtendedKeyUsageOID.SERVER_AUTH),
    ],
)
def test_operator_and_qa_only_call_and_the_simulator_only_serves(
    tmp_path: Path, name: str, usage: x509.ObjectIdentifier
) -> None:
    pki = tls.init_dev_pki(tmp_path, [])

    cert = x509.load_pem_x509_certificate(pki.files(name).cert.read_bytes())

    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [usage] == list(usages)


@pytest.mark.parametrize("name", [tls.OPERATOR, tls.SIMULATOR, tls.QA, "002", "900"])
def test_only_the_hub_certificate_names_the_hub_or_loopback(tmp_path: Path, name: str) -> None:
    # Clients pin hub.txverify; a certificate valid for 127.0.0.1 could still pass with a
    # client that dials the address without pinning (grpcurl), so only the hub's may be.
    pki = tls.init_dev_pki(tmp_path, ["002", "900"])

    cert = x509.load_pem_x509_certificate(pki.files(name).cert.read_bytes())

    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert (1, [], False) == (
        len(sans.get_values_for_type(x509.DNSName)),
        sans.get_values_for_type(x509.IPAddress),
        tls.HUB_DNS in sans.get_values_for_type(x509.DNSName),
    )


@pytest.mark.parametrize("code", ["14", "0140", "๐๑๔", "01a", "../x", ""])
def test_bad_member_code_is_refused(tmp_path: Path, code: str) -> None:
    with pytest.raises(ValueError, match="3 ASCII digits"):
        tls.init_dev_pki(tmp_path / "pki", [code])

    assert not (tmp_path / "pki").exists()


def test_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "certs"
    file.write_text("not a directory")

    with pytest.raises(ValueError, match="not a directory"):
        tls.init_dev_pki(file, ["014"])


# --- loopback -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv4:127.8.9.10:5000", True),
        ("ipv6:[::1]:5000", True),
        ("ipv6:%5B::1%5D:5000", True),
        ("ipv6:%5B::ffff:127.0.0.1%5D:5000", True),
        ("ipv4:10.0.0.1:5000", False),
        ("ipv6:%5B2001:db8::1%5D:5000", False),
        ("unix:/tmp/hub.sock", False),
        ("ipv4:127.0.0.1", False),
        ("", False),
    ],
)
def test_is_loopback_peer(peer: str, expected: bool) -> None:
    assert expected == tls.is_loopback_peer(peer)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.255.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", False),
        ("0.0.0.0", False),
        ("::", False),
        ("localhost.example.com", False),
        ("hub.txverify", False),
    ],
)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert expected == tls.is_loopback_host(host)
