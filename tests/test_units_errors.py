"""Money, time and the error model's wire form."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from txverify import units
from txverify.errors import FieldViolation, Reason, ServiceError, details_from_metadata


@pytest.mark.parametrize(
    ("text", "satang"),
    [("150", 15000), ("150.5", 15050), ("150.05", 15005), ("1,500.00", 150000), ("0.01", 1)],
)
def test_baht_text_parses_to_integer_satang(text: str, satang: int) -> None:
    assert satang == units.parse_baht(text)


@pytest.mark.parametrize("text", ["", "1.234", "-5", "1e3", "abc", "1.", "๑๒๓"])
def test_bad_amount_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        units.parse_baht(text)


def test_satang_formats_as_baht() -> None:
    assert ("1,500.00", "0.05", "-1.10") == (
        units.format_baht(150000),
        units.format_baht(5),
        units.format_baht(-110),
    )


def test_bangkok_is_seven_hours_ahead_of_utc() -> None:
    when = datetime(2026, 8, 1, 17, 30, tzinfo=UTC)

    assert "2026-08-02 00:30" == units.bangkok(when).strftime("%Y-%m-%d %H:%M")


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        units.to_timestamp(datetime(2026, 1, 1))


def test_service_error_survives_the_wire_form() -> None:
    error = ServiceError(
        Reason.INVALID_SLIP_QR,
        "bad crc",
        metadata={"field": "91"},
        violations=(FieldViolation("qr_text[91]", "bad crc"),),
    )

    details = details_from_metadata(
        grpc.StatusCode.INVALID_ARGUMENT, "plain", error.trailing_metadata()
    )

    assert grpc.StatusCode.INVALID_ARGUMENT == error.status_code
    assert ("INVALID_SLIP_QR", "6400", "91", "bad crc") == (
        details.reason,
        details.code,
        details.metadata["field"],
        details.message,
    )
    assert (FieldViolation("qr_text[91]", "bad crc"),) == details.violations


def test_issuer_code_overrides_the_default_code() -> None:
    error = ServiceError(Reason.INVALID_REQUEST, "bad", code="8400")

    assert "8400" == details_from_metadata(error.status_code, "", error.trailing_metadata()).code


def test_garbage_status_details_fall_back_to_the_plain_status() -> None:
    details = details_from_metadata(
        grpc.StatusCode.UNAVAILABLE, "down", (("grpc-status-details-bin", b"\xff\x00garbage"),)
    )

    assert (grpc.StatusCode.UNAVAILABLE, "down", "") == (
        details.status,
        details.message,
        details.reason,
    )


def _retry_after(wait: float) -> float | None:
    error = ServiceError(Reason.RATE_LIMITED, "slow down", retry_after=wait)
    return details_from_metadata(error.status_code, "", error.trailing_metadata()).retry_after


def test_retry_info_carries_the_wait_to_the_nanosecond() -> None:
    assert 0.25 == _retry_after(0.25)
    assert 1000.000000001 == _retry_after(1000.000000001)


@pytest.mark.parametrize("wait", [86_400.0, 86_400.5, 1e12, 1e300, float("inf")])
def test_retry_info_is_capped_at_a_day_so_no_wait_can_overflow_it(wait: float) -> None:
    # 1e300 s is what a member limited to 1e-300 requests/s was told: OverflowError, so UNKNOWN.
    assert 86_400.0 == _retry_after(wait)


@pytest.mark.parametrize("wait", [0.0, -0.0, -1.0, float("-inf"), float("nan")])
def test_retry_info_is_never_negative_nor_nan(wait: float) -> None:
    assert 0.0 == _retry_after(wait)
