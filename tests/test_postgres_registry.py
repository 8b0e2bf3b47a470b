"""The registry on PostgreSQL shared by hub processes: NOTIFY on commit, LISTEN in each hub,
the periodic re-read as a safety net, a listener that loses its connection, and a change
answered once every live hub process has it (registry_replicas)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from conftest import HubFactory, member_channel, members_file
from txverify.errors import details_of
from txverify.hub.app import RunningHub
from txverify.hub.membership import Membership
from txverify.hub.registry import Member, MemberStatus
from txverify.hub.registry.store import CHANNEL, SAVE_LOCK, Change, Replicas, open_registry_store
from txverify.hub.registry.watch import RegistryWatch
from txverify.hub.settings import HubSettings
from txverify.hub.workers import prepare_database
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.ledger import TxStatus
from txverify.simulators.server import RunningSimulator
from txverify.v1 import registry_pb2, registry_pb2_grpc, verification_pb2, verification_pb2_grpc

POLL = 0.02  # seconds between looks at a hub that should have changed its mind
T0 = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
# The two hubs answer Verify only as far as admission matters here; audit is off so
# these tests depend on the registry's backend alone.
HUB_FLAGS = ("--no-audit", "--drain-delay", "0", "--grace", "1")


# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow


def _slip(sim: RunningSimulator, code: str = "014") -> str:
    """The QR text of a completed slip of bank `code`, visible to inquiries."""
    bank = sim.nodes[code].bank
    return next(
        s.qr_text
        for s in bank.list_slips(1000, None)
        if bank.visibility(s.transaction) is SlipVisibility.VISIBLE
        and s.transaction.status is TxStatus.COMPLETED
    )


async def _wait_for(condition: Callable[[], bool], within: float) -> float:
    """Seconds until `condition()` held, polled every POLL; fails after `within`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, f"not so after {within}s"
        await asyncio.sleep(POLL)
    return time.monotonic() - started


def _status(hub: RunningHub, code: str) -> MemberStatus:
    return hub.membership.get(code).status


def _suspend_in_database(url: str, code: str, *, notify: bool) -> None:
    """Another process's change: through a store of its own (which notifies), or by
    hand in SQL, which tells no one."""
    if notify:
        store = open_registry_store(url)
        try:
            Membership(store, shared=True).set_status(code, MemberStatus.SUSPENDED, "", "test")
        finally:
            store.close()
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE members SET status = 'SUSPENDED' WHERE code = %s", (code,))


# -- the store ------------------------------------------------------------------------


def test_a_committed_save_notifies_its_member_code_and_a_failed_one_nothing(
    postgres_url: str,
) -> None:
    member = Member("002", name="Bank 002", created_at=T0, updated_at=T0)
    store = open_registry_store(postgres_url)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as listener:
            listener.execute(f"LISTEN {CHANNEL}")
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                store.save(member, Change("014", T0, "ops", "REGISTER", "no such member"))
            store.save(member, Change("002", T0, "ops", "REGISTER", ""))

            heard = [n.payload for n in listener.notifies(timeout=0.5)]
    finally:
        store.close()

    assert ["002"] == heard


def test_prepare_database_seeds_the_members_before_workers_start(postgres_url: str) -> None:
    members = (Member("002", name="Bank 002"), Member("014", name="Bank 014"))

    prepare_database(HubSettings(db=postgres_url, members=members, audit=False))

    store = open_registry_store(postgres_url)
    try:
        assert ["002", "014"] == [m.code for m in store.load_all()]
    finally:
        store.close()


def test_a_save_waits_for_one_in_progress_so_history_ids_follow_commit_order(
    postgres_url: str,
) -> None:
    store = open_registry_store(postgres_url)
    saved: list[int] = []
    try:
        with psycopg.connect(postgres_url) as other:  # another process, mid-save
            other.execute("SELECT pg_advisory_xact_lock(%s)", (SAVE_LOCK,))
            member = Member("002", name="Bank 002", created_at=T0, updated_at=T0)
            saving = threading.Thread(
                target=lambda: saved.append(store.save(member, Change("002", T0, "ops", "R", "")))
            )
            saving.start()
            saving.join(0.3)
            waited = saving.is_alive()
        saving.join(5)  # the other committed (and let go of the lock)
    finally:
        store.close()

    assert (True, 1) == (waited, len(saved))


@pytest.fixture
def replicas(postgres_url: str) -> Iterator[Replicas]:
    store = open_registry_store(postgres_url)
    try:
        assert store.replicas is not None
        yield store.replicas
    finally:
        store.close()


def test_replicas_behind_a_change_are_the_live_ones_but_the_asker(replicas: Replicas) -> None:
    replicas.report("asker", 1, lease=60)
    replicas.report("behind", 4, lease=60)
    replicas.report("level", 5, lease=60)
    replicas.report("ahead", 6, lease=60)
    replicas.report("dead", 1, lease=-1)

    assert {"behind": 4} == replicas.behind(5, excluding="asker")


def test_a_replica_never_reports_going_back(replicas: Replicas) -> None:
    replicas.report("a", 7, lease=60)
    replicas.report("a", 3, lease=60)

    assert {"a": 7} == replicas.behind(8, excluding="")


def test_sweeping_removes_only_expired_replicas(replicas: Replicas) -> None:
    replicas.report("alive", 1, lease=60)
    replicas.report("dead", 1, lease=-1)

    removed = replicas.sweep()

    assert (1, {"alive": 1}) == (removed, replicas.behind(2, excluding=""))


def test_a_forgotten_replica_is_not_waited_for(replicas: Replicas) -> None:
    replicas.report("a", 1, lease=60)

    replicas.forget("a")

    assert {} == replicas.behind(2, excluding="")


async def test_a_change_waits_until_another_replica_has_applied_it(postgres_url: str) -> None:
    store = open_registry_store(postgres_url)
    try:
        assert store.replicas is not None
        here = Membership(store)
        store.replicas.report("there", 0, lease=60)
        made = here.register(Member("002", name="Bank 002"), [], "ops").code
        change = here.last_change
        waiting = asyncio.create_task(here.wait_applied(change, within=5))
        await asyncio.sleep(0.2)
        still_waiting = not waiting.done()
        await asyncio.to_thread(store.replicas.report, "there", change, 60)
        behind = await asyncio.wait_for(waiting, 1)
    finally:
        store.close()

    assert ("002", True, {}) == (made, still_waiting, behind)


async def test_a_replica_that_never_applies_a_change_is_waited_for_a_bounded_time_and_named(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_registry_store(postgres_url)
    try:
        assert store.replicas is not None
        here = Membership(store)
        store.replicas.report("stuck", 0, lease=60)
        here.register(Member("002", name="Bank 002"), [], "ops")
        started = time.monotonic()
        behind = await here.wait_applied(here.last_change, within=0.3)
        took = time.monotonic() - started
    finally:
        store.close()

    assert {"stuck": 0} == behind
    assert 0.3 <= took < 1.0
    assert "not applied after 0.3" in caplog.text
    assert "stuck (at 0)" in caplog.text


def _replica_rows(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            str(replica): int(applied)
            for replica, applied in conn.execute("SELECT replica, applied FROM registry_replicas")
        }


@pytest.mark.timeout(30)
async def test_a_following_process_reports_each_change_it_applies_and_leaves_when_stopped(
    postgres_url: str,
) -> None:
    here, there = open_registry_store(postgres_url), open_registry_store(postgres_url)
    membership = Membership(here, shared=True)
    watch = RegistryWatch(membership, every=60, listen_url=postgres_url, offload=True)
    watch.start()
    try:
        joined = _replica_rows(postgres_url)
        other = Membership(there, shared=True)
        other.register(Member("002", name="Bank 002"), [], "ops")
        change = other.last_change
        await _wait_for(lambda: membership.directory.get("002") is not None, 3)
        await _wait_for(lambda: _replica_rows(postgres_url)[membership.replica] == change, 3)
    finally:
        await watch.stop()
        here.close()
        there.close()

    assert {membership.replica: 0} == joined
    assert {} == _replica_rows(postgres_url)


# -- settings (no database needed) ----------------------------------------------------


@pytest.mark.parametrize(
    ("db", "shared", "every"),
    [
        ("postgresql://db.example/hub", False, 5.0),
        ("postgres://db.example/hub", True, 5.0),
        ("sqlite:///tmp/hub.sqlite", True, 1.0),
    ],
)
def test_the_registry_is_re_read_every_5s_on_postgresql_and_every_1s_on_sqlite(
    db: str, shared: bool, every: float
) -> None:
    settings = HubSettings(db=db, shared=shared)

    assert (True, every) == (settings.follows_registry, settings.refresh_every)


def test_a_lone_hub_on_sqlite_does_not_follow_the_registry() -> None:
    assert not HubSettings(db="sqlite:///tmp/hub.sqlite").follows_registry


@pytest.mark.parametrize(
    ("db", "shared", "message"),
    [
        ("mysql://db.example/hub", False, "database URL must be"),
        ("sqlite://", True, "hub workers share one database"),
    ],
)
def test_settings_refuse_a_database_the_hub_cannot_use(db: str, shared: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HubSettings(db=db, shared=shared)


# -- the watch alone ---------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_with_no_database_to_listen_to_the_periodic_re_read_still_brings_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite://{tmp_path}/hub.sqlite"
    here, there = open_registry_store(url), open_registry_store(url)
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        nowhere = f"postgresql://postgres@127.0.0.1:{probe.getsockname()[1]}/none"
    membership = Membership(here, shared=True)
    watch = RegistryWatch(membership, every=0.1, listen_url=nowhere)
    watch.start()
    try:
        Membership(there, shared=True).register(Member("002", name="Bank 002"), [], "ops")
        await _wait_for(lambda: membership.directory.get("002") is not None, 3)
        await _wait_for(lambda: "registry listener cannot connect" in caplog.text, 3)
    finally:
        await watch.stop()
        here.close()
        there.close()

    assert watch.listener_pid is None


@pytest.mark.timeout(30)
async def test_stop_ends_a_listener_whose_cancellation_psycopg_reports_as_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg can turn a cancellation inside a connect or query into a psycopg.Error,
    which the listen loop takes for a lost connection; stop() must end it anyway."""

    async def cancelled_as_error(url: str) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise psycopg.OperationalError("canceling statement due to user request") from None

    membership = Membership(open_registry_store(f"sqlite://{tmp_path}/hub.sqlite"), shared=True)
    watch = RegistryWatch(membership, every=60, listen_url="postgresql://127.0.0.1:1/none")
    monkeypatch.setattr(watch, "_listen_once", cancelled_as_error)
    watch.start()
    await asyncio.sleep(0.1)
    started = time.monotonic()
    try:
        await watch.stop()
    finally:
        membership.store.close()

    assert time.monotonic() - started < 1.0


# -- hubs in this process: the safety net and a lost listener ---------------------------


@pytest.mark.timeout(30)
async def test_a_change_written_without_notify_arrives_with_the_periodic_re_read(
    hub_factory: HubFactory, postgres_url: str
) -> None:
    hub = await hub_factory(db=postgres_url, audit=False, registry_refresh=0.3)
    assert hub.watch is not None
    await _wait_for(lambda: hub.watch is not None and hub.watch.listener_pid is not None, 5)

    await asyncio.to_thread(_suspend_in_database, postgres_url, "002", notify=False)
    took = await _wait_for(lambda: _status(hub, "002") is MemberStatus.SUSPENDED, 3)

    print(f"\nchange without NOTIFY seen after {took * 1000:.0f} ms (re-read every 300 ms)")
    assert took < 0.3 + 0.5


@pytest.mark.timeout(30)
async def test_the_listener_reconnects_after_its_backend_is_killed_and_hears_later_changes(
    hub_factory: HubFactory, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="txverify.hub.registry.watch")
    # A re-read every minute: within this test, only a notification can bring a change.
    hub = await hub_factory(db=postgres_url, audit=False, registry_refresh=60)
    watch = hub.watch
    assert watch is not None
    await _wait_for(lambda: watch.listener_pid is not None, 5)
    killed = watch.listener_pid

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (killed,)).fetchone() == (True,)
    await _wait_for(lambda: watch.listener_pid not in (None, killed), 10)
    await asyncio.to_thread(_suspend_in_database, postgres_url, "002", notify=True)
    took = await _wait_for(lambda: _status(hub, "002") is MemberStatus.SUSPENDED, 3)

    assert "registry listener lost its connection" in caplog.text
    assert took < 1.0


# -- hub processes: a suspension through one is refused by the others -----------------


@dataclass(frozen=True, slots=True)
class HubProcess:
    port: int
    pid: int
    log: Path


@asynccontextmanager
async def _process(tmp_path: Path, name: str, *argv: str) -> AsyncIterator[HubProcess]:
    """A hub as a process of its own, started by `argv` (which prints a ready line on
    stdout); SIGTERM at the end, unless it is gone already."""
    log = tmp_path / f"{name}.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line, f"{name} exited before listening:\n{log.read_text()}"
        ready: dict[str, Any] = json.loads(line.decode().split(" ", 1)[1])
        yield HubProcess(int(ready["address"].rsplit(":", 1)[1]), proc.pid, log)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _hub_process(tmp_path: Path, name: str, *args: str) -> AbstractAsyncContextManager[HubProcess]:
    """`txverify hub ARGS` as a process of its own."""
    argv = ("-m", "txverify.cli", "hub", *args, "--port", "0", "--ready-line", *HUB_FLAGS)
    return _process(tmp_path, name, sys.executable, *argv)


async def _suspend_through(port: int, code: str) -> None:
    async with member_channel(port, "operator") as channel:
        await _set_status(
            registry_pb2_grpc.MemberRegistryStub(channel), code, MemberStatus.SUSPENDED
        )


_STATUS_PB = {
    MemberStatus.ACTIVE: registry_pb2.MEMBER_STATUS_ACTIVE,
    MemberStatus.SUSPENDED: registry_pb2.MEMBER_STATUS_SUSPENDED,
}


async def _set_status(stub: Any, code: str, status: MemberStatus) -> float:
    """SetMemberStatus through `stub`; the seconds until it was answered."""
    started = time.monotonic()
    await stub.SetMemberStatus(
        registry_pb2.SetMemberStatusRequest(code=code, status=_STATUS_PB[status], reason="test"),
        timeout=5,
    )
    return time.monotonic() - started


OK = "OK"
SUSPENDED = "PERMISSION_DENIED MEMBER_SUSPENDED"


async def _verify(stub: Any, qr: str, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    """How the hub answers a Verify: OK, or the status and reason of its refusal."""
    try:
        await stub.Verify(verification_pb2.VerifyRequest(qr_text=qr), timeout=5, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return f"{error.code().name} {details_of(error).reason}"
    return OK


@pytest.mark.timeout(90)
async def test_a_suspension_through_one_hub_process_is_refused_by_another_within_1s(
    simulator: RunningSimulator, postgres_url: str, tmp_path: Path
) -> None:
    members = members_file(simulator, tmp_path)
    qr = _slip(simulator)
    args = ("--members", str(members), "--db", postgres_url)
    async with (
        _hub_process(tmp_path, "hub-a", *args) as hub_a,
        _hub_process(tmp_path, "hub-b", *args) as hub_b,
        member_channel(hub_b.port, "002") as channel_b,
    ):
        verify_b = verification_pb2_grpc.VerificationServiceStub(channel_b)
        assert OK == await _verify(verify_b, qr)  # B admits 002 before

        asked = time.monotonic()
        await _suspend_through(hub_a.port, "002")
        acknowledged = time.monotonic()
        while (outcome := await _verify(verify_b, qr)) == OK:
            assert time.monotonic() - acknowledged < 5, "hub B still admits 002"
            await asyncio.sleep(POLL)
        refused = time.monotonic()

    took = refused - acknowledged
    print(
        f"\nsuspension through hub A refused by hub B {took * 1000:.0f} ms after A acknowledged "
        f"it ({(refused - asked) * 1000:.0f} ms after asking A)"
    )
    assert SUSPENDED == outcome
    assert took < 1.0


@pytest.mark.timeout(90)
async def test_a_suspension_reaches_every_worker_of_a_hub_on_postgresql(
    simulator: RunningSimulator, postgres_url: str, tmp_path: Path
) -> None:
    members = members_file(simulator, tmp_path)
    qr = _slip(simulator)
    args = ("--members", str(members), "--db", postgres_url, "--workers", "2")
    async with _hub_process(tmp_path, "workers", *args) as hub:
        port = hub.port
        # Connections of their own (no shared subchannel), which the kernel spreads
        # over the workers: with 8, both workers get some all but 1 time in 128.
        channels = [
            grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(8)
        ]
        try:
            stubs = [verification_pb2_grpc.VerificationServiceStub(c) for c in channels]
            as_002 = (("x-member-id", "002"),)
            assert [OK] * len(stubs) == [await _verify(s, qr, as_002) for s in stubs]

            await _suspend_through(port, "002")
            acknowledged = time.monotonic()
            waiting = list(stubs)
            refusals: list[str] = []
            while waiting:
                assert time.monotonic() - acknowledged < 5, f"{len(waiting)} still admit 002"
                outcomes = [await _verify(s, qr, as_002) for s in waiting]
                refusals += [o for o in outcomes if o != OK]
                waiting = [s for s, o in zip(waiting, outcomes, strict=True) if o == OK]
                await asyncio.sleep(POLL)
            took = time.monotonic() - acknowledged
        finally:
            for channel in channels:
                await channel.close()

    print(
        f"\nsuspension refused by every connection {took * 1000:.0f} ms after it was acknowledged"
    )
    assert [SUSPENDED] * len(stubs) == refusals
    assert took < 1.0


# -- read-your-writes: a change is answered once every live hub process has it ---------

ROUNDS = 20  # suspend, resume, ...: 10 of each


@pytest.mark.timeout(120)
async def test_the_verify_right_after_a_change_through_one_hub_process_sees_it_on_another(
    simulator: RunningSimulator, postgres_url: str, tmp_path: Path
) -> None:
    members = members_file(simulator, tmp_path)
    qr = _slip(simulator)
    args = ("--members", str(members), "--db", postgres_url)
    async with (
        _hub_process(tmp_path, "hub-a", *args) as hub_a,
        _hub_process(tmp_path, "hub-b", *args) as hub_b,
        member_channel(hub_a.port, "operator") as channel_a,
        member_channel(hub_b.port, "002") as channel_b,
    ):
        registry_a = registry_pb2_grpc.MemberRegistryStub(channel_a)
        verify_b = verification_pb2_grpc.VerificationServiceStub(channel_b)
        assert OK == await _verify(verify_b, qr)  # connected, and 002 admitted
        expected: list[str] = []
        outcomes: list[str] = []
        took: list[float] = []
        for i in range(ROUNDS):
            status = MemberStatus.SUSPENDED if i % 2 == 0 else MemberStatus.ACTIVE
            took.append(await _set_status(registry_a, "002", status))
            outcomes.append(await _verify(verify_b, qr))  # at once: no sleep
            expected.append(SUSPENDED if status is MemberStatus.SUSPENDED else OK)

    print(
        f"\nSetMemberStatus through A, answered once B applied it ({ROUNDS} changes): "
        f"p50 {statistics.median(took) * 1000:.1f} ms, max {max(took) * 1000:.1f} ms"
    )
    assert expected == outcomes


# A hub process of its own that re-reads the registry every 0.2 s (so its row in
# registry_replicas expires 3 x 0.2 + 1 s after its last report), and prints its
# port in the CLI's ready line.
_FOLLOWER = """
import asyncio, json, sys
from txverify.hub.app import serve
from txverify.hub.settings import HubSettings

settings = HubSettings(port=0, db=sys.argv[1], audit=False, registry_refresh=0.2)
ready = lambda hub: print("TXVERIFY-READY " + json.dumps({"address": f"x:{hub.port}"}), flush=True)
asyncio.run(serve(settings, ready))
"""


@pytest.mark.timeout(60)
async def test_a_killed_hub_process_delays_changes_a_bounded_time_until_its_report_expires(
    hub_factory: HubFactory, postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await hub_factory(db=postgres_url, audit=False)
    async with (
        _process(tmp_path, "follower", sys.executable, "-c", _FOLLOWER, postgres_url) as follower,
        member_channel(hub.port, "operator") as channel,
    ):
        registry = registry_pb2_grpc.MemberRegistryStub(channel)
        (gone,) = [r for r in _replica_rows(postgres_url) if f":{follower.pid}:" in r]
        fast = await _set_status(registry, "002", MemberStatus.SUSPENDED)  # it applies, alive
        os.kill(follower.pid, signal.SIGKILL)  # its row stays
        caplog.clear()
        bounded = await _set_status(registry, "002", MemberStatus.ACTIVE)
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        await _wait_for(lambda: gone not in _live_replicas(postgres_url), 5)
        caplog.clear()
        expired = await _set_status(registry, "002", MemberStatus.SUSPENDED)

    print(
        f"\nSetMemberStatus with a live follower {fast * 1000:.0f} ms, right after it was "
        f"killed {bounded * 1000:.0f} ms, once its report expired {expired * 1000:.0f} ms"
    )
    assert fast < 0.5
    assert 1.0 <= bounded < 2.0
    assert 1 == len(warned)
    assert gone in warned[0]
    assert expired < 0.5
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _live_replicas(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            str(replica)
            for (replica,) in conn.execute(
                "SELECT replica FROM registry_replicas WHERE expires_at > now()"
            )
        }
