"""Units of the contract: money in integer satang and Bangkok time for display."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2

from txverify.v1 import common_pb2

CURRENCY = "THB"
# Thailand has kept UTC+7 without daylight saving since 1920; a fixed offset
# needs no tz database on the machine.
BANGKOK = timezone(timedelta(hours=7), "Asia/Bangkok")
_AMOUNT = re.compile(r"(?P<baht>[0-9]{1,13})(?:\.(?P<satang>[0-9]{1,2}))?")  # fullmatch


def parse_baht(text: str) -> int:
    """'150', '150.5' or '1,500.00' baht -> satang. Raises ValueError on anything else."""
    cleaned = text.strip().replace(",", "")
    match = _AMOUNT.fullmatch(cleaned)
    if match is None:
        raise ValueError(f"not an amount in baht: {text!r} (use digits like 150.00)")
    satang = (match.group("satang") or "0").ljust(2, "0")
    return int(match.group("baht")) * 100 + int(satang)


def format_baht(satang: int) -> str:
    """Satang -> '1,500.00'."""
    sign = "-" if satang < 0 else ""
    baht, rest = divmod(abs(satang), 100)
    return f"{sign}{baht:,}.{rest:02d}"


def money(satang: int) -> common_pb2.Money:
    """A THB Money message."""
    return common_pb2.Money(satang=satang, currency=CURRENCY)


def to_timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime -> Timestamp. Naive datetimes are refused: they hide bugs."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: times must be timezone-aware")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def from_timestamp(stamp: timestamp_pb2.Timestamp) -> datetime:
    """Timestamp -> aware datetime in UTC."""
    return stamp.ToDatetime(tzinfo=UTC)


def bangkok(when: datetime) -> datetime:
    """The same instant on a Bangkok clock."""
    return when.astimezone(BANGKOK)
