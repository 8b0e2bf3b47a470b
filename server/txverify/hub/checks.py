"""Expectation checks: does the issuer's (masked) transaction match what the merchant expects?"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TypeAlias, TypeVar

from google.protobuf import timestamp_pb2

from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.units import CURRENCY, bangkok, format_baht, from_timestamp
from txverify.v1 import common_pb2, verification_pb2

MAX_RECEIVERS = 20
MAX_PROXY_LENGTH = 100
# Issuers show 4 digits of an account (domain.md: 'xxx-x-x2295-x'); fewer
# shown characters could belong to too many other accounts to call a match.
MIN_SHOWN = 4

_SEPARATOR_CHARS = "- "
_SEPARATORS = str.maketrans("", "", _SEPARATOR_CHARS)
_MASKS = frozenset("xX")
# fullmatch; [0-9], not \d: \d takes Thai digits, which no account number has.
_ACCOUNT_NUMBER = re.compile(r"[0-9]{1,20}")
_BANK_CODE = re.compile(r"[0-9]{3}")  # fullmatch

_PASS = verification_pb2.CHECK_OUTCOME_PASS
_FAIL = verification_pb2.CHECK_OUTCOME_FAIL
_UNCHECKABLE = verification_pb2.CHECK_OUTCOME_UNCHECKABLE
_ACCOUNT = common_pb2.PROXY_TYPE_ACCOUNT
_MSISDN = common_pb2.PROXY_TYPE_MSISDN
_EMAIL = common_pb2.PROXY_TYPE_EMAIL
_E = TypeVar("_E", bound=int)  # a protobuf enum's ValueType


def validate_expectations(expect: verification_pb2.Expectations) -> None:
    """Refuse expectations that no transaction could meet: ServiceError INVALID_REQUEST.

    Every problem is a BadRequest violation; metadata "field" names the first.
    Descriptions never repeat the caller's values: they may be personal data.
    """
    problems = [
        *_amount_problems(expect.amount),
        *_receiver_problems(expect.receivers),
        *_bank_problems(expect.receiving_bank),
        *_window_problems(expect),
    ]
    if problems:
        raise ServiceError(
            Reason.INVALID_REQUEST,
            "invalid expect: " + "; ".join(f"{p.field} {p.description}" for p in problems),
            metadata={"field": problems[0].field},
            violations=tuple(problems),
        )


def evaluate(
    expect: verification_pb2.Expectations | None, tx: common_pb2.Transaction
) -> list[verification_pb2.CheckResult]:
    """One result per expectation set (amount, receiver, bank, time window), then the status."""
    results: list[verification_pb2.CheckResult] = []
    if expect is not None:
        if any(bound is not None for bound in _bounds(expect.amount)):
            results.append(_check_amount(expect.amount, tx))
        if expect.receivers:
            results.append(_check_receiver(expect.receivers, tx.receiver))
        if expect.receiving_bank:
            results.append(_check_receiving_bank(expect.receiving_bank, tx.receiving_bank))
        if expect.HasField("not_before") or expect.HasField("not_after"):
            results.append(_check_time_window(expect, tx))
    results.append(_check_status(tx.status))
    return results


def verdict(
    checks: Sequence[verification_pb2.CheckResult], previous_uses_in_scope: int
) -> verification_pb2.Verdict.ValueType:
    """MISMATCH over DUPLICATE over INCONCLUSIVE over VALID."""
    outcomes = {check.outcome for check in checks}
    if _FAIL in outcomes:
        return verification_pb2.VERDICT_MISMATCH
    if previous_uses_in_scope > 0:
        return verification_pb2.VERDICT_DUPLICATE
    # Anything short of PASS (UNCHECKABLE, or an outcome left unset) proves nothing.
    if outcomes - {_PASS}:
        return verification_pb2.VERDICT_INCONCLUSIVE
    return verification_pb2.VERDICT_VALID


def masked_matches(masked: str, plain: str) -> bool | None:
    """Could `plain` be the value the issuer masked as `masked`? None when undecidable.

    Separators ('-', ' ') are ignored on both sides; 'x'/'X' are masked
    characters; letters compare case-insensitively. False when the lengths
    differ or a shown character disagrees (proof of another value, however
    few are shown); True when all shown characters agree and at least
    MIN_SHOWN are shown; None when they agree but fewer are shown.
    """
    pattern = masked.translate(_SEPARATORS)
    value = plain.translate(_SEPARATORS)
    if len(pattern) != len(value):
        return False
    shown = 0
    for mask_char, char in zip(pattern, value, strict=True):
        if mask_char in _MASKS:
            continue
        if mask_char.casefold() != char.casefold():
            return False
        shown += 1
    return True if shown >= MIN_SHOWN else None


def _normalised_proxy(proxy_type: common_pb2.ProxyType.ValueType, value: str) -> str:
    """A plain proxy value the way banks store it: MSISDN '+66812345678' -> '0812345678'."""
    if proxy_type == _MSISDN:
        digits = "".join(ch for ch in value if "0" <= ch <= "9")
        # International spellings (+66 / 0066) stand for the local 0 prefix.
        for prefix in ("0066", "66"):
            if digits.startswith(prefix):
                return "0" + digits[len(prefix) :]
        return digits
    if proxy_type == _EMAIL:
        return value.strip()
    return value.translate(_SEPARATORS)


# --- validation -------------------------------------------------------------


def _amount_problems(amount: verification_pb2.AmountExpectation) -> Iterator[FieldViolation]:
    equals, at_least, at_most = _bounds(amount)
    for name, bound in (
        ("equals_satang", equals),
        ("at_least_satang", at_least),
        ("at_most_satang", at_most),
    ):
        if bound is not None and bound < 0:
            yield FieldViolation(f"expect.amount.{name}", "must not be negative")
    if at_least is not None and at_most is not None and at_least > at_most:
        yield FieldViolation("expect.amount", "at_least_satang is above at_most_satang")
    if equals is not None and (
        (at_least is not None and equals < at_least) or (at_most is not None and equals > at_most)
    ):
        yield FieldViolation("expect.amount", "equals_satang is outside at_least/at_most_satang")


def _receiver_problems(
    receivers: Sequence[verification_pb2.ReceiverExpectation],
) -> Iterator[FieldViolation]:
    if len(receivers) > MAX_RECEIVERS:
        # One violation, not one per receiver: the list itself is the mistake.
        yield FieldViolation("expect.receivers", f"at most {MAX_RECEIVERS} receivers")
        return
    for i, receiver in enumerate(receivers):
        where = f"expect.receivers[{i}]"
        which = receiver.WhichOneof("receiver")
        if which == "account":
            if not _ACCOUNT_NUMBER.fullmatch(receiver.account.translate(_SEPARATORS)):
                yield FieldViolation(f"{where}.account", "must be 1-20 digits ('-', ' ' allowed)")
        elif which == "proxy":
            proxy = receiver.proxy
            if proxy.type == common_pb2.PROXY_TYPE_UNSPECIFIED or proxy.type not in (
                common_pb2.ProxyType.values()
            ):
                yield FieldViolation(f"{where}.proxy", "needs a proxy type")
            elif not proxy.value.strip() or len(proxy.value) > MAX_PROXY_LENGTH:
                yield FieldViolation(
                    f"{where}.proxy", f"value must be 1-{MAX_PROXY_LENGTH} characters"
                )
        else:
            yield FieldViolation(where, "set an account or a proxy")


def _bank_problems(receiving_bank: str) -> Iterator[FieldViolation]:
    if receiving_bank and not _BANK_CODE.fullmatch(receiving_bank):
        yield FieldViolation("expect.receiving_bank", "must be a 3-digit bank code, e.g. 004")


def _window_problems(expect: verification_pb2.Expectations) -> Iterator[FieldViolation]:
    # An out-of-range Timestamp would fail later, when shown as a date.
    not_before = _instant(expect.not_before) if expect.HasField("not_before") else None
    not_after = _instant(expect.not_after) if expect.HasField("not_after") else None
    if expect.HasField("not_before") and not_before is None:
        yield FieldViolation("expect.not_before", "is not a valid time")
    if expect.HasField("not_after") and not_after is None:
        yield FieldViolation("expect.not_after", "is not a valid time")
    both_valid = not_before is not None and not_after is not None
    if both_valid and _key(expect.not_before) > _key(expect.not_after):
        yield FieldViolation("expect", "not_before is after not_after")


# --- checks -----------------------------------------------------------------


def _check_amount(
    amount: verification_pb2.AmountExpectation, tx: common_pb2.Transaction
) -> verification_pb2.CheckResult:
    equals, at_least, at_most = _bounds(amount)
    parts: list[str] = []
    holds: list[bool] = []
    satang = tx.amount.satang
    if equals is not None:
        parts.append(f"= {_baht(equals)}")
        holds.append(satang == equals)
    if at_least is not None:
        parts.append(f">= {_baht(at_least)}")
        holds.append(satang >= at_least)
    if at_most is not None:
        parts.append(f"<= {_baht(at_most)}")
        holds.append(satang <= at_most)
    if not tx.HasField("amount"):
        return _result(verification_pb2.CHECK_AMOUNT, _UNCHECKABLE, parts, "not reported")
    observed = f"{format_baht(satang)} {tx.amount.currency or CURRENCY}"
    return _result(verification_pb2.CHECK_AMOUNT, _PASS if all(holds) else _FAIL, parts, observed)


def _check_receiver(
    expected: Sequence[verification_pb2.ReceiverExpectation], party: common_pb2.Party
) -> verification_pb2.CheckResult:
    shown = _shown_receivers(party)
    wanted = [w for w in map(_wanted_receiver, expected) if w is not None]
    comparisons = [
        masked_matches(masked, plain)
        for kind, plain in wanted
        for shown_kind, masked in shown
        if kind == shown_kind
    ]
    if True in comparisons:
        outcome = _PASS
    elif None in comparisons or not shown:
        outcome = _UNCHECKABLE
    else:
        outcome = _FAIL
    described = " or ".join(_describe_wanted(kind, plain, shown) for kind, plain in wanted)
    observed = ", ".join(_describe_shown(party)) or "no account or proxy"
    return _result(verification_pb2.CHECK_RECEIVER, outcome, [described], observed)


def _check_receiving_bank(expected: str, observed: str) -> verification_pb2.CheckResult:
    if not observed:
        # An issuer that leaves the field empty has not said which bank: no proof either way.
        return _result(
            verification_pb2.CHECK_RECEIVING_BANK, _UNCHECKABLE, [expected], "not reported"
        )
    outcome = _PASS if expected == observed else _FAIL
    return _result(verification_pb2.CHECK_RECEIVING_BANK, outcome, [expected], observed)


def _check_time_window(
    expect: verification_pb2.Expectations, tx: common_pb2.Transaction
) -> verification_pb2.CheckResult:
    not_before = _instant(expect.not_before) if expect.HasField("not_before") else None
    not_after = _instant(expect.not_after) if expect.HasField("not_after") else None
    parts = [f">= {not_before.isoformat()}"] if not_before is not None else []
    parts += [f"<= {not_after.isoformat()}"] if not_after is not None else []
    when = _instant(tx.trans_time) if tx.HasField("trans_time") else None
    if when is None:
        return _result(verification_pb2.CHECK_TIME_WINDOW, _UNCHECKABLE, parts, "not reported")
    # Compared as (seconds, nanos): datetimes would drop the nanoseconds at the bounds.
    at = _key(tx.trans_time)
    inside = (not_before is None or _key(expect.not_before) <= at) and (
        not_after is None or at <= _key(expect.not_after)
    )
    return _result(
        verification_pb2.CHECK_TIME_WINDOW, _PASS if inside else _FAIL, parts, when.isoformat()
    )


def _check_status(status: common_pb2.TransactionStatus.ValueType) -> verification_pb2.CheckResult:
    if status == common_pb2.TRANSACTION_STATUS_COMPLETED:
        outcome = _PASS
    elif status == common_pb2.TRANSACTION_STATUS_REVERSED:
        outcome = _FAIL  # a reversed transfer pays nobody
    else:
        outcome = _UNCHECKABLE
    observed = _enum_label(common_pb2.TransactionStatus.Name, status, "TRANSACTION_STATUS_")
    return _result(verification_pb2.CHECK_STATUS, outcome, ["COMPLETED"], observed)


# --- receivers --------------------------------------------------------------

# A receiver value paired with what kind of value it is. Accounts count as
# PROXY_TYPE_ACCOUNT, so an account some bank reports as an ACCOUNT proxy
# still meets an expected account.
_Receiver: TypeAlias = tuple[common_pb2.ProxyType.ValueType, str]


def _wanted_receiver(receiver: verification_pb2.ReceiverExpectation) -> _Receiver | None:
    which = receiver.WhichOneof("receiver")
    if which == "account":
        return _ACCOUNT, receiver.account.translate(_SEPARATORS)
    if which == "proxy":
        return receiver.proxy.type, _normalised_proxy(receiver.proxy.type, receiver.proxy.value)
    return None


def _shown_receivers(party: common_pb2.Party) -> list[_Receiver]:
    shown: list[_Receiver] = []
    if party.HasField("account") and party.account.value:
        shown.append((_ACCOUNT, party.account.value))
    if party.HasField("proxy") and party.proxy.value:
        shown.append((party.proxy.type, party.proxy.value))
    return shown


def _describe_shown(party: common_pb2.Party) -> Iterator[str]:
    if party.HasField("account") and party.account.value:
        kind = _enum_label(common_pb2.AccountType.Name, party.account.type, "ACCOUNT_TYPE_")
        yield f"{kind} {party.account.value}"
    if party.HasField("proxy") and party.proxy.value:
        kind = _enum_label(common_pb2.ProxyType.Name, party.proxy.type, "PROXY_TYPE_")
        yield f"{kind} {party.proxy.value}"


def _describe_wanted(
    kind: common_pb2.ProxyType.ValueType, plain: str, shown: Sequence[_Receiver]
) -> str:
    label = _enum_label(common_pb2.ProxyType.Name, kind, "PROXY_TYPE_")
    if kind == _EMAIL and "@" in plain:
        return f"{label} {_mask_email(plain)}"
    same_kind = [masked for shown_kind, masked in shown if shown_kind == kind]
    return f"{label} {_mask_like(plain, same_kind[0] if same_kind else None)}"


def _mask_like(plain: str, masked: str | None) -> str:
    """The caller's value shown only where the issuer shows its own, else only its last 4.

    These strings are logged and audited: they must carry no personal data.
    """
    if masked is not None and len(masked.translate(_SEPARATORS)) == len(plain):
        shown = sum(ch not in _MASKS and ch not in _SEPARATOR_CHARS for ch in masked)
        # Never more than the issuer shows, nor more than half of the value.
        if shown <= MIN_SHOWN and 2 * shown <= len(plain):
            chars = iter(plain)
            out: list[str] = []
            for ch in masked:
                if ch in _SEPARATOR_CHARS:
                    out.append(ch)
                else:
                    char = next(chars)
                    out.append("x" if ch in _MASKS else char)
            return "".join(out)
    # Short values are hidden whole, so at least half of any value stays hidden.
    if len(plain) < 2 * MIN_SHOWN:
        return "x" * len(plain)
    return "x" * (len(plain) - MIN_SHOWN) + plain[-MIN_SHOWN:]


def _mask_email(plain: str) -> str:
    """Like issuers do: the local part's first letter (if it has more than one) and the domain."""
    local, _, domain = plain.partition("@")
    first = local[:1] if len(local) > 1 else "x"
    return f"{first}{'x' * (len(local) - 1)}@{domain}" if local else f"@{domain}"


# --- small helpers ----------------------------------------------------------


def _bounds(
    amount: verification_pb2.AmountExpectation,
) -> tuple[int | None, int | None, int | None]:
    """(equals, at_least, at_most), None where unset."""
    return (
        amount.equals_satang if amount.HasField("equals_satang") else None,
        amount.at_least_satang if amount.HasField("at_least_satang") else None,
        amount.at_most_satang if amount.HasField("at_most_satang") else None,
    )


def _instant(stamp: timestamp_pb2.Timestamp) -> datetime | None:
    """The Bangkok-clock datetime of a Timestamp, or None when it is out of range.

    (UTC for the last 7 hours of year 9999: valid times that Bangkok's clock,
    already in year 10000, cannot show.)
    """
    try:
        utc = from_timestamp(stamp)
    except (ValueError, OverflowError):
        return None
    try:
        return bangkok(utc)
    except (ValueError, OverflowError):
        return utc


def _key(stamp: timestamp_pb2.Timestamp) -> tuple[int, int]:
    return stamp.seconds, stamp.nanos


def _baht(satang: int) -> str:
    return f"{format_baht(satang)} {CURRENCY}"


def _enum_label(name_of: Callable[[_E], str], value: _E, prefix: str) -> str:
    """'PROXY_TYPE_MSISDN' -> 'MSISDN'; the number itself for a value this code does not know."""
    try:
        return name_of(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def _result(
    check: verification_pb2.Check.ValueType,
    outcome: verification_pb2.CheckOutcome.ValueType,
    expected: Sequence[str],
    observed: str,
) -> verification_pb2.CheckResult:
    return verification_pb2.CheckResult(
        check=check, outcome=outcome, expected=", ".join(expected), observed=observed
    )
