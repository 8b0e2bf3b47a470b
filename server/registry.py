"""The hub's view of its members: who may be asked about which slips, loaded from TOML."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from txverify.banks import is_member_code

_ENDPOINT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}")  # fullmatch


class MemberKind(StrEnum):
    """Banks and non-banks (e-wallet providers) can both be members."""

    BANK = "BANK"
    NON_BANK = "NON_BANK"


@dataclass(frozen=True, slots=True)
class Member:
    """A member of the verification service, as the hub routes to it."""

    code: str
    name: str
    kind: MemberKind = MemberKind.BANK
    issuer_endpoint: str = ""  # host:port of its IssuerService; "" = not an issuer

    def __post_init__(self) -> None:
        if not is_member_code(self.code):
            raise ValueError(f"member code must be 3 digits, got {self.code!r}")
        if self.issuer_endpoint and not _ENDPOINT.fullmatch(self.issuer_endpoint):
            raise ValueError(
                f"member {self.code}: issuer_endpoint must be host:port, "
                f"got {self.issuer_endpoint!r}"
            )


class MemberDirectory:
    """In-memory view of the members; lookups never touch storage."""

    def __init__(self, members: Iterable[Member] = ()) -> None:
        self._by_code: dict[str, Member] = {}
        for member in members:
            if member.code in self._by_code:
                raise ValueError(f"member {member.code} is listed twice")
            self._by_code[member.code] = member

    def get(self, code: str) -> Member | None:
        return self._by_code.get(code)

    def all(self) -> list[Member]:
        return sorted(self._by_code.values(), key=lambda m: m.code)


def load_members(path: Path) -> list[Member]:
    """Read `[[member]]` tables from a TOML file; errors name the file and the entry."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read members: {exc}") from exc
    entries = data.get("member", [])
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'member' must be an array of tables ([[member]])")
    members: list[Member] = []
    for i, entry in enumerate(entries, start=1):
        try:
            members.append(
                Member(
                    code=str(entry["code"]),
                    name=str(entry.get("name", "")),
                    kind=MemberKind(entry.get("kind", "BANK")),
                    issuer_endpoint=str(entry.get("issuer_endpoint", "")),
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: member #{i}: {exc}") from exc
    return members


def dump_members(members: Iterable[Member]) -> str:
    """TOML text that load_members reads back to the same members."""
    blocks = [
        "[[member]]\n"
        f'code = "{m.code}"\n'
        f"name = {_toml_str(m.name)}\n"
        f'kind = "{m.kind.value}"\n'
        f'issuer_endpoint = "{m.issuer_endpoint}"\n'
        for m in members
    ]
    return "\n".join(blocks)


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
