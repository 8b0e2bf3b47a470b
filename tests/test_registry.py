"""Members load from TOML with errors that name the file and the entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from txverify.hub.registry import Member, MemberDirectory, MemberKind, dump_members, load_members


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


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"rate_limit_rps": 1e-300}, "rate_limit_rps", "0.001-1,000,000"),
        ({"rate_limit_rps": 0.0009}, "rate_limit_rps", "0.001-1,000,000"),
        ({"rate_limit_rps": 1_000_000.5}, "rate_limit_rps", "0.001-1,000,000"),
        ({"rate_limit_rps": -1.0}, "rate_limit_rps", "got -1.0"),
        ({"rate_limit_rps": float("nan")}, "rate_limit_rps", "got nan"),
        ({"rate_limit_rps": float("inf")}, "rate_limit_rps", "got inf"),
        ({"rate_limit_burst": -1}, "rate_limit_burst", "0-1,000,000"),
        ({"rate_limit_burst": 1_000_001}, "rate_limit_burst", "0-1,000,000"),
        ({"rate_limit_burst": 2.5}, "rate_limit_burst", "whole number"),
        ({"rate_limit_burst": True}, "rate_limit_burst", "whole number"),
        ({"name": "Bank\x00"}, "name", "NUL"),
        ({"code": "1" * 100_000}, "code", "3 digits"),
    ],
)
def test_member_refuses_a_bad_value_naming_the_field_and_the_range(
    changes: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=field) as caught:
        Member(**{"code": "014", **changes})

    message = str(caught.value)
    assert field == getattr(caught.value, "field", None)
    assert field in message
    assert problem in message
    assert "must not be negative" not in message
    assert len(message) < 200  # never the whole of what was sent


@pytest.mark.parametrize(
    ("rate", "burst"), [(0.0, 0), (0.001, 1), (0.001, 1_000_000), (1_000_000.0, 0), (5, 3)]
)
def test_member_takes_rates_and_bursts_in_range(rate: float, burst: int) -> None:
    member = Member("014", rate_limit_rps=rate, rate_limit_burst=burst)

    assert (rate, burst) == (member.rate_limit_rps, member.rate_limit_burst)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("rate_limit_rps = nan", "rate_limit_rps"),
        ("rate_limit_rps = -inf", "rate_limit_rps"),
        ("rate_limit_rps = 1e-300", "rate_limit_rps"),
        ('rate_limit_rps = "fast"', "rate_limit_rps"),
        ("rate_limit_burst = 2.5", "rate_limit_burst"),
        ("rate_limit_burst = true", "rate_limit_burst"),
        ("rate_limit_burst = 4294967296", "rate_limit_burst"),
    ],
)
def test_members_file_refuses_a_rate_limit_out_of_range_naming_it(
    tmp_path: Path, entry: str, field: str
) -> None:
    path = tmp_path / "members.toml"
    path.write_text(f'[[member]]\ncode = "014"\n{entry}\n', encoding="utf-8")

    with pytest.raises(ValueError, match=f"member #1: member 014: {field} ") as caught:
        load_members(path)

    assert str(path) in str(caught.value)
