"""Members of the verification service: records, the in-memory directory, TOML bootstrap."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

from txverify.banks import is_member_code
from txverify.hub.resilience.ratelimit import burst_problem, rate_problem
from txverify.runtime import tls

_ENDPOINT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}")  # fullmatch
_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch
SLIP_VERIFICATION = "slip-verification"
_RESERVED_IDENTITIES = frozenset({tls.HUB, tls.OPERATOR, tls.SIMULATOR, tls.QA})
SERVICES = frozenset({SLIP_VERIFICATION})
MAX_NAME = 200
SHOWN = 40  # characters of a bad value quoted back: a message must stay small


def shown(value: object) -> str:
    """`value` as an error message quotes it: repr, cut short (a caller may send 1 MiB,
    and a status message over 16 KB cannot be sent back at all)."""
    text = repr(value)
    if len(text) <= SHOWN:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[:SHOWN]}...{size}"


class InvalidMember(ValueError):
    """A member field with a value the hub refuses; `field` is its name in a Member."""

    def __init__(self, code: str, field: str, problem: str) -> None:
        where = f"member {code}: " if code else "member "
        super().__init__(f"{where}{field} {problem}")
        self.field = field
        self.problem = problem


class MemberKind(StrEnum):
    """Banks and non-banks (e-wallet providers) can both be members."""

    BANK = "BANK"
    NON_BANK = "NON_BANK"


class MemberStatus(StrEnum):
    """A member's lifecycle: ACTIVE <-> SUSPENDED, either -> TERMINATED (final)."""

    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    TERMINATED = "TERMINATED"


class Role(StrEnum):
    """The side of a service a member subscribes to."""

    REQUESTER = "REQUESTER"
    ISSUER = "ISSUER"


@dataclass(frozen=True, slots=True)
class Subscription:
    """A member's subscription to a service in a role."""

    service: str
    role: Role
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """A member of the verification service, as the hub knows it."""

    code: str
    name: str = ""
    kind: MemberKind = MemberKind.BANK
    issuer_endpoint: str = ""  # host:port of its IssuerService; "" = not an issuer
    status: MemberStatus = MemberStatus.ACTIVE
    subscriptions: tuple[Subscription, ...] = ()
    cert_identity: str = ""  # CN of its client certificate; "" = the code
    rate_limit_rps: float = 0.0  # 0 = the hub's default
    rate_limit_burst: int = 0
    created_at: datetime | None = field(default=None, compare=False)
    updated_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not is_member_code(self.code):
            self._invalid("code", f"must be 3 digits, got {shown(self.code)}")
        if self.issuer_endpoint and not _ENDPOINT.fullmatch(self.issuer_endpoint):
            self._invalid(
                "issuer_endpoint", f"must be host:port, got {shown(self.issuer_endpoint)}"
            )
        if self.cert_identity and not _IDENTITY.fullmatch(self.cert_identity):
            self._invalid(
                "cert_identity",
                "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                f"digit, got {shown(self.cert_identity)}",
            )
        if self.cert_identity.lower() in _RESERVED_IDENTITIES:
            # The hub's own parties: a member taking the operator's name would be
            # admitted as that member when the operator's certificate calls Verify.
            self._invalid(
                "cert_identity",
                f"{shown(self.cert_identity)} names one of the hub's own certificates "
                f"({', '.join(sorted(_RESERVED_IDENTITIES))}), not a member's",
            )
        if len(self.name) > MAX_NAME:
            self._invalid("name", f"is longer than {MAX_NAME} characters")
        if "\x00" in self.name:
            self._invalid("name", "must not contain NUL characters")
        # 0: the hub's default; else the range every rate limit has (ratelimit.py).
        rate = self.rate_limit_rps
        default_rate = rate == 0 and not isinstance(rate, bool)
        rate_issue = None if default_rate else rate_problem(rate)
        if rate_issue is not None:
            self._invalid("rate_limit_rps", f"{rate_issue} (or 0: the hub's default)")
        burst_issue = burst_problem(self.rate_limit_burst, least=0)
        if burst_issue is not None:
            self._invalid("rate_limit_burst", f"{burst_issue} (0: the hub's default)")
        for sub in self.subscriptions:
            if sub.service not in SERVICES:
                self._invalid("subscriptions", f"unknown service {shown(sub.service)}")

    def _invalid(self, field: str, problem: str) -> NoReturn:
        raise InvalidMember(self.code if field != "code" else "", field, problem)

    @property
    def identity(self) -> str:
        """The certificate common name that stands for this member."""
        return self.cert_identity or self.code

    def subscribed(self, role: Role, service: str = SLIP_VERIFICATION) -> bool:
        return any(s.role is role and s.service == service for s in self.subscriptions)


def default_roles(member: Member) -> tuple[Role, ...]:
    """REQUESTER, plus ISSUER when the member has an issuer endpoint."""
    return (Role.REQUESTER, Role.ISSUER) if member.issuer_endpoint else (Role.REQUESTER,)


def with_default_roles(member: Member) -> Member:
    """The member subscribed to slip verification in its default roles."""
    subs = tuple(Subscription(SLIP_VERIFICATION, r) for r in default_roles(member))
    return with_changes(member, subscriptions=subs)


class MemberDirectory:
    """An immutable snapshot of the members; lookups never touch storage.

    Changes build a new directory and swap it in whole, so a request sees
    one consistent view and the next request sees the change.
    """

    def __init__(self, members: Iterable[Member] = ()) -> None:
        self._by_code: dict[str, Member] = {}
        self._by_identity: dict[str, Member] = {}
        for member in members:
            if member.code in self._by_code:
                raise ValueError(f"member {member.code} is listed twice")
            self._by_code[member.code] = member
        # A terminated member keeps its identity (so it is refused as terminated,
        # not as a stranger) unless a live member has taken that identity since.
        for member in sorted(
            self._by_code.values(), key=lambda m: m.status is not MemberStatus.TERMINATED
        ):
            self._by_identity[member.identity] = member

    def get(self, code: str) -> Member | None:
        return self._by_code.get(code)

    def by_identity(self, identity: str) -> Member | None:
        """The member whose certificate identity this is (a live one before a terminated one)."""
        return self._by_identity.get(identity)

    def all(self) -> list[Member]:
        return sorted(self._by_code.values(), key=lambda m: m.code)

    def replaced(self, member: Member) -> MemberDirectory:
        """A new directory with `member` added or replaced."""
        return MemberDirectory(
            [*(m for m in self._by_code.values() if m.code != member.code), member]
        )


def _member_from_toml(entry: Mapping[str, Any]) -> Member:
    member = Member(
        code=str(entry["code"]),
        name=str(entry.get("name", "")),
        kind=MemberKind(entry.get("kind", "BANK")),
        issuer_endpoint=str(entry.get("issuer_endpoint", "")),
        status=MemberStatus(entry.get("status", "ACTIVE")),
        cert_identity=str(entry.get("cert_identity", "")),
        # As written: Member says what is wrong with a value (2.5 or true is no burst).
        rate_limit_rps=_number(entry.get("rate_limit_rps", 0.0)),
        rate_limit_burst=entry.get("rate_limit_burst", 0),
    )
    roles = entry.get("roles")
    chosen = default_roles(member) if roles is None else tuple(Role(r) for r in roles)
    subs = tuple(Subscription(SLIP_VERIFICATION, r) for r in dict.fromkeys(chosen))
    return Member(**{**_fields(member), "subscriptions": subs})


def _number(value: Any) -> Any:
    """A TOML integer as a float (rate_limit_rps = 5); anything else as it is, for Member
    to refuse by name."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _fields(member: Member) -> dict[str, Any]:
    return {name: getattr(member, name) for name in Member.__dataclass_fields__}


def load_members(path: Path) -> list[Member]:
    """Read `[[member]]` tables from a TOML file; errors name the file and the entry."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read members: {exc}") from exc
    entries = data.get("member", [])
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'member' must be an array of tables ([[member]])")
    members: list[Member] = []
    for i, entry in enumerate(entries, start=1):
        try:
            members.append(_member_from_toml(entry))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: member #{i}: {exc}") from exc
    return members


def dump_members(members: Iterable[Member]) -> str:
    """TOML text that load_members reads back to the same members."""
    blocks = []
    for m in members:
        roles = ", ".join(f'"{s.role.value}"' for s in m.subscriptions)
        blocks.append(
            "[[member]]\n"
            f'code = "{m.code}"\n'
            f"name = {_toml_str(m.name)}\n"
            f'kind = "{m.kind.value}"\n'
            f'issuer_endpoint = "{m.issuer_endpoint}"\n'
            f'status = "{m.status.value}"\n'
            f"roles = [{roles}]\n"
            + (f'cert_identity = "{m.cert_identity}"\n' if m.cert_identity else "")
            + (f"rate_limit_rps = {m.rate_limit_rps}\n" if m.rate_limit_rps else "")
            + (f"rate_limit_burst = {m.rate_limit_burst}\n" if m.rate_limit_burst else "")
        )
    return "\n".join(blocks)


def _toml_str(text: str) -> str:
    # A JSON string is a TOML basic string, except that TOML also forbids DEL.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def with_changes(member: Member, **changes: Any) -> Member:
    """A copy of `member` with some fields changed (validated again)."""
    return Member(**{**_fields(member), **changes})
