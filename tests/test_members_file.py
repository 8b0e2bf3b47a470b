"""The TOML members file: round trips, and bad entries refused naming file and entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from membership_support import BBL
from txverify.hub.registry import (
    SLIP_VERIFICATION,
    Member,
    MemberKind,
    MemberStatus,
    Role,
    Subscription,
    dump_members,
    load_members,
)


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
