"""The registry store, once per backend (SQLite in memory or a file, PostgreSQL): what a
save stores, loads back and keeps across reopening."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from membership_support import (
    HOUR,
    T0,
    change,
    snapshot,
    stored_member,
)
from txverify.hub.registry import (
    SLIP_VERIFICATION,
    MemberStatus,
    Role,
    Subscription,
)
from txverify.hub.registry.store import RegistryStore, open_registry_store


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
