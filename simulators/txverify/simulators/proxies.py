"""PromptPay proxy and account-number checks: what a bank accepts as a transfer target."""

from __future__ import annotations

import re

from txverify.errors import invalid_field
from txverify.simulators.ledger import ProxyKind, ProxyRecord

_DIGITS = re.compile(r"[0-9]+")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")  # fullmatch
_SEPARATORS = str.maketrans("", "", " -")


def natid_check_digit(first12: str) -> int:
    """The Thai national ID check digit: (11 - sum(d_i * (13 - i)) mod 11) mod 10."""
    total = sum(int(d) * (13 - i) for i, d in enumerate(first12))
    return (11 - total % 11) % 10


def normalise_proxy(kind: ProxyKind, value: str, *, field: str) -> ProxyRecord:
    """The canonical proxy, or INVALID_REQUEST naming `field` and what is expected."""
    raw = value.strip()
    digits = raw.translate(_SEPARATORS)
    problem = ""
    if kind is ProxyKind.MSISDN:
        if digits.startswith("+66"):
            digits = "0" + digits[3:]
        elif digits.startswith("0066") and len(digits) == 13:
            digits = "0" + digits[4:]  # the payment-QR form, 0066 + 9 digits
        if not (_DIGITS.fullmatch(digits) and len(digits) == 10 and digits.startswith("0")):
            problem = "a mobile number is 10 digits starting with 0 (or +66 / 0066 and 9 digits)"
        raw = digits
    elif kind is ProxyKind.NATID:
        if not (_DIGITS.fullmatch(digits) and len(digits) == 13):
            problem = "a national ID is 13 digits"
        elif natid_check_digit(digits[:12]) != int(digits[12]):
            problem = "the national ID's check digit is wrong"
        raw = digits
    elif kind in (ProxyKind.EWALLETID, ProxyKind.BILLERID):
        if not (_DIGITS.fullmatch(digits) and len(digits) == 15):
            problem = f"an {kind.value} is 15 digits"
        raw = digits
    elif kind is ProxyKind.EMAIL and not _EMAIL.fullmatch(raw):
        problem = "not an e-mail address"
    if problem:
        raise invalid_field(field, problem)
    return ProxyRecord(kind, raw)


def check_account_number(number: str, *, field: str) -> str:
    """10-12 ASCII digits (separators allowed), or INVALID_REQUEST."""
    digits = number.strip().translate(_SEPARATORS)
    if not (_DIGITS.fullmatch(digits) and 10 <= len(digits) <= 12):
        raise invalid_field(field, "an account number is 10-12 digits")
    return digits
