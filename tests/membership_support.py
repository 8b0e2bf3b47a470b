"""What the registry and membership tests share: a clock, sample members, and the
fixtures (registered for every test module by conftest.py's pytest_plugins)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from txverify.errors import ServiceError
from txverify.hub.membership import Membership
from txverify.hub.registry import (
    SLIP_VERIFICATION,
    Member,
    MemberKind,
    MemberStatus,
    Role,
    Subscription,
    load_members,
    with_changes,
)
from txverify.hub.registry.store import Change, RegistryStore, open_registry_store
from txverify.units import BANGKOK

T0 = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=BANGKOK)
HOUR = timedelta(hours=1)


class Clock:
    """Membership's clock: returns `now` until a test moves it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, delta: timedelta = HOUR) -> datetime:
        self.now += delta
        return self.now


class Seconds:
    """The rate limiter's clock (monotonic seconds), moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bank(code: str = "002", **changes: Any) -> Member:
    """A member with an issuer endpoint (so REQUESTER + ISSUER by default)."""
    return with_changes(
        Member(code, name=f"Bank {code}", issuer_endpoint=f"127.0.0.1:5{code}"), **changes
    )


def roles_of(member: Member) -> set[Role]:
    return {s.role for s in member.subscriptions}


def snapshot(member: Member) -> dict[str, object]:
    """Every field, times included; subscriptions as a set (their order carries no meaning)."""
    fields: dict[str, object] = {
        f.name: getattr(member, f.name) for f in dataclasses.fields(member)
    }
    fields["subscriptions"] = frozenset(member.subscriptions)
    return fields


def failure(call: Callable[[], object]) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call()
    return caught.value


def stored_member(**changes: Any) -> Member:
    """A member as the store receives it, with every field set and non-UTC times."""
    member = Member(
        code="002",
        name='ธนาคารกรุงเทพ "BBL" \\ x',
        kind=MemberKind.NON_BANK,
        issuer_endpoint="[::1]:50061",
        status=MemberStatus.SUSPENDED,
        subscriptions=(
            Subscription(SLIP_VERIFICATION, Role.REQUESTER, T0),
            Subscription(SLIP_VERIFICATION, Role.ISSUER, T0 + HOUR),
        ),
        cert_identity="bank-x.example",
        rate_limit_rps=2.5,
        rate_limit_burst=4,
        created_at=T0,
        updated_at=T0 + 2 * HOUR,
    )
    return with_changes(member, **changes)


def change(at: datetime, action: str = "REGISTER", code: str = "002") -> Change:
    return Change(code, at, "ops@bank", action, f"{action} at {at.isoformat()}")


def backend_url(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    """The URL of a fresh, empty store: SQLite in memory or in a file, or a PostgreSQL
    schema of its own (skipped, saying why, when there is no PostgreSQL)."""
    if backend == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return "sqlite://" if backend == "memory" else f"sqlite://{tmp_path}/hub.sqlite"


@pytest.fixture(params=["memory", "file", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path, request.param)


@pytest.fixture(params=["file", "postgresql"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store that outlives its connections, so a second one (another process) sees it."""
    return backend_url(request, tmp_path, request.param)


@pytest.fixture
def backend(store_url: str) -> Iterator[RegistryStore]:
    store = open_registry_store(store_url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(params=["memory", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryStore]:
    opened = open_registry_store(backend_url(request, tmp_path, request.param))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def seen() -> list[Member]:
    """Every member `on_change` was told about, in order."""
    return []


@pytest.fixture
def membership(store: RegistryStore, clock: Clock, seen: list[Member]) -> Membership:
    return Membership(store, clock=clock, on_change=seen.append)


@pytest.fixture
def two_stores(durable_url: str) -> Iterator[tuple[RegistryStore, RegistryStore]]:
    """Two connections to one store, as two hub processes have."""
    first, second = open_registry_store(durable_url), open_registry_store(durable_url)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def members_file(tmp_path: Path, text: str) -> list[Member]:
    """The members a members.toml of `text` holds."""
    path = tmp_path / "members.toml"
    path.write_text(text, encoding="utf-8")
    return load_members(path)


BBL = '[[member]]\ncode = "002"\nname = "Bangkok Bank"\nissuer_endpoint = "127.0.0.1:50061"\n'
KBANK = '[[member]]\ncode = "004"\nname = "Kasikorn"\nroles = ["REQUESTER"]\n'
