"""Fixtures: real gRPC servers (simulated banks and the hub) in-process on loopback port 0."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from psycopg import sql

from txverify.hub.app import RunningHub, start_hub
from txverify.hub.registry import Member, MemberKind, dump_members, with_default_roles
from txverify.hub.resilience.breaker import BreakerSettings
from txverify.hub.settings import ConsoleSettings, HubSettings
from txverify.runtime import tls
from txverify.runtime.logs import JsonFormatter
from txverify.simulators.server import RunningSimulator, start_simulator
from txverify.simulators.settings import SimulatorSettings
from txverify.v1 import common_pb2, simulator_pb2_grpc, verification_pb2, verification_pb2_grpc

# The registry and membership tests share their fixtures from a module of their own.
pytest_plugins = ["membership_support"]

BANK_CODES = ("002", "014", "900")

# The PostgreSQL the tests use: the machine's own (trust auth on loopback), or
# another named by TXVERIFY_TEST_POSTGRES. Each test gets a fresh schema on it.
POSTGRES = os.environ.get("TXVERIFY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server's URL, or the test is skipped saying why there is none."""
    try:
        with psycopg.connect(POSTGRES, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        why = (
            f"no PostgreSQL at {POSTGRES} ({str(error).strip()}): start one, or name one "
            "with TXVERIFY_TEST_POSTGRES=postgresql://user@host:port/db"
        )
        if os.environ.get("TXVERIFY_REQUIRE_POSTGRES"):  # CI: a skip would hide the tests
            pytest.fail(why)
        pytest.skip(why)
    return POSTGRES


REDIS = os.environ.get("TXVERIFY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis the tests use (the machine's, or TXVERIFY_TEST_REDIS), or a skip saying why."""
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        why = (
            f"no Redis at {REDIS} ({error}): start one, or name one with "
            "TXVERIFY_TEST_REDIS=redis://host:port/db"
        )
        if os.environ.get("TXVERIFY_REQUIRE_REDIS"):  # CI: a skip would hide the tests
            pytest.fail(why)
        pytest.skip(why)
    finally:
        client.close()
    return REDIS


def postgres_schema_url(server: str, schema: str) -> str:
    """`server` with every connection's search_path set to `schema`."""
    sep = "&" if "?" in server else "?"
    return f"{server}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose connections see only a fresh, empty schema (dropped afterwards)."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield postgres_schema_url(postgres_server, schema)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def start_hub_process(members: Path, *args: str) -> tuple[asyncio.subprocess.Process, int]:
    """`txverify hub --members MEMBERS --port 0 --ready-line ARGS` as a process; its port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "txverify.cli", "hub", "--members", str(members), "--port", "0",
        "--ready-line", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        ready: dict[str, Any] = json.loads(line.decode().split(" ", 1)[1])
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, int(ready["address"].rsplit(":", 1)[1])


def stop_process(
    proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM, timeout: float = 20
) -> None:
    """Stop a process started by a test: `sig`, then SIGKILL after `timeout`; close its stdout."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    sim = await start_simulator(SimulatorSettings(codes=BANK_CODES, transactions=40))
    try:
        yield sim
    finally:
        await sim.stop()


def members_of(sim: RunningSimulator) -> tuple[Member, ...]:
    return tuple(
        with_default_roles(
            Member(
                code=code,
                name=node.bank.profile.name,
                kind=MemberKind(node.bank.profile.kind.value),
                issuer_endpoint=node.address,
            )
        )
        for code, node in sim.nodes.items()
    )


def members_file(sim: RunningSimulator, directory: Path) -> Path:
    """DIRECTORY/members.toml naming the simulator's banks, for hubs started as processes."""
    path = directory / "members.toml"
    path.write_text(dump_members(members_of(sim)), encoding="utf-8")
    return path


def personal_data(sim: RunningSimulator) -> set[str]:
    """What must never leave a bank unmasked: full names, surnames, account and proxy numbers.

    (A masked name keeps the first name: "CHICHUKA S"; so first names alone are not listed.)
    """
    found: set[str] = set()
    for node in sim.nodes.values():
        for slip in node.bank.list_slips(1000, None):
            for party in (slip.transaction.sender, slip.transaction.receiver):
                for name in (party.name_th, party.name_en):
                    found |= {name, name.split()[-1]}
                found |= {v for v in (party.account, party.proxy_value) if v}
    return found


def secrets_of(pki_dir: Path) -> set[str]:
    """What must never appear in a log, the audit or an error message: every private
    key's base64 lines, and the PEM marker itself."""
    found = {"PRIVATE KEY"}
    for key in pki_dir.glob("*-key.pem"):
        found |= {
            line for line in key.read_text().splitlines() if line and not line.startswith("-----")
        }
    return found


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as the hub writes it (JSON, with its fields): caplog.text
    holds the messages only, not the fields (status, reason, references) that go with them."""
    formatter = JsonFormatter()
    return "\n".join(formatter.format(r) for r in caplog.records)


HubFactory = Callable[..., Awaitable[RunningHub]]


@pytest.fixture
async def hub_factory(simulator: RunningSimulator) -> AsyncIterator[HubFactory]:
    """Start hubs routing to the simulator's banks, with settings overrides; stops them all."""
    started: list[RunningHub] = []

    async def start(**overrides: Any) -> RunningHub:
        running = await start_hub(
            HubSettings(**{"port": 0, "members": members_of(simulator), **overrides})
        )
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            await running.stop(grace=0)


@pytest.fixture
async def hub(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory()


CONSOLE_TOKEN = "test-operator-token"


@pytest.fixture
async def console_hub(hub_factory: HubFactory, simulator: RunningSimulator) -> RunningHub:
    """A hub serving its web console (loopback, any port) with fault controls on the
    simulator; three issuer timeouts of 0.5 s open a circuit, for 30 s."""
    return await hub_factory(
        console=ConsoleSettings(0, simulator=simulator.control_address, token=CONSOLE_TOKEN),
        issuer_timeout=0.5,
        breaker=BreakerSettings(failure_threshold=3, cooldown=30.0, failing_seconds=0.0),
    )


REQUESTER = "002"  # the member the default test channel speaks for (dev mode header)


class AsMember(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the dev-mode identity header to every call, as a member's client would."""

    def __init__(self, code: str) -> None:
        self.code = code

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        metadata = list(client_call_details.metadata or ())
        metadata.append(("x-member-id", self.code))
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            grpc.aio.Metadata(*metadata),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def member_channel(port: int, code: str = REQUESTER) -> grpc.aio.Channel:
    """A loopback channel to a hub whose calls say they come from member `code`."""
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=[AsMember(code)])


@pytest.fixture
async def hub_channel(hub: RunningHub) -> AsyncIterator[grpc.aio.Channel]:
    async with member_channel(hub.port) as channel:
        yield channel


@pytest.fixture
def verifier(
    hub_channel: grpc.aio.Channel,
) -> verification_pb2_grpc.VerificationServiceAsyncStub:
    return verification_pb2_grpc.VerificationServiceStub(hub_channel)


@pytest.fixture
async def control(
    simulator: RunningSimulator,
) -> AsyncIterator[simulator_pb2_grpc.BankSimulatorAsyncStub]:
    async with grpc.aio.insecure_channel(simulator.control_address) as channel:
        yield simulator_pb2_grpc.BankSimulatorStub(channel)


# --- impostors (mTLS) ---------------------------------------------------------------


def loopback_member_pki(pki: tls.Pki, code: str, directory: Path) -> tls.Pki:
    """DIRECTORY with the CA of `pki` and a certificate for member `code` from that CA
    carrying localhost, 127.0.0.1 and ::1 beside CODE.members.txverify, as `txverify
    certs init` issued member certificates before M10 (directories made then keep them)."""
    directory.mkdir(mode=0o700, parents=True)
    shutil.copyfile(pki.ca, directory / "ca.pem")
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    names = [
        x509.DNSName(tls.member_dns_name(code)),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = tls.Pki(directory).files(code)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    return tls.Pki(directory)


@dataclass
class ImpostorHub(verification_pb2_grpc.VerificationServiceServicer):
    """A VerificationService that answers every Verify VALID: what a fake hub would say."""

    port: int = 0
    calls: list[str] = field(default_factory=list)  # the requests it was sent (their ids)

    def Verify(
        self, request: verification_pb2.VerifyRequest, context: grpc.ServicerContext
    ) -> verification_pb2.VerifyResponse:
        self.calls.append(request.request_id)
        return verification_pb2.VerifyResponse(
            transaction=common_pb2.Transaction(trans_ref="FAKE", sending_bank="014"),
            request_id=request.request_id,
            verdict=verification_pb2.VERDICT_VALID,
        )


@contextlib.contextmanager
def impostor_hub(pki: tls.Pki, name: str) -> Iterator[ImpostorHub]:
    """An ImpostorHub on 127.0.0.1 (any port) presenting `name`'s certificate from `pki`,
    which requires client certificates from the same CA, as the hub does."""
    impostor = ImpostorHub()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    verification_pb2_grpc.add_VerificationServiceServicer_to_server(impostor, server)
    impostor.port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(pki, name))
    server.start()
    try:
        yield impostor
    finally:
        server.stop(grace=None)
