"""The kinds of values a step's keys take: each reads (value, what, env) into the parsed value
or raises StepError naming the key; checked before anything runs."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from txverify import units
from txverify.banks import is_member_code
from txverify.v1 import common_pb2, verification_pb2

V = verification_pb2


class StepError(ValueError):
    """A step of a scenario file is wrong; the loader adds the file and the step number."""


# --- value kinds: (value, what, env) -> the parsed value, or StepError ----------------------


@dataclass(slots=True)
class ParseEnv:
    """What checking a step may look at: the simulated banks and the slips saved so far."""

    banks: tuple[str, ...]
    saved: set[str] = field(default_factory=set)


Kind = Callable[[object, str, ParseEnv], Any]


def describe(value: object) -> str:
    kinds: dict[type, str] = {dict: "a mapping", list: "a list", type(None): "nothing"}
    return next((n for k, n in kinds.items() if isinstance(value, k)), repr(value))


def one_of(options: Iterable[object]) -> str:
    return ", ".join(sorted(str(o) for o in options))


def text(value: object, what: str, env: ParseEnv | None = None) -> str:
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, int | float) else ""
        raise StepError(f"{what} must be a string{hint}, got {describe(value)}")
    return value


def code(value: object, what: str, env: ParseEnv | None = None) -> str:
    """A member code, quoted: YAML reads 014 as the number 12."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise StepError(f'{what} must be a quoted code like "014" (YAML reads 014 as a number)')
    if not is_member_code(found := text(value, what)):
        raise StepError(f"{what} must be a 3-digit member code, got {found!r}")
    return found


def bank(value: object, what: str, env: ParseEnv) -> str:
    """A member code the scenario's network simulates."""
    if (found := code(value, what)) not in env.banks:
        raise StepError(f"{what}: {found} is not simulated (network.banks: {one_of(env.banks)})")
    return found


def slip(value: object, what: str, env: ParseEnv) -> str:
    """The name of a slip an earlier step saved."""
    if (name := text(value, what)) not in env.saved:
        saved = one_of(env.saved) or "none yet"
        raise StepError(f"{what}: no earlier step saves a slip {name!r} (saved: {saved})")
    return name


def save(value: object, what: str, env: ParseEnv) -> str:
    if not re.fullmatch(r"\w+", name := text(value, what)):
        raise StepError(f"{what} must be a name of letters, digits and _, got {name!r}")
    env.saved.add(name)
    return name


def number(value: object, what: str, env: ParseEnv | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StepError(f"{what} must be a number, got {describe(value)}")
    if value < 0:
        raise StepError(f"{what} must not be negative, got {value}")
    return float(value)


def positive(value: object, what: str, env: ParseEnv | None = None) -> float:
    if (found := number(value, what)) == 0:
        raise StepError(f"{what} must be more than 0")
    return found


def integer(value: object, what: str, env: ParseEnv | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StepError(f"{what} must be a whole number, at least 0, got {describe(value)}")
    return value


def flag(value: object, what: str, env: ParseEnv | None = None) -> bool:
    if not isinstance(value, bool):
        raise StepError(f"{what} must be true or false, got {describe(value)}")
    return value


def baht(value: object, what: str, env: ParseEnv | None = None) -> int:
    """'150.00' baht -> 15000 satang."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise StepError(f'{what} must be an amount in baht like "150.00", got {describe(value)}')
    try:
        return units.parse_baht(str(value))
    except ValueError as exc:
        raise StepError(f"{what}: {exc}") from None


def choice(options: Mapping[str, int]) -> Kind:
    def parse(value: object, what: str, env: ParseEnv) -> int:
        if (name := text(value, what).upper()) not in options:
            raise StepError(f"{what} must be one of {one_of(options)}, got {value!r}")
        return options[name]

    return parse


def named(options: Iterable[str]) -> Kind:
    """One of these names (upper case), as given."""
    known = frozenset(options)

    def parse(value: object, what: str, env: ParseEnv) -> str:
        if (name := text(value, what).upper()) not in known:
            raise StepError(f"{what} must be one of {one_of(known)}, got {value!r}")
        return name

    return parse


def listed(kind: Kind) -> Kind:
    """A list of `kind`, or one value standing for a list of one."""

    def parse(value: object, what: str, env: ParseEnv) -> list[Any]:
        return [kind(v, what, env) for v in (value if isinstance(value, list) else [value])]

    return parse


_PROXIES = {
    name: common_pb2.ProxyType.Value(f"PROXY_TYPE_{name}")
    for name in ("MSISDN", "NATID", "EWALLETID", "EMAIL", "BILLERID")
}


def proxy(value: object, what: str, env: ParseEnv | None = None) -> common_pb2.Proxy:
    """'MSISDN:0812345678', or a bare mobile number, national ID, e-wallet ID or e-mail."""
    given = text(value, what)
    kind, sep, rest = given.partition(":")
    if sep and kind.upper() in _PROXIES:
        return common_pb2.Proxy(type=_PROXIES[kind.upper()], value=rest)
    digits = given.replace("-", "").replace(" ", "")
    plain = digits.isascii() and digits.isdigit()
    by_length = {10: "MSISDN", 13: "NATID", 15: "EWALLETID"}
    guess = "EMAIL" if "@" in given else by_length.get(len(digits), "") if plain else ""
    if not guess or (guess == "MSISDN" and not digits.startswith("0")):
        kinds = one_of(_PROXIES)
        raise StepError(f"{what}: cannot tell what {given!r} is; write TYPE:VALUE ({kinds})")
    return common_pb2.Proxy(type=_PROXIES[guess], value=given)


def receiver(value: object, what: str, env: ParseEnv) -> V.ReceiverExpectation:
    """An account number, or TYPE:VALUE for a proxy."""
    given = text(value, what)
    if ":" in given:
        return V.ReceiverExpectation(proxy=proxy(given, what))
    return V.ReceiverExpectation(account=given)


_RELATIVE = re.compile(r"now\s*(?:([+-])\s*(\d+)\s*([smhd]))?")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
Moment = Callable[[datetime], datetime]  # now -> the instant meant


def moment(value: object, what: str, env: ParseEnv | None = None) -> Moment:
    """An ISO date-time (Bangkok unless it has an offset), or `now`, `now-10m`, `now+1h`."""
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        fixed = value if value.tzinfo else value.replace(tzinfo=units.BANGKOK)
        return lambda now: fixed
    if relative := _RELATIVE.fullmatch(text(value, what).strip()):
        sign, amount, unit = relative.groups()
        offset = timedelta(**{_UNITS[unit]: int(amount)}) if amount else timedelta(0)
        return lambda now: now - offset if sign == "-" else now + offset
    try:
        return moment(datetime.fromisoformat(str(value)), what)
    except ValueError:
        raise StepError(f"{what} must be an ISO date-time, or now, now-10m, now+1h") from None


def read(
    raw: object, what: str, schema: Mapping[str, Kind], env: ParseEnv, required: tuple[str, ...]
) -> dict[str, Any]:
    """A mapping with only the keys of `schema` (each value read by its kind), `required` ones."""
    if not isinstance(raw, dict):
        raise StepError(f"{what} must be a mapping, got {describe(raw)}")
    for key in raw:
        if key not in schema:
            raise StepError(f"unknown key {key!r} in {what}; expected one of {one_of(schema)}")
    for key in required:
        if key not in raw:
            raise StepError(f"{what} needs {key!r}")
    return {key: schema[key](value, f"{what}.{key}", env) for key, value in raw.items()}


def mapping(value: object, what: str, env: ParseEnv) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise StepError(f"{what} must be a mapping, got {describe(value)}")
    return value


def as_is(value: object, what: str, env: ParseEnv) -> object:
    return value


def exactly_one(args: Mapping[str, Any], keys: tuple[str, ...], what: str) -> str:
    given = [k for k in keys if k in args]
    if len(given) != 1:
        raise StepError(f"{what} needs exactly one of {', '.join(keys)}")
    return given[0]
