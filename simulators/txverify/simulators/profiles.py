"""How each simulated member looks from outside: names, kind, transRef style, slip layout."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
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


# Styles modelled on the shapes printed on real slips (domain.md: lengths 17 to 25),
# so nothing may assume one length. One length per bank, the prefixes as seen.
def _scb(rng: random.Random, when: datetime) -> str:  # 25: date + branch + 14 mixed case
    return bangkok(when).strftime("%Y%m%d") + f"{rng.randrange(1000):03d}" + _pick(rng, _ALNUM, 14)


def _kbank(rng: random.Random, when: datetime) -> str:  # 20: yy + day of year + time + BTF + 6
    local = bangkok(when)
    return local.strftime("%y%j%H%M%S") + "BTF" + _pick(rng, string.digits, 6)


def _ktb(rng: random.Random, when: datetime) -> str:  # 21: C + yyyymmdd + 12 digits
    return "C" + bangkok(when).strftime("%Y%m%d") + _pick(rng, string.digits, 12)


def _bbl(rng: random.Random, when: datetime) -> str:  # 25 digits: yyyymmdd + 17
    return bangkok(when).strftime("%Y%m%d") + _pick(rng, string.digits, 17)


def _bay(rng: random.Random, when: datetime) -> str:  # 25: KMA (app) or KSA + date-time + 8
    prefix = "KMA" if rng.random() < 0.8 else "KSA"
    return prefix + bangkok(when).strftime("%Y%m%d%H%M%S") + _pick(rng, string.digits, 8)


def _ttb(rng: random.Random, when: datetime) -> str:  # 18 digits: yymmdd + 12
    return bangkok(when).strftime("%y%m%d") + _pick(rng, string.digits, 12)


def _gsb(rng: random.Random, when: datetime) -> str:  # 24: 12 digits, I, 6 digits, letter, 4
    return (
        _pick(rng, string.digits, 12)
        + "I"
        + _pick(rng, string.digits, 6)
        + rng.choice(string.ascii_uppercase)
        + _pick(rng, string.digits, 4)
    )


def _kkp(rng: random.Random, when: datetime) -> str:  # 20: TR + 18 or RIB + 17 (digits)
    date = bangkok(when).strftime("%y%m%d")
    if rng.random() < 0.7:
        return "TR" + date + _pick(rng, string.digits, 12)
    return "RIB" + date + _pick(rng, string.digits, 11)


def _baac(rng: random.Random, when: datetime) -> str:  # 20: MPI + yymmdd + 11 digits
    return "MPI" + bangkok(when).strftime("%y%m%d") + _pick(rng, string.digits, 11)


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
    # How old a slip the issuer still answers for, by Bangkok calendar day (a peer's
    # published table, domain.md), and how long a new transfer stays pending
    # (known, not settled: SLIP_PENDING) before it settles.
    retention_days: int = 7
    pending_window: timedelta = timedelta(0)

    def slip_qr(self, trans_ref: str, when: datetime) -> str:
        """The mini QR of a slip this member issues."""
        if self.kind is Kind.NON_BANK:
            return miniqr.build_ewallet(trans_ref, bangkok(when).date(), "P2P")
        return miniqr.build(self.code, trans_ref)


_STYLES: dict[str, RefStyle] = {
    "002": _bbl,
    "004": _kbank,
    "006": _ktb,
    "011": _ttb,
    "014": _scb,
    "025": _bay,
    "030": _gsb,
    "034": _baac,
    "069": _kkp,
}
EWALLET_CODE = miniqr.TRUEMONEY_MEMBER_CODE
# Days each issuer still answers for a slip: 30 for K PLUS and MAKE (KBank),
# Krungthai NEXT and Paotang (KTB), Bangkok Bank, CIMB and UOB TMRW; 7 for SCB
# Easy, TTB Touch, MyMo (GSB), KMA and Kept (Krungsri), KKP and Dime!, GHB, TISCO
# and LH Bank. Members not in the table, the e-wallet too: the 7 days every
# slip must stay verifiable at least (ARCHITECTURE.md says why).
RETENTION_DAYS: dict[str, int] = {
    **dict.fromkeys(("002", "004", "006", "022", "024"), 30),
    **dict.fromkeys(("011", "014", "025", "030", "033", "067", "069", "073"), 7),
}
DEFAULT_RETENTION_DAYS = 7


def profile(code: str) -> Profile:
    """The profile of a member code: a known bank, the e-wallet, or a generic bank."""
    if code == EWALLET_CODE:
        return Profile(
            code,
            "TMN",
            "TrueMoney Wallet (simulated)",
            Kind.NON_BANK,
            _wallet,
            RETENTION_DAYS.get(code, DEFAULT_RETENTION_DAYS),
        )
    if not is_member_code(code):
        raise ValueError(f"member codes are 3 digits, got {code!r}")
    bank = BANKS.get(code)
    return Profile(
        code,
        bank.short_name if bank else code,
        bank.name if bank else f"Simulated bank {code}",
        Kind.BANK,
        _STYLES.get(code, _generic(code)),
        RETENTION_DAYS.get(code, DEFAULT_RETENTION_DAYS),
    )
