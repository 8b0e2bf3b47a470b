"""Several hub processes on one registry store: changes made through another store are
taken in, checked against a fresh read, and never applied twice."""

from __future__ import annotations

from pathlib import Path

from membership_support import (
    BBL,
    Clock,
    bank,
    failure,
    members_file,
)
from txverify.errors import Reason
from txverify.hub.membership import BOOTSTRAP, Membership
from txverify.hub.registry import (
    Member,
    MemberStatus,
)
from txverify.hub.registry.store import RegistryStore, open_registry_store


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
