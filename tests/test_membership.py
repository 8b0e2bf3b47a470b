"""Membership: the registry store, lifecycle rules, bootstrap, admission and the TOML file."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from txverify.errors import Reason, ServiceError
from txverify.hub.admission import Admission
from txverify.hub.identity import Caller
from txverify.hub.membership import BOOTSTRAP, Membership
from txverify.hub.ratelimit import RateLimit, RateLimiter
from txverify.hub.registry import (
    SLIP_VERIFICATION,
    Member,
    MemberKind,
    MemberStatus,
    Role,
    Subscription,
    default_roles,
    dump_members,
    load_members,
    with_changes,
)
from txverify.hub.registry_store import Change, RegistryStore, open_registry_store
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


# --- the store, once per backend -------------------------------------------------------


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


def test_store_loads_a_saved_member_with_every_field(backend: RegistryStore) -> None:
    member = stored_member()

    backend.save(member, change(T0))

    assert [snapshot(member)] == [snapshot(m) for m in backend.load_all()]


def test_store_loads_a_member_equal_to_the_saved_one(backend: RegistryStore) -> None:
    member = stored_member()

    backend.save(member, change(T0))

    assert [member] == backend.load_all()


def test_store_gives_a_subscription_without_since_the_update_time(
    backend: RegistryStore,
) -> None:
    member = stored_member(subscriptions=(Subscription(SLIP_VERIFICATION, Role.REQUESTER),))

    backend.save(member, change(T0))

    expected = (Subscription(SLIP_VERIFICATION, Role.REQUESTER, member.updated_at),)
    assert expected == backend.load_all()[0].subscriptions


def test_store_lists_members_by_code(backend: RegistryStore) -> None:
    backend.save(stored_member(code="014", cert_identity=""), change(T0, code="014"))
    backend.save(stored_member(code="002"), change(T0))

    loaded = backend.load_all()

    assert ["002", "014"] == [m.code for m in loaded]


def test_store_history_is_oldest_first(backend: RegistryStore) -> None:
    changes = [change(T0, "REGISTER"), change(T0 + HOUR, "STATUS"), change(T0 + 2 * HOUR, "UPDATE")]
    for entry in changes:
        backend.save(stored_member(), entry)

    history = backend.history("002")

    assert changes == history


def test_store_history_is_per_member(backend: RegistryStore) -> None:
    backend.save(stored_member(), change(T0))
    backend.save(stored_member(code="014", cert_identity=""), change(T0, code="014"))

    history = backend.history("014")

    assert [change(T0, code="014")] == history


def test_store_history_of_an_unknown_code_is_empty(backend: RegistryStore) -> None:
    assert [] == backend.history("999")


def test_saving_again_replaces_the_member_and_its_subscriptions(backend: RegistryStore) -> None:
    backend.save(stored_member(), change(T0))
    requester_only = stored_member(
        name="renamed",
        status=MemberStatus.ACTIVE,
        subscriptions=(Subscription(SLIP_VERIFICATION, Role.REQUESTER, T0 + 3 * HOUR),),
        updated_at=T0 + 3 * HOUR,
    )

    backend.save(requester_only, change(T0 + 3 * HOUR, "UNSUBSCRIBE"))

    assert [snapshot(requester_only)] == [snapshot(m) for m in backend.load_all()]


def test_saving_the_same_member_twice_never_duplicates_subscriptions(
    backend: RegistryStore,
) -> None:
    member = stored_member()

    backend.save(member, change(T0))
    backend.save(member, change(T0 + HOUR, "UPDATE"))

    assert 2 == len(backend.load_all()[0].subscriptions)


def test_a_save_that_fails_part_way_changes_nothing(backend: RegistryStore, store_url: str) -> None:
    before = stored_member()
    backend.save(before, change(T0))
    after = stored_member(name="half-saved", subscriptions=())
    orphan = change(T0 + HOUR, "UPDATE", code="014")  # no member 014: the history insert fails
    # Each backend's own foreign-key error: the store passes database errors through.
    violation: type[Exception] = (
        sqlite3.IntegrityError
        if store_url.startswith("sqlite")
        else psycopg.errors.ForeignKeyViolation
    )

    with pytest.raises(violation):
        backend.save(after, orphan)

    assert [snapshot(before)] == [snapshot(m) for m in backend.load_all()]
    assert [change(T0)] == backend.history("002")


def test_store_keeps_members_and_history_after_reopening(durable_url: str) -> None:
    member = stored_member()
    first = open_registry_store(durable_url)
    first.save(member, change(T0))
    first.close()

    reopened = open_registry_store(durable_url)
    try:
        loaded, history = reopened.load_all(), reopened.history("002")
    finally:
        reopened.close()

    assert [snapshot(member)] == [snapshot(m) for m in loaded]
    assert [change(T0)] == history


def test_store_reopened_does_not_migrate_again(durable_url: str) -> None:
    open_registry_store(durable_url).close()

    reopened = open_registry_store(durable_url)
    try:
        loaded = reopened.load_all()
    finally:
        reopened.close()

    assert [] == loaded


def test_open_registry_store_refuses_other_urls() -> None:
    with pytest.raises(ValueError, match="unsupported registry URL"):
        open_registry_store("mysql://localhost/hub")


def test_a_member_without_subscriptions_loads_with_none(backend: RegistryStore) -> None:
    member = stored_member(subscriptions=())

    backend.save(member, change(T0))

    assert [member] == backend.load_all()


def test_each_save_returns_the_id_of_its_change_in_increasing_order(
    backend: RegistryStore,
) -> None:
    first = backend.save(stored_member(), change(T0))
    second = backend.save(stored_member(code="014", cert_identity=""), change(T0, code="014"))

    assert 0 < first < second


def test_a_load_reports_the_last_change_it_saw(backend: RegistryStore) -> None:
    backend.save(stored_member(), change(T0))
    last = backend.save(stored_member(), change(T0 + HOUR, "UPDATE"))

    assert last == backend.load().last_change


def test_a_load_of_an_empty_store_saw_no_change(backend: RegistryStore) -> None:
    assert ([], 0) == (backend.load().members, backend.load().last_change)


# --- Membership: lifecycle -------------------------------------------------------------


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


def test_register_makes_an_issuer_active_with_both_roles(membership: Membership) -> None:
    registered = membership.register(bank(), None, "ops")

    assert MemberStatus.ACTIVE == registered.status
    assert {Role.REQUESTER, Role.ISSUER} == roles_of(registered)


def test_default_roles_are_requester_and_issuer_for_a_member_with_an_endpoint() -> None:
    assert (Role.REQUESTER, Role.ISSUER) == default_roles(bank())


def test_register_gives_a_member_without_endpoint_the_requester_role_only(
    membership: Membership,
) -> None:
    registered = membership.register(bank(issuer_endpoint=""), None, "ops")

    assert {Role.REQUESTER} == roles_of(registered)


def test_register_subscribes_the_roles_asked_for(membership: Membership) -> None:
    registered = membership.register(bank(), [Role.ISSUER], "ops")

    assert {Role.ISSUER} == roles_of(registered)


def test_register_stamps_times_and_subscriptions_with_the_clock(
    membership: Membership, clock: Clock
) -> None:
    registered = membership.register(bank(), None, "ops")

    assert (T0, T0) == (registered.created_at, registered.updated_at)
    assert {T0} == {s.since for s in registered.subscriptions}
    assert {SLIP_VERIFICATION} == {s.service for s in registered.subscriptions}


def test_register_starts_active_whatever_status_it_is_given(membership: Membership) -> None:
    registered = membership.register(bank(status=MemberStatus.SUSPENDED), None, "ops")

    assert MemberStatus.ACTIVE == registered.status


@pytest.mark.parametrize("status", [MemberStatus.ACTIVE, MemberStatus.SUSPENDED])
def test_registering_an_existing_member_is_member_exists(
    membership: Membership, status: MemberStatus
) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", status, "", "ops")

    error = failure(lambda: membership.register(bank(name="again"), None, "ops"))

    assert (Reason.MEMBER_EXISTS, grpc.StatusCode.ALREADY_EXISTS) == (
        error.reason,
        error.status_code,
    )


def test_issuer_role_without_endpoint_is_invalid_request(membership: Membership) -> None:
    error = failure(lambda: membership.register(bank(issuer_endpoint=""), [Role.ISSUER], "ops"))

    assert (Reason.INVALID_REQUEST, grpc.StatusCode.INVALID_ARGUMENT) == (
        error.reason,
        error.status_code,
    )
    assert membership.directory.get("002") is None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(bank(cert_identity="bank-x"), bank("014", cert_identity="bank-x"), id="cert"),
        pytest.param(bank(), bank("014", cert_identity="002"), id="code-as-identity"),
    ],
)
def test_cert_identity_of_another_member_is_invalid_request(
    membership: Membership, first: Member, second: Member
) -> None:
    membership.register(first, None, "ops")

    error = failure(lambda: membership.register(second, None, "ops"))

    assert Reason.INVALID_REQUEST == error.reason
    assert membership.directory.get("014") is None


def test_member_can_be_suspended(membership: Membership) -> None:
    membership.register(bank(), None, "ops")

    suspended = membership.set_status("002", MemberStatus.SUSPENDED, "audit", "ops")

    assert MemberStatus.SUSPENDED == suspended.status


def test_suspended_member_can_be_reactivated(membership: Membership) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.SUSPENDED, "audit", "ops")

    reactivated = membership.set_status("002", MemberStatus.ACTIVE, "audit passed", "ops")

    assert MemberStatus.ACTIVE == reactivated.status


@pytest.mark.parametrize("status", [MemberStatus.ACTIVE, MemberStatus.SUSPENDED])
def test_member_can_be_terminated_from_active_or_suspended(
    membership: Membership, status: MemberStatus
) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", status, "", "ops")

    terminated = membership.set_status("002", MemberStatus.TERMINATED, "left PromptPay", "ops")

    assert MemberStatus.TERMINATED == terminated.status


@pytest.mark.parametrize("status", [MemberStatus.ACTIVE, MemberStatus.SUSPENDED])
def test_terminated_member_cannot_change_status(
    membership: Membership, status: MemberStatus
) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.TERMINATED, "", "ops")

    error = failure(lambda: membership.set_status("002", status, "", "ops"))

    assert (Reason.INVALID_TRANSITION, grpc.StatusCode.FAILED_PRECONDITION) == (
        error.reason,
        error.status_code,
    )


def test_terminated_member_cannot_be_updated(membership: Membership) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.TERMINATED, "", "ops")

    error = failure(lambda: membership.update("002", {"name": "new"}, "ops"))

    assert Reason.INVALID_TRANSITION == error.reason


@pytest.mark.parametrize("role", [Role.REQUESTER, Role.ISSUER])
def test_terminated_member_cannot_subscribe(membership: Membership, role: Role) -> None:
    membership.register(bank(), [Role.REQUESTER], "ops")
    membership.unsubscribe("002", SLIP_VERIFICATION, Role.REQUESTER, "ops")
    membership.set_status("002", MemberStatus.TERMINATED, "", "ops")

    error = failure(lambda: membership.subscribe("002", SLIP_VERIFICATION, role, "ops"))

    assert Reason.INVALID_TRANSITION == error.reason


def test_terminated_member_cannot_unsubscribe(membership: Membership) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.TERMINATED, "", "ops")

    error = failure(lambda: membership.unsubscribe("002", SLIP_VERIFICATION, Role.REQUESTER, "ops"))

    assert Reason.INVALID_TRANSITION == error.reason


def test_terminated_member_can_register_again_as_active(
    membership: Membership, clock: Clock
) -> None:
    membership.register(bank(), None, "ops")
    membership.unsubscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")
    membership.set_status("002", MemberStatus.TERMINATED, "", "ops")
    again = clock.tick()

    registered = membership.register(bank(), None, "ops")

    assert MemberStatus.ACTIVE == registered.status
    expected = {
        Subscription(SLIP_VERIFICATION, Role.REQUESTER, again),
        Subscription(SLIP_VERIFICATION, Role.ISSUER, again),
    }
    assert expected == set(registered.subscriptions)


def test_registering_again_keeps_the_old_history(membership: Membership) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.TERMINATED, "", "ops")

    membership.register(bank(), None, "ops")

    assert ["REGISTER", "STATUS", "REGISTER_AGAIN"] == [c.action for c in membership.history("002")]


def test_setting_the_same_status_records_nothing(
    membership: Membership, seen: list[Member]
) -> None:
    registered = membership.register(bank(), None, "ops")

    unchanged = membership.set_status("002", MemberStatus.ACTIVE, "", "ops")

    assert registered == unchanged
    assert 1 == len(membership.history("002"))
    assert [registered] == seen


def test_set_status_with_a_reason_over_200_characters_is_invalid_request(
    membership: Membership,
) -> None:
    membership.register(bank(), None, "ops")

    error = failure(lambda: membership.set_status("002", MemberStatus.SUSPENDED, "x" * 201, "ops"))

    assert Reason.INVALID_REQUEST == error.reason


def test_subscribe_adds_the_role_since_now(membership: Membership, clock: Clock) -> None:
    membership.register(bank(), [Role.REQUESTER], "ops")
    now = clock.tick()

    subscribed = membership.subscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")

    assert Subscription(SLIP_VERIFICATION, Role.ISSUER, now) in subscribed.subscriptions
    assert now == subscribed.updated_at


def test_subscribing_twice_records_one_change(membership: Membership) -> None:
    membership.register(bank(), [Role.REQUESTER], "ops")
    first = membership.subscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")

    second = membership.subscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")

    assert first == second
    assert ["REGISTER", "SUBSCRIBE"] == [c.action for c in membership.history("002")]


def test_unsubscribing_twice_records_one_change(membership: Membership) -> None:
    membership.register(bank(), None, "ops")
    first = membership.unsubscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")

    second = membership.unsubscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")

    assert first == second
    assert ["REGISTER", "UNSUBSCRIBE"] == [c.action for c in membership.history("002")]


def test_unsubscribing_issuer_shows_in_the_directory(membership: Membership) -> None:
    membership.register(bank(), None, "ops")

    membership.unsubscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")

    member = membership.directory.get("002")
    assert member is not None
    assert {Role.REQUESTER} == roles_of(member)


def test_subscribing_as_issuer_without_endpoint_is_invalid_request(
    membership: Membership,
) -> None:
    membership.register(bank(issuer_endpoint=""), None, "ops")

    error = failure(lambda: membership.subscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops"))

    assert Reason.INVALID_REQUEST == error.reason


def test_subscribing_to_an_unknown_service_is_invalid_request(membership: Membership) -> None:
    membership.register(bank(), None, "ops")

    error = failure(lambda: membership.subscribe("002", "coffee", Role.REQUESTER, "ops"))

    assert Reason.INVALID_REQUEST == error.reason


def test_update_changes_the_updatable_fields(membership: Membership, clock: Clock) -> None:
    membership.register(bank(), None, "ops")
    now = clock.tick()
    changes = {
        "name": "Bangkok Bank",
        "issuer_endpoint": "bbl.example:443",
        "cert_identity": "bbl",
        "rate_limit_rps": 50.0,
        "rate_limit_burst": 100,
    }

    updated = membership.update("002", changes, "ops")

    assert changes == {k: getattr(updated, k) for k in changes}
    assert (T0, now) == (updated.created_at, updated.updated_at)


@pytest.mark.parametrize(
    "changes",
    [
        {"status": MemberStatus.SUSPENDED},
        {"kind": MemberKind.NON_BANK},
        {"subscriptions": ()},
        {"code": "014"},
        {"name": "ok", "created_at": T0},
    ],
    ids=["status", "kind", "subscriptions", "code", "created_at"],
)
def test_update_of_a_field_outside_updatable_is_invalid_request(
    membership: Membership, changes: dict[str, Any]
) -> None:
    registered = membership.register(bank(), None, "ops")

    error = failure(lambda: membership.update("002", changes, "ops"))

    assert Reason.INVALID_REQUEST == error.reason
    assert registered == membership.get("002")


@pytest.mark.parametrize(
    "changes",
    [
        {"issuer_endpoint": "no-port"},
        {"issuer_endpoint": "host:port"},
        {"cert_identity": "has space"},
        {"rate_limit_rps": -1.0},
        {"name": "x" * 201},
    ],
    ids=["endpoint-no-port", "endpoint-bad-port", "identity", "negative-rate", "long-name"],
)
def test_update_with_an_invalid_value_is_invalid_request(
    membership: Membership, changes: dict[str, Any]
) -> None:
    registered = membership.register(bank(), None, "ops")

    error = failure(lambda: membership.update("002", changes, "ops"))

    assert (Reason.INVALID_REQUEST, grpc.StatusCode.INVALID_ARGUMENT) == (
        error.reason,
        error.status_code,
    )
    assert registered == membership.get("002")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rate_limit_rps": 1e-300}, "member.rate_limit_rps"),
        ({"rate_limit_rps": float("nan")}, "member.rate_limit_rps"),
        ({"rate_limit_rps": float("inf")}, "member.rate_limit_rps"),
        ({"rate_limit_rps": 1e300}, "member.rate_limit_rps"),
        ({"rate_limit_burst": 4_294_967_295}, "member.rate_limit_burst"),
        ({"name": "Bank\x00"}, "member.name"),
        ({"issuer_endpoint": "x" * 100_000}, "member.issuer_endpoint"),
    ],
    ids=["tiny-rate", "nan-rate", "infinite-rate", "huge-rate", "huge-burst", "nul", "huge"],
)
def test_update_with_a_value_out_of_range_names_the_field(
    membership: Membership, changes: dict[str, Any], field: str
) -> None:
    registered = membership.register(bank(), None, "ops")

    error = failure(lambda: membership.update("002", changes, "ops"))

    assert (Reason.INVALID_REQUEST, field) == (error.reason, error.metadata["field"])
    assert [field] == [v.field for v in error.violations]
    assert len(error.message) < 300  # never the whole of what was sent
    assert registered == membership.get("002")


def test_set_status_with_a_nul_in_the_reason_is_invalid_request(membership: Membership) -> None:
    # PostgreSQL cannot store a NUL in text: it must be refused, not fail in the store.
    registered = membership.register(bank(), None, "ops")

    error = failure(lambda: membership.set_status("002", MemberStatus.SUSPENDED, "a\x00", "ops"))

    assert (Reason.INVALID_REQUEST, ("reason",)) == (
        error.reason,
        tuple(v.field for v in error.violations),
    )
    assert registered == membership.get("002")


def test_get_of_a_huge_code_says_not_found_without_echoing_it(membership: Membership) -> None:
    error = failure(lambda: membership.get("7" * 100_000))

    assert Reason.MEMBER_NOT_FOUND == error.reason
    assert len(error.message) < 100


def test_update_removing_the_endpoint_of_an_issuer_is_invalid_request(
    membership: Membership,
) -> None:
    membership.register(bank(), None, "ops")

    error = failure(lambda: membership.update("002", {"issuer_endpoint": ""}, "ops"))

    assert Reason.INVALID_REQUEST == error.reason


def test_update_to_another_members_identity_is_invalid_request(membership: Membership) -> None:
    membership.register(bank(cert_identity="bank-x"), None, "ops")
    membership.register(bank("014"), None, "ops")

    error = failure(lambda: membership.update("014", {"cert_identity": "bank-x"}, "ops"))

    assert Reason.INVALID_REQUEST == error.reason


def test_every_change_is_in_history_with_actor_action_and_details(
    membership: Membership, clock: Clock
) -> None:
    membership.register(bank(), [Role.REQUESTER], "alice")
    clock.tick()
    membership.update("002", {"name": "Bangkok Bank"}, "bob")
    clock.tick()
    membership.subscribe("002", SLIP_VERIFICATION, Role.ISSUER, "carol")
    clock.tick()
    membership.unsubscribe("002", SLIP_VERIFICATION, Role.ISSUER, "dave")
    clock.tick()
    membership.set_status("002", MemberStatus.SUSPENDED, "unpaid fees", "erin")

    history = membership.history("002")

    expected = [
        (T0, "alice", "REGISTER"),
        (T0 + HOUR, "bob", "UPDATE"),
        (T0 + 2 * HOUR, "carol", "SUBSCRIBE"),
        (T0 + 3 * HOUR, "dave", "UNSUBSCRIBE"),
        (T0 + 4 * HOUR, "erin", "STATUS"),
    ]
    assert expected == [(c.at, c.actor, c.action) for c in history]
    assert "REQUESTER" in history[0].details
    assert "'Bank 002' -> 'Bangkok Bank'" in history[1].details
    assert "ISSUER" in history[2].details
    assert "ISSUER" in history[3].details
    assert "SUSPENDED" in history[4].details
    assert "unpaid fees" in history[4].details


def test_on_change_is_told_the_new_member_for_every_change(
    membership: Membership, seen: list[Member]
) -> None:
    returned = [
        membership.register(bank(), [Role.REQUESTER], "ops"),
        membership.update("002", {"name": "Bangkok Bank"}, "ops"),
        membership.subscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops"),
        membership.unsubscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops"),
        membership.set_status("002", MemberStatus.SUSPENDED, "", "ops"),
        membership.set_status("002", MemberStatus.TERMINATED, "", "ops"),
        membership.register(bank(), None, "ops"),
    ]

    assert returned == seen


def test_a_failed_change_tells_no_one(membership: Membership, seen: list[Member]) -> None:
    registered = membership.register(bank(), None, "ops")

    failure(lambda: membership.update("002", {"issuer_endpoint": "nope"}, "ops"))

    assert [registered] == seen
    assert 1 == len(membership.history("002"))


def test_directory_is_replaced_on_change_and_an_old_reference_keeps_the_old_view(
    membership: Membership,
) -> None:
    membership.register(bank(), None, "ops")
    old = membership.directory

    membership.set_status("002", MemberStatus.SUSPENDED, "", "ops")

    assert old is not membership.directory
    old_member = old.get("002")
    assert old_member is not None
    assert MemberStatus.ACTIVE == old_member.status


def test_new_directory_answers_by_code_and_by_identity(membership: Membership) -> None:
    membership.register(bank(), None, "ops")

    updated = membership.update("002", {"cert_identity": "bbl"}, "ops")

    assert updated == membership.directory.get("002")
    assert updated == membership.directory.by_identity("bbl")


def test_get_of_an_unknown_code_is_member_not_found(membership: Membership) -> None:
    error = failure(lambda: membership.get("999"))

    assert (Reason.MEMBER_NOT_FOUND, grpc.StatusCode.NOT_FOUND) == (
        error.reason,
        error.status_code,
    )


def test_history_of_an_unknown_code_is_member_not_found(membership: Membership) -> None:
    error = failure(lambda: membership.history("999"))

    assert Reason.MEMBER_NOT_FOUND == error.reason


# --- durability --------------------------------------------------------------------------


def test_membership_over_a_reopened_store_sees_the_same_members(
    durable_url: str, clock: Clock
) -> None:
    url = durable_url
    first_store = open_registry_store(url)
    first = Membership(first_store, clock=clock)
    first.register(bank(cert_identity="bbl"), None, "ops")
    first.register(bank("014", issuer_endpoint=""), None, "ops")
    clock.tick()
    first.set_status("014", MemberStatus.SUSPENDED, "audit", "ops")
    first.unsubscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")
    before = [snapshot(m) for m in first.directory.all()]
    history_before = first.history("002")
    first_store.close()

    reopened_store = open_registry_store(url)
    try:
        reopened = Membership(reopened_store, clock=clock)
        after = [snapshot(m) for m in reopened.directory.all()]
        history_after = reopened.history("002")
        by_identity = reopened.directory.by_identity("bbl")
    finally:
        reopened_store.close()

    assert before == after
    assert history_before == history_after
    assert by_identity is not None
    assert "002" == by_identity.code


# --- several processes on one store ------------------------------------------------------


@pytest.fixture
def two_stores(durable_url: str) -> Iterator[tuple[RegistryStore, RegistryStore]]:
    """Two connections to one store, as two hub processes have."""
    first, second = open_registry_store(durable_url), open_registry_store(durable_url)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def test_refresh_takes_in_a_change_made_through_another_store(
    two_stores: tuple[RegistryStore, RegistryStore], clock: Clock
) -> None:
    here = Membership(two_stores[0], clock=clock, shared=True)
    there = Membership(two_stores[1], clock=clock, shared=True)
    here.register(bank(), None, "ops")
    there.refresh()
    suspended = here.set_status("002", MemberStatus.SUSPENDED, "audit", "ops")

    changed = there.refresh()

    assert [suspended] == changed
    assert suspended == there.get("002")


def test_a_shared_membership_checks_a_change_against_a_fresh_read(
    two_stores: tuple[RegistryStore, RegistryStore], clock: Clock
) -> None:
    here = Membership(two_stores[0], clock=clock, shared=True)
    there = Membership(two_stores[1], clock=clock, shared=True)  # read before 002 existed
    here.register(bank(), None, "ops")

    error = failure(lambda: there.register(bank(name="again"), None, "ops"))

    assert Reason.MEMBER_EXISTS == error.reason


def test_a_read_from_before_a_change_made_here_is_not_taken(membership: Membership) -> None:
    stale = membership.store.load()
    read_at = membership.version
    registered = membership.register(bank(), None, "ops")

    taken = membership.take(stale, read_at)

    assert taken is None
    assert registered == membership.get("002")


def test_a_read_taken_tells_on_change_of_each_changed_member(
    two_stores: tuple[RegistryStore, RegistryStore], clock: Clock
) -> None:
    seen: list[Member] = []
    here = Membership(two_stores[0], clock=clock, shared=True)
    there = Membership(two_stores[1], clock=clock, shared=True, on_change=seen.append)
    registered = here.register(bank(), None, "ops")

    taken = there.take(two_stores[1].load(), there.version)

    assert [registered] == taken
    assert [registered] == seen


def test_a_change_made_here_is_the_last_change_but_not_yet_applied_from_a_read(
    two_stores: tuple[RegistryStore, RegistryStore], clock: Clock
) -> None:
    here = Membership(two_stores[0], clock=clock, shared=True)
    there = Membership(two_stores[1], clock=clock, shared=True)
    there.register(bank("014", issuer_endpoint=""), None, "ops")
    here.register(bank(), None, "ops")  # reads 014's change (1) first, then makes its own (2)

    assert (1, 2) == (here.applied, here.last_change)


def test_taking_a_read_applies_every_change_it_saw(
    two_stores: tuple[RegistryStore, RegistryStore], clock: Clock
) -> None:
    here = Membership(two_stores[0], clock=clock, shared=True)
    there = Membership(two_stores[1], clock=clock, shared=True)
    here.register(bank(), None, "ops")
    here.set_status("002", MemberStatus.SUSPENDED, "audit", "ops")

    there.take(two_stores[1].load(), there.version)

    assert (2, 2) == (there.applied, there.last_change)


async def test_on_sqlite_a_change_waits_for_no_other_process(tmp_path: Path) -> None:
    # (PostgreSQL keeps replicas: tests/test_postgres_registry.py.)
    store = open_registry_store(f"sqlite://{tmp_path}/hub.sqlite")
    try:
        membership = Membership(store, shared=True)
        membership.register(bank(), None, "ops")

        behind = await membership.wait_applied(membership.last_change, within=5)
    finally:
        store.close()

    assert (None, {}) == (store.replicas, behind)


def test_bootstrap_of_a_member_another_process_registered_meanwhile_registers_it_once(
    two_stores: tuple[RegistryStore, RegistryStore], clock: Clock, tmp_path: Path
) -> None:
    members = members_file(tmp_path, BBL)
    here = Membership(two_stores[0], clock=clock, shared=True)
    there = Membership(two_stores[1], clock=clock, shared=True)  # both read an empty registry
    here.bootstrap(members)

    there.bootstrap(members)

    assert [(BOOTSTRAP, "REGISTER")] == [(c.actor, c.action) for c in there.history("002")]
    assert here.get("002") == there.get("002")


# --- bootstrap --------------------------------------------------------------------------


def members_file(tmp_path: Path, text: str) -> list[Member]:
    path = tmp_path / "members.toml"
    path.write_text(text, encoding="utf-8")
    return load_members(path)


BBL = '[[member]]\ncode = "002"\nname = "Bangkok Bank"\nissuer_endpoint = "127.0.0.1:50061"\n'
KBANK = '[[member]]\ncode = "004"\nname = "Kasikorn"\nroles = ["REQUESTER"]\n'


def test_bootstrap_registers_missing_members_as_bootstrap(
    membership: Membership, tmp_path: Path
) -> None:
    members = members_file(tmp_path, BBL + KBANK)

    membership.bootstrap(members)

    assert ["002", "004"] == [m.code for m in membership.directory.all()]
    assert [(BOOTSTRAP, "REGISTER")] == [(c.actor, c.action) for c in membership.history("002")]
    assert [(BOOTSTRAP, "REGISTER")] == [(c.actor, c.action) for c in membership.history("004")]


def test_bootstrap_subscribes_the_roles_the_file_gives(
    membership: Membership, tmp_path: Path
) -> None:
    members = members_file(tmp_path, BBL + KBANK)

    membership.bootstrap(members)

    assert {Role.REQUESTER, Role.ISSUER} == roles_of(membership.get("002"))
    assert {Role.REQUESTER} == roles_of(membership.get("004"))


def test_bootstrap_subscribes_nothing_for_a_file_entry_with_no_roles(
    membership: Membership, tmp_path: Path
) -> None:
    members = members_file(tmp_path, BBL + "roles = []\n")

    membership.bootstrap(members)

    assert set() == roles_of(membership.get("002"))


def test_bootstrap_takes_name_and_endpoint_of_a_known_member_from_the_file(
    membership: Membership, tmp_path: Path
) -> None:
    membership.register(bank(name="old name", issuer_endpoint="127.0.0.1:1"), None, "ops")
    members = members_file(tmp_path, BBL)

    membership.bootstrap(members)

    member = membership.get("002")
    assert ("Bangkok Bank", "127.0.0.1:50061") == (member.name, member.issuer_endpoint)
    assert (BOOTSTRAP, "UPDATE") == (
        membership.history("002")[-1].actor,
        membership.history("002")[-1].action,
    )


def test_bootstrap_keeps_status_and_subscriptions_set_by_an_operator(
    membership: Membership, tmp_path: Path
) -> None:
    membership.register(bank(), None, "ops")
    membership.unsubscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")
    membership.set_status("002", MemberStatus.SUSPENDED, "audit", "ops")
    members = members_file(tmp_path, BBL + 'status = "ACTIVE"\nroles = ["REQUESTER", "ISSUER"]\n')

    membership.bootstrap(members)

    member = membership.get("002")
    assert MemberStatus.SUSPENDED == member.status
    assert {Role.REQUESTER} == roles_of(member)


def test_bootstrap_of_an_unchanged_file_records_nothing(
    membership: Membership, tmp_path: Path
) -> None:
    members = members_file(tmp_path, BBL)
    membership.bootstrap(members)

    membership.bootstrap(members)

    assert 1 == len(membership.history("002"))


def test_bootstrap_registers_then_suspends_a_member_the_file_says_is_suspended(
    membership: Membership, tmp_path: Path
) -> None:
    members = members_file(tmp_path, BBL + 'status = "SUSPENDED"\n')

    membership.bootstrap(members)

    assert MemberStatus.SUSPENDED == membership.get("002").status
    assert [(BOOTSTRAP, "REGISTER"), (BOOTSTRAP, "STATUS")] == [
        (c.actor, c.action) for c in membership.history("002")
    ]


def test_bootstrap_leaves_a_terminated_member_alone(membership: Membership, tmp_path: Path) -> None:
    membership.register(bank(name="old name"), None, "ops")
    terminated = membership.set_status("002", MemberStatus.TERMINATED, "left", "ops")
    members = members_file(tmp_path, BBL)

    membership.bootstrap(members)

    assert terminated == membership.get("002")
    assert 2 == len(membership.history("002"))


# --- admission ------------------------------------------------------------------------


@pytest.fixture
def admission(membership: Membership) -> Admission:
    return Admission(membership, RateLimiter(None))


def test_requester_is_admitted_when_active_and_subscribed(
    membership: Membership, admission: Admission
) -> None:
    registered = membership.register(bank(), None, "ops")

    admitted = admission.requester(Caller("002", "002"))

    assert registered == admitted


def test_unknown_identity_is_unknown_member(admission: Admission) -> None:
    error = failure(lambda: admission.requester(Caller("002", "")))

    assert (Reason.UNKNOWN_MEMBER, grpc.StatusCode.UNAUTHENTICATED) == (
        error.reason,
        error.status_code,
    )


def test_claim_differing_from_the_certificate_is_identity_mismatch(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), None, "ops")
    membership.register(bank("014"), None, "ops")

    error = failure(lambda: admission.requester(Caller("002", "014")))

    assert (Reason.IDENTITY_MISMATCH, grpc.StatusCode.UNAUTHENTICATED) == (
        error.reason,
        error.status_code,
    )


def test_suspended_requester_is_member_suspended(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.SUSPENDED, "", "ops")

    error = failure(lambda: admission.requester(Caller("002", "")))

    assert (Reason.MEMBER_SUSPENDED, grpc.StatusCode.PERMISSION_DENIED) == (
        error.reason,
        error.status_code,
    )


def test_terminated_requester_is_member_terminated(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.TERMINATED, "", "ops")

    error = failure(lambda: admission.requester(Caller("002", "")))

    assert (Reason.MEMBER_TERMINATED, grpc.StatusCode.PERMISSION_DENIED) == (
        error.reason,
        error.status_code,
    )


def test_requester_not_subscribed_as_requester_is_not_subscribed(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), [Role.ISSUER], "ops")

    error = failure(lambda: admission.requester(Caller("002", "")))

    assert (Reason.NOT_SUBSCRIBED, grpc.StatusCode.PERMISSION_DENIED) == (
        error.reason,
        error.status_code,
    )


async def _refused(admission: Admission, caller: Caller) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await admission.admit(caller)
    return caught.value


async def test_third_immediate_call_over_a_burst_of_two_is_rate_limited(
    membership: Membership,
) -> None:
    membership.register(bank(), None, "ops")
    limited = Admission(membership, RateLimiter(RateLimit(rate=1, burst=2), clock=Seconds()))
    await limited.admit(Caller("002", ""))
    await limited.admit(Caller("002", ""))

    error = await _refused(limited, Caller("002", ""))

    assert (Reason.RATE_LIMITED, grpc.StatusCode.RESOURCE_EXHAUSTED) == (
        error.reason,
        error.status_code,
    )
    assert error.retry_after is not None
    assert error.retry_after > 0
    assert pytest.approx(1.0) == error.retry_after


async def test_rate_limited_requester_is_admitted_after_waiting(membership: Membership) -> None:
    registered = membership.register(bank(), None, "ops")
    seconds = Seconds()
    limited = Admission(membership, RateLimiter(RateLimit(rate=1, burst=2), clock=seconds))
    await limited.admit(Caller("002", ""))
    await limited.admit(Caller("002", ""))
    wait = (await _refused(limited, Caller("002", ""))).retry_after
    assert wait is not None
    seconds.now += wait

    admitted = await limited.admit(Caller("002", ""))

    assert registered == admitted


def test_the_membership_rules_alone_take_no_token(membership: Membership) -> None:
    membership.register(bank(), None, "ops")
    limiter = RateLimiter(RateLimit(rate=1, burst=1), clock=Seconds())
    limited = Admission(membership, limiter)

    for _ in range(3):
        limited.requester(Caller("002", ""))

    assert 0.0 == limiter.try_take("002")  # the one token is still there


def test_member_with_cert_identity_is_found_by_it_not_by_its_code(
    membership: Membership, admission: Admission
) -> None:
    registered = membership.register(bank(cert_identity="bank-x"), None, "ops")

    admitted = admission.requester(Caller("bank-x", ""))
    error = failure(lambda: admission.requester(Caller("002", "")))

    assert registered == admitted
    assert Reason.UNKNOWN_MEMBER == error.reason


def test_active_subscribed_issuer_is_found(membership: Membership, admission: Admission) -> None:
    registered = membership.register(bank(), None, "ops")

    found = admission.issuer("002")

    assert registered == found


@pytest.mark.parametrize("terminated", [False, True], ids=["unknown", "terminated"])
def test_issuer_unknown_or_terminated_is_issuer_not_found(
    membership: Membership, admission: Admission, terminated: bool
) -> None:
    if terminated:
        membership.register(bank(), None, "ops")
        membership.set_status("002", MemberStatus.TERMINATED, "", "ops")

    error = failure(lambda: admission.issuer("002"))

    assert (Reason.ISSUER_NOT_FOUND, grpc.StatusCode.NOT_FOUND) == (
        error.reason,
        error.status_code,
    )


def test_suspended_issuer_is_issuer_not_subscribed(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.SUSPENDED, "", "ops")

    error = failure(lambda: admission.issuer("002"))

    assert (Reason.ISSUER_NOT_SUBSCRIBED, grpc.StatusCode.NOT_FOUND) == (
        error.reason,
        error.status_code,
    )


def test_issuer_that_unsubscribed_as_issuer_is_issuer_not_subscribed(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), None, "ops")
    membership.unsubscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")

    error = failure(lambda: admission.issuer("002"))

    assert Reason.ISSUER_NOT_SUBSCRIBED == error.reason


# --- the TOML members file ----------------------------------------------------------------


def test_members_file_round_trips_roles_status_identity_and_rate_limits(tmp_path: Path) -> None:
    members = [
        Member(
            "002",
            name='Bangkok "BBL" \\ ธนาคาร',
            issuer_endpoint="127.0.0.1:50061",
            status=MemberStatus.SUSPENDED,
            subscriptions=(Subscription(SLIP_VERIFICATION, Role.ISSUER),),
            cert_identity="bank-x",
            rate_limit_rps=2.5,
            rate_limit_burst=7,
        ),
        Member(
            "900",
            name="Wallet",
            kind=MemberKind.NON_BANK,
            status=MemberStatus.TERMINATED,
            subscriptions=(Subscription(SLIP_VERIFICATION, Role.REQUESTER),),
        ),
        Member("014", name="No roles", issuer_endpoint="[::1]:50062"),
    ]
    path = tmp_path / "members.toml"
    path.write_text(dump_members(members), encoding="utf-8")

    loaded = load_members(path)

    assert members == loaded


def test_members_file_round_trips_a_name_with_a_newline(tmp_path: Path) -> None:
    members = [Member("002", name="Bangkok Bank\nHead Office")]
    path = tmp_path / "members.toml"
    path.write_text(dump_members(members), encoding="utf-8")

    loaded = load_members(path)

    assert members == loaded


@pytest.mark.parametrize(
    "entry",
    [
        'code = "014"\nrate_limit_rps = inf\n',
        'code = "014"\nroles = ["REQUESTER", "AUDITOR"]\n',
    ],
    ids=["infinite-rate", "unknown-role"],
)
def test_members_file_refuses_a_bad_entry_naming_the_file_and_entry(
    tmp_path: Path, entry: str
) -> None:
    path = tmp_path / "members.toml"
    path.write_text(BBL + "[[member]]\n" + entry, encoding="utf-8")

    with pytest.raises(ValueError, match="member #2") as caught:
        load_members(path)

    assert str(path) in str(caught.value)
