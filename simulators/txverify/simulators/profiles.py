"""How each simulated member looks from outside: names, kind, transRef style, slip layout."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from txverify import miniqr
from txverify.banks import BANKS, is_member_code
from txverify.units import bangkok

_UPPER_DIGITS = string.ascii_uppercase + string.digits
_ALNUM = string.ascii_letters + string.digits

RefStyle = Callable[[random.Random, datetime], str]


class Kind(StrEnum):
    """Banks and non-banks (e-wallet providers) are both members."""

    BANK = "BANK"
    NON_BANK = "NON_BANK"


def _pick(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


# Styles modelled on the shapes seen on real slips; lengths differ on purpose
# (domain.md: 18, 20 and 25 are all common), so nothing may assume one length.
def _scb(rng: random.Random, when: datetime) -> str:  # 25: date + branch + 14 mixed case
    return bangkok(when).strftime("%Y%m%d") + f"{rng.randrange(1000):03d}" + _pick(rng, _ALNUM, 14)


def _kbank(rng: random.Random, when: datetime) -> str:  # 20: yy + day of year + time + BTF + 6
    local = bangkok(when)
    return local.strftime("%y%j%H%M%S") + "BTF" + _pick(rng, string.digits, 6)


def _ktb(rng: random.Random, when: datetime) -> str:  # 22: yymmddHHMMSS + 10 digits
    return bangkok(when).strftime("%y%m%d%H%M%S") + _pick(rng, string.digits, 10)


def _bbl(rng: random.Random, when: datetime) -> str:  # 18: yymmdd + 12 upper/digits
    return bangkok(when).strftime("%y%m%d") + _pick(rng, _UPPER_DIGITS, 12)


def _bay(rng: random.Random, when: datetime) -> str:  # 20: BAY + yymmdd + 11 digits
    return "BAY" + bangkok(when).strftime("%y%m%d") + _pick(rng, string.digits, 11)


def _generic(code: str) -> RefStyle:
    def style(rng: random.Random, when: datetime) -> str:  # 20: date + code + 9 mixed
        return bangkok(when).strftime("%Y%m%d") + code + _pick(rng, _ALNUM, 9)

    return style


def _wallet(rng: random.Random, when: datetime) -> str:  # 16 digits: e-wallet transaction id
    return "50" + bangkok(when).strftime("%y%m%d") + _pick(rng, string.digits, 8)


@dataclass(frozen=True, slots=True)
class Profile:
    """A simulated member's public face."""

    code: str
    short_name: str
    name: str
    kind: Kind
    ref_style: RefStyle

    def slip_qr(self, trans_ref: str, when: datetime) -> str:
        """The mini QR of a slip this member issues."""
        if self.kind is Kind.NON_BANK:
            return miniqr.build_ewallet(trans_ref, bangkok(when).date(), "P2P")
        return miniqr.build(self.code, trans_ref)


_STYLES: dict[str, RefStyle] = {
    "002": _bbl,
    "004": _kbank,
    "006": _ktb,
    "014": _scb,
    "025": _bay,
}
EWALLET_CODE = miniqr.TRUEMONEY_MEMBER_CODE


def profile(code: str) -> Profile:
    """The profile of a member code: a known bank, the e-wallet, or a generic bank."""
    if code == EWALLET_CODE:
        return Profile(code, "TMN", "TrueMoney Wallet (simulated)", Kind.NON_BANK, _wallet)
    if not is_member_code(code):
        raise ValueError(f"member codes are 3 digits, got {code!r}")
    bank = BANKS.get(code)
    return Profile(
        code,
        bank.short_name if bank else code,
        bank.name if bank else f"Simulated bank {code}",
        Kind.BANK,
        _STYLES.get(code, _generic(code)),
    )
