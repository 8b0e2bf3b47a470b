"""Bootstrap from the members file: missing members registered, operators' changes kept."""

from __future__ import annotations

from pathlib import Path

from membership_support import (
    BBL,
    KBANK,
    bank,
    members_file,
    roles_of,
)
from txverify.hub.membership import BOOTSTRAP, Membership
from txverify.hub.registry import (
    SLIP_VERIFICATION,
    MemberStatus,
    Role,
)


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
