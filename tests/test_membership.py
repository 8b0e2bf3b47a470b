"""Membership: the lifecycle rules of members (register, status, subscriptions, updates),
the history of changes, and what survives reopening the store."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from membership_support import (
    HOUR,
    T0,
    Clock,
    bank,
    failure,
    roles_of,
    snapshot,
)
from txverify.errors import Reason
from txverify.hub.membership import Membership
from txverify.hub.registry import (
    SLIP_VERIFICATION,
    Member,
    MemberKind,
    MemberStatus,
    Role,
    Subscription,
    default_roles,
)
from txverify.hub.registry.store import open_registry_store


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
