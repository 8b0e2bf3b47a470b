"""Fixtures: real gRPC servers (simulated banks and the hub) in-process on loopback port 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import redis
from psycopg import sql

from server.app import HubSettings, RunningHub, start_hub
from server.breaker import BreakerSettings
from server.console.web import ConsoleSettings
from server.registry import Member, MemberKind, dump_members, with_default_roles
from simulators.server import RunningSimulator, SimulatorSettings, start_simulator
from txverify.logs import JsonFormatter
from txverify.v1 import simulator_pb2_grpc, verification_pb2_grpc

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
        sys.executable, "-m", "clients.cli", "hub", "--members", str(members), "--port", "0",
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
        breaker=BreakerSettings(failure_threshold=3, cooldown=30.0),
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
