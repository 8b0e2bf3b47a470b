"""Codec for the mini QR on Thai transfer slips: bank (API id 000001) and e-wallet (01) layouts."""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from types import MappingProxyType
from typing import Final

MAX_TEXT_LENGTH: Final = 512
API_ID_SLIP: Final = "000001"
# Sub-tag 00 of an e-wallet (TrueMoney-style) slip; its value picks that layout.
API_ID_EWALLET: Final = "01"
DEFAULT_COUNTRY_CODE: Final = "TH"
# The hub member code of TrueMoney. Non-banks have no Bank of Thailand FI code, so this is
# txverify's own assignment, chosen apart from the FI codes in txverify.banks.
TRUEMONEY_MEMBER_CODE: Final = "900"
# E-wallet provider id (sub-tag 01 of an e-wallet slip) -> hub member code of that non-bank.
EWALLET_PROVIDERS: Final[Mapping[str, str]] = MappingProxyType({"01": TRUEMONEY_MEMBER_CODE})

# Top-level tags, and sub-tags of the nested payload in tag 00.
_TAG_PAYLOAD: Final = "00"
_TAG_COUNTRY: Final = "51"
_TAG_CRC: Final = "91"
_SUB_API_ID: Final = "00"
_SUB_BANK: Final = "01"
_SUB_TRANS_REF: Final = "02"
# Sub-tags of the e-wallet layout; 00 is the API id and 01 the provider id, as in the bank layout.
_SUB_PROVIDER: Final = "01"
_SUB_EVENT_TYPE: Final = "02"
_SUB_TRANSACTION_ID: Final = "03"
_SUB_DATE: Final = "04"

_MAX_TRANS_REF: Final = 32
_MAX_EVENT_TYPE: Final = 16
# Offending values are echoed in messages only this far: the input may be hostile or huge.
_ECHO_LIMIT: Final = 40

_PRINTABLE_ASCII: Final = re.compile(r"[ -~]*")
_ASCII_DIGITS: Final = frozenset("0123456789")
_ASCII_ALNUM: Final = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_UPPER_DIGITS: Final = _ASCII_UPPER | _ASCII_DIGITS
# re's \d and str.isdigit() accept non-ASCII digits, so character classes are spelled out.
_HEX: Final = "[0-9A-Fa-f]"
# The CRC field as written in the wild; the three forms cannot match the same text.
_CRC_FULL: Final = re.compile(rf"9104({_HEX}{{4}})\Z")  # the standard form, either case
_CRC_SHORT_HEADER: Final = re.compile(rf"9103({_HEX}{{3}})\Z")  # leading zero dropped, length fixed
_CRC_SHORT_VALUE: Final = re.compile(rf"9104({_HEX}{{3}})\Z")  # leading zero dropped, length not
# A PromptPay payment QR (EMVCo) ends with its own CRC field, tag 63.
_PAYMENT_CRC: Final = re.compile(rf"6304{_HEX}{{4}}\Z")
_PAYMENT_PREFIX: Final = "000201"


class SlipReason(StrEnum):
    """Why a text is not a valid slip mini QR; InvalidSlipQR.field names the tag concerned."""

    # The text is empty or only whitespace; field "".
    EMPTY = "EMPTY"
    # The raw text is longer than MAX_TEXT_LENGTH, checked before anything else; field "".
    TOO_LONG = "TOO_LONG"
    # A PromptPay/EMVCo payment QR (starts "000201" or ends in a "6304" CRC field); field "00".
    NOT_A_SLIP_QR = "NOT_A_SLIP_QR"
    # A character outside printable ASCII (field ""), a non-digit tag (field: the container, ""
    # or "00"), a duplicated tag (field: that tag) or a CRC field that is not last (field "91").
    BAD_FORMAT = "BAD_FORMAT"
    # A TLV length that is not 2 digits or runs past the end of its container; field: the
    # container being split, "" for the top level or "00" for the nested payload.
    BAD_LENGTH = "BAD_LENGTH"
    # A required tag is absent; field "00", "91", or a sub-tag of 00: "00.00" to "00.02" on a
    # bank slip, "00.00" to "00.04" on an e-wallet slip.
    MISSING_FIELD = "MISSING_FIELD"
    # The API id in 00.00 is neither "000001" (bank slip) nor "01" (e-wallet slip); field "00.00".
    UNKNOWN_API_ID = "UNKNOWN_API_ID"
    # The sending bank code in 00.01 is not exactly 3 ASCII digits; field "00.01".
    BAD_BANK_CODE = "BAD_BANK_CODE"
    # The provider id in 00.01 of an e-wallet slip is not in EWALLET_PROVIDERS; field "00.01".
    UNKNOWN_PROVIDER = "UNKNOWN_PROVIDER"
    # The event type in 00.02 of an e-wallet slip is not 1..16 ASCII uppercase letters and
    # digits (e.g. P2P); field "00.02".
    BAD_EVENT_TYPE = "BAD_EVENT_TYPE"
    # The transRef in 00.02 of a bank slip, or the transaction id in 00.03 of an e-wallet slip,
    # is not 1..32 ASCII letters and digits; field "00.02" or "00.03".
    BAD_TRANS_REF = "BAD_TRANS_REF"
    # The date in 00.04 of an e-wallet slip is not 8 ASCII digits DDMMYYYY of a real calendar
    # date; field "00.04".
    BAD_DATE = "BAD_DATE"
    # The country code in 51 is not 2 uppercase ASCII letters; field "51".
    BAD_COUNTRY_CODE = "BAD_COUNTRY_CODE"
    # The CRC in 91 is not 3-4 hex digits or does not match the text; field "91".
    BAD_CRC = "BAD_CRC"


class InvalidSlipQR(ValueError):
    """A text that is not a valid slip mini QR, with a machine-readable reason and tag."""

    reason: SlipReason
    field: str
    message: str

    def __init__(self, reason: SlipReason, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[InvalidSlipQR], tuple[SlipReason, str, str]]:
        # Exceptions unpickle as cls(*self.args), and args holds only the message.
        return (type(self), (self.reason, self.field, self.message))


class SlipLayout(StrEnum):
    """Which slip layout a mini QR uses, as sub-tag 00 (the API id) says."""

    BANK = "BANK"
    EWALLET = "EWALLET"


@dataclass(frozen=True, slots=True)
class SlipRef:
    """What a slip mini QR identifies: the sending member and its transaction reference."""

    # The issuer: a bank's FI code, or for an e-wallet slip the hub member code of the provider.
    sending_bank: str
    # The transRef of a bank slip, or the transaction id of an e-wallet slip.
    trans_ref: str
    # Tag 51 is optional on the slip; Thai slips that omit it are Thai.
    country_code: str = DEFAULT_COUNTRY_CODE
    layout: SlipLayout = SlipLayout.BANK
    # E-wallet slips only: the event type (e.g. P2P) and the date they print; empty on bank slips.
    event_type: str = ""
    trans_date: date | None = None


@dataclass(frozen=True, slots=True)
class _CrcField:
    """Where the CRC field starts, its hex value and the texts it may have been computed over."""

    start: int
    value: str
    covered: tuple[str, ...]


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no xor-out.

    binascii.crc_hqx is exactly this CRC (in C) when started from 0xFFFF; the
    bit-by-bit Python loop it replaced cost ~100 µs a slip, the hub's largest
    single hot spot.
    """
    return binascii.crc_hqx(data, 0xFFFF)


def build(sending_bank: str, trans_ref: str, country_code: str = DEFAULT_COUNTRY_CODE) -> str:
    """The mini QR text for a slip; raises InvalidSlipQR (a ValueError) on a bad field."""
    _check_bank(sending_bank)
    _check_trans_ref(trans_ref, _SUB_TRANS_REF, "transaction reference")
    _check_country(country_code)
    payload = (
        _tlv(_SUB_API_ID, API_ID_SLIP)
        + _tlv(_SUB_BANK, sending_bank)
        + _tlv(_SUB_TRANS_REF, trans_ref)
    )
    body = _tlv(_TAG_PAYLOAD, payload) + _tlv(_TAG_COUNTRY, country_code) + _TAG_CRC + "04"
    return body + f"{crc16_ccitt_false(body.encode('ascii')):04X}"


def build_ewallet(
    transaction_id: str, trans_date: date, event_type: str = "P2P", provider: str = "01"
) -> str:
    """The mini QR text for an e-wallet slip: no tag 51, lowercase CRC; raises InvalidSlipQR."""
    _check_provider(provider)
    _check_event_type(event_type)
    _check_trans_ref(transaction_id, _SUB_TRANSACTION_ID, "transaction id")
    # Spelled out: strftime("%Y") does not zero-pad years before 1000 on every platform.
    day = f"{trans_date.day:02d}{trans_date.month:02d}{trans_date.year:04d}"
    payload = (
        _tlv(_SUB_API_ID, API_ID_EWALLET)
        + _tlv(_SUB_PROVIDER, provider)
        + _tlv(_SUB_EVENT_TYPE, event_type)
        + _tlv(_SUB_TRANSACTION_ID, transaction_id)
        + _tlv(_SUB_DATE, day)
    )
    body = _tlv(_TAG_PAYLOAD, payload) + _TAG_CRC + "04"
    return body + f"{crc16_ccitt_false(body.encode('ascii')):04x}"


def parse(text: str) -> SlipRef:
    """Decode a slip mini QR text; raises InvalidSlipQR, and nothing else, when it is not one."""
    text = _clean(text)
    crc = _locate_crc(text)
    _check_crc(crc)
    # The CRC is checked before the structure: damage anywhere then reads as BAD_CRC, which is
    # what a misread scan looks like, and structural errors below are the writer's, not the scan's.
    fields = _split_tlvs(text[: crc.start], container="")
    if _TAG_CRC in fields:
        raise InvalidSlipQR(SlipReason.BAD_FORMAT, _TAG_CRC, "tag 91 (CRC) must be the last field")
    if _TAG_PAYLOAD not in fields:
        raise _missing(_TAG_PAYLOAD, "nested payload")
    sub = _split_tlvs(fields[_TAG_PAYLOAD], container=_TAG_PAYLOAD)
    api_id = _required(sub, _SUB_API_ID, "API id")
    if api_id == API_ID_SLIP:
        bank = _check_bank(_required(sub, _SUB_BANK, "sending bank code"))
        ref = _check_trans_ref(
            _required(sub, _SUB_TRANS_REF, "transaction reference"),
            _SUB_TRANS_REF,
            "transaction reference",
        )
        country = _check_country(fields.get(_TAG_COUNTRY, DEFAULT_COUNTRY_CODE))
        return SlipRef(sending_bank=bank, trans_ref=ref, country_code=country)
    if api_id == API_ID_EWALLET:
        return _parse_ewallet(sub, fields.get(_TAG_COUNTRY, DEFAULT_COUNTRY_CODE))
    raise InvalidSlipQR(
        SlipReason.UNKNOWN_API_ID,
        "00.00",
        f"tag 00.00 (API id) is {_echo(api_id)}, not {API_ID_SLIP} (bank slip)"
        f" or {API_ID_EWALLET} (e-wallet slip)",
    )


def _parse_ewallet(sub: dict[str, str], country_code: str) -> SlipRef:
    """The e-wallet layout's sub-fields, checked in tag order, and the slip they name."""
    provider = _check_provider(_required(sub, _SUB_PROVIDER, "e-wallet provider id"))
    event_type = _check_event_type(_required(sub, _SUB_EVENT_TYPE, "event type"))
    transaction_id = _check_trans_ref(
        _required(sub, _SUB_TRANSACTION_ID, "transaction id"),
        _SUB_TRANSACTION_ID,
        "transaction id",
    )
    trans_date = _check_date(_required(sub, _SUB_DATE, "date"))
    # E-wallet slips carry no tag 51; one written anyway is held to the bank layout's rule.
    country = _check_country(country_code)
    return SlipRef(
        sending_bank=EWALLET_PROVIDERS[provider],
        trans_ref=transaction_id,
        country_code=country,
        layout=SlipLayout.EWALLET,
        event_type=event_type,
        trans_date=trans_date,
    )


def _clean(text: str) -> str:
    """The stripped text, once it is short, non-empty, printable ASCII and not a payment QR."""
    # Length first, on the raw text, so a huge input costs nothing more.
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidSlipQR(
            SlipReason.TOO_LONG, "", f"text is {len(text)} characters, over {MAX_TEXT_LENGTH}"
        )
    # Scanners add a trailing newline; the QR itself never has surrounding whitespace.
    text = text.strip()
    if not text:
        raise InvalidSlipQR(SlipReason.EMPTY, "", "text is empty")
    printable = _PRINTABLE_ASCII.match(text)
    end = printable.end() if printable else 0
    if end != len(text):
        # Name the character by code point: echoing it could be a control or bidi character.
        raise InvalidSlipQR(
            SlipReason.BAD_FORMAT,
            "",
            f"character U+{ord(text[end]):04X} at position {end} is not printable ASCII",
        )
    if text.startswith(_PAYMENT_PREFIX):
        raise _not_a_slip("it starts with payload format indicator 000201")
    return text


def _locate_crc(text: str) -> _CrcField:
    """The CRC field at the end of the text, in any of the forms seen in the wild."""
    if match := _CRC_FULL.search(text):
        start = match.start()
        return _CrcField(start, match.group(1), (text[: start + 4],))
    if match := _CRC_SHORT_HEADER.search(text):
        start = match.start()
        # Printers that drop the zero disagree on whether the CRC covers the header they
        # print ("9103") or the one they meant ("9104"), so both are accepted.
        return _CrcField(start, match.group(1), (text[: start + 4], text[:start] + "9104"))
    if match := _CRC_SHORT_VALUE.search(text):
        start = match.start()
        return _CrcField(start, match.group(1), (text[: start + 4],))
    if _has_malformed_crc(text):
        raise InvalidSlipQR(SlipReason.BAD_CRC, _TAG_CRC, "tag 91 (CRC) is not 3-4 hex digits")
    if _PAYMENT_CRC.search(text):
        raise _not_a_slip("it ends with a payment QR CRC field 6304")
    raise _missing(_TAG_CRC, "CRC")


def _has_malformed_crc(text: str) -> bool:
    """Whether the text ends with a tag 91 field whose value is not a CRC in any known form."""
    for length in range(100):
        start = len(text) - 4 - length
        if start < 0:
            break
        if text.startswith(f"{_TAG_CRC}{length:02d}", start):
            return True
    # "9104" with 3 characters after it: the dropped-zero form, here with a non-hex character.
    return len(text) >= 7 and text.startswith(f"{_TAG_CRC}04", len(text) - 7)


def _check_crc(crc: _CrcField) -> None:
    """Raise BAD_CRC unless the written CRC matches one of the texts it may cover."""
    written = int(crc.value, 16)
    if not any(crc16_ccitt_false(c.encode("ascii")) == written for c in crc.covered):
        raise InvalidSlipQR(
            SlipReason.BAD_CRC, _TAG_CRC, f"tag 91 (CRC) {crc.value} does not match the text"
        )


def _split_tlvs(data: str, *, container: str) -> dict[str, str]:
    """Tag -> value for a run of TLVs; `container` is "" at the top level or "00" when nested."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        tag = data[pos : pos + 2]
        if len(tag) < 2:
            raise InvalidSlipQR(
                SlipReason.BAD_LENGTH, container, f"{_describe(container)}: a tag is cut short"
            )
        if not _is_digits(tag):
            raise InvalidSlipQR(
                SlipReason.BAD_FORMAT,
                container,
                f"{_describe(container)}: tag {_echo(tag)} is not 2 digits",
            )
        where = f"tag {_path(container, tag)}"
        length = data[pos + 2 : pos + 4]
        if len(length) < 2 or not _is_digits(length):
            raise InvalidSlipQR(
                SlipReason.BAD_LENGTH, container, f"{where}: length {_echo(length)} is not 2 digits"
            )
        end = pos + 4 + int(length)
        if end > len(data):
            raise InvalidSlipQR(
                SlipReason.BAD_LENGTH, container, f"{where}: length {length} runs past the end"
            )
        if tag in fields:
            path = _path(container, tag)
            raise InvalidSlipQR(SlipReason.BAD_FORMAT, path, f"tag {path} appears twice")
        fields[tag] = data[pos + 4 : end]
        pos = end
    return fields


def _required(sub: dict[str, str], tag: str, name: str) -> str:
    """A sub-field of the nested payload, or MISSING_FIELD."""
    if tag not in sub:
        raise _missing(_path(_TAG_PAYLOAD, tag), name)
    return sub[tag]


def _check_bank(value: str) -> str:
    if len(value) != 3 or not _is_digits(value):
        raise InvalidSlipQR(
            SlipReason.BAD_BANK_CODE,
            "00.01",
            f"tag 00.01 (sending bank code) must be exactly 3 digits, got {_echo(value)}",
        )
    return value


def _check_provider(value: str) -> str:
    if value not in EWALLET_PROVIDERS:
        known = ", ".join(sorted(EWALLET_PROVIDERS))
        raise InvalidSlipQR(
            SlipReason.UNKNOWN_PROVIDER,
            "00.01",
            f"tag 00.01 (e-wallet provider id) is {_echo(value)}, not a known provider ({known})",
        )
    return value


def _check_event_type(value: str) -> str:
    if not 1 <= len(value) <= _MAX_EVENT_TYPE or not set(value) <= _ASCII_UPPER_DIGITS:
        raise InvalidSlipQR(
            SlipReason.BAD_EVENT_TYPE,
            "00.02",
            "tag 00.02 (event type) must be 1-16 ASCII uppercase letters and digits,"
            f" got {_echo(value)}",
        )
    return value


def _check_trans_ref(value: str, sub_tag: str, name: str) -> str:
    """A bank slip's transRef (sub-tag 02) or an e-wallet slip's transaction id (sub-tag 03)."""
    if not 1 <= len(value) <= _MAX_TRANS_REF or not set(value) <= _ASCII_ALNUM:
        path = _path(_TAG_PAYLOAD, sub_tag)
        raise InvalidSlipQR(
            SlipReason.BAD_TRANS_REF,
            path,
            f"tag {path} ({name}) must be 1-32 ASCII letters and digits, got {_echo(value)}",
        )
    return value


def _check_date(value: str) -> date:
    """DDMMYYYY as printed on e-wallet slips, as a calendar date."""
    if len(value) == 8 and _is_digits(value):
        try:
            return date(int(value[4:]), int(value[2:4]), int(value[:2]))
        except ValueError:
            pass  # Digits, but no such day (31022026, or year 0000): reported below.
    raise InvalidSlipQR(
        SlipReason.BAD_DATE,
        "00.04",
        f"tag 00.04 (date) must be a real date as 8 digits DDMMYYYY, got {_echo(value)}",
    )


def _check_country(value: str) -> str:
    if len(value) != 2 or not set(value) <= _ASCII_UPPER:
        raise InvalidSlipQR(
            SlipReason.BAD_COUNTRY_CODE,
            _TAG_COUNTRY,
            f"tag 51 (country code) must be 2 uppercase letters, got {_echo(value)}",
        )
    return value


def _tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def _is_digits(text: str) -> bool:
    return bool(text) and set(text) <= _ASCII_DIGITS


def _path(container: str, tag: str) -> str:
    return f"{container}.{tag}" if container else tag


def _describe(container: str) -> str:
    return f"tag {container} (nested payload)" if container else "top level"


def _echo(value: str) -> str:
    """A value for a message: quoted, and truncated so a hostile input cannot flood logs."""
    shown = value if len(value) <= _ECHO_LIMIT else value[:_ECHO_LIMIT] + "..."
    return repr(shown)


def _missing(path: str, name: str) -> InvalidSlipQR:
    return InvalidSlipQR(SlipReason.MISSING_FIELD, path, f"tag {path} ({name}) is missing")


def _not_a_slip(why: str) -> InvalidSlipQR:
    return InvalidSlipQR(
        SlipReason.NOT_A_SLIP_QR,
        _TAG_PAYLOAD,
        f"this is a PromptPay payment QR, not a slip mini QR: {why}",
    )
