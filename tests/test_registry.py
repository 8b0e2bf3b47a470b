"""Members load from TOML with errors that name the file and the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.registry import Member, MemberDirectory, MemberKind, dump_members, load_members


def test_members_round_trip_through_toml(tmp_path: Path) -> None:
    members = [
        Member("002", "Bangkok Bank", MemberKind.BANK, "127.0.0.1:50061"),
        Member("900", 'Wallet "Co"', MemberKind.NON_BANK, "[::1]:50062"),
    ]
    path = tmp_path / "members.toml"
    path.write_text(dump_members(members), encoding="utf-8")

    assert members == load_members(path)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[member]]\nname = "x"\n', "member #1: 'code'"),
        ('[[member]]\ncode = "14"\n', "member code must be 3 digits"),
        ('[[member]]\ncode = "014"\nkind = "BANKZ"\n', "member #1"),
        ('[[member]]\ncode = "014"\nissuer_endpoint = "nope"\n', "host:port"),
        ("member = 3\n", "array of tables"),
        ("[[member]\n", "cannot read members"),
    ],
)
def test_bad_members_file_is_refused_with_a_clear_message(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "members.toml"
    path.write_text(toml, encoding="utf-8")

    with pytest.raises(ValueError, match=message) as caught:
        load_members(path)

    assert str(path) in str(caught.value)


def test_directory_refuses_a_code_listed_twice() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        MemberDirectory([Member("002", "a"), Member("002", "b")])


def test_directory_finds_members_by_code() -> None:
    directory = MemberDirectory([Member("014", "SCB", issuer_endpoint="localhost:1")])

    assert "SCB" == directory.get("014").name  # type: ignore[union-attr]
    assert directory.get("002") is None
