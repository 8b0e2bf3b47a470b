"""Personal data is masked the way slips show it (domain.md)."""

from __future__ import annotations

import pytest

from txverify.simulators.masking import mask_account, mask_name, mask_proxy


def test_ten_digit_account_shows_four_digits_in_slip_format() -> None:
    assert "xxx-x-x2295-x" == mask_account("123-4-52295-0")


@pytest.mark.parametrize(
    ("number", "expected"),
    [("123456789012", "xxxxxxx8901x"), ("12345", "xxxxx"), ("", "")],
)
def test_other_account_lengths_keep_length_and_show_at_most_four(
    number: str, expected: str
) -> None:
    assert expected == mask_account(number)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ชิซูกะ สมใจ", "ชิซูกะ ส"),
        ("CHICHUKA SOMJAI", "CHICHUKA S"),
        ("MR. CHICHUKA SOMJAI", "MR. CHICHUKA S"),
        ("ประเสริฐ มั่นคง", "ประเสริฐ ม"),
        ("MADONNA", "MADONNA"),
        ("", ""),
    ],
)
def test_name_keeps_first_name_and_surname_initial(name: str, expected: str) -> None:
    assert expected == mask_name(name)


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("MSISDN", "0812345678", "xxx-xxx-5678"),
        ("NATID", "1234567890123", "x-xxxx-xxxx0-12-3"),
        ("EWALLETID", "123456789012345", "xxxxxxxxxxx2345"),
        ("EMAIL", "somchai@example.com", "sxxxxxx@example.com"),
        ("BILLERID", "12", "xx"),
    ],
)
def test_proxy_shows_at_most_its_last_four_digits(kind: str, value: str, expected: str) -> None:
    assert expected == mask_proxy(kind, value)
