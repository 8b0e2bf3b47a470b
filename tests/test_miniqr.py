"""Tests for txverify.miniqr, the slip mini QR codec."""

from __future__ import annotations

import dataclasses
import pickle
import string
from datetime import date

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from txverify.banks import BANKS, is_member_code
from txverify.miniqr import (
    EWALLET_PROVIDERS,
    MAX_TEXT_LENGTH,
    TRUEMONEY_MEMBER_CODE,
    InvalidSlipQR,
    SlipLayout,
    SlipReason,
    SlipRef,
    build,
    build_ewallet,
    crc16_ccitt_false,
    parse,
)

EXAMPLE_BANK = "014"
EXAMPLE_REF = "20201107013FsG6joxJrXDrbJ"
# The published example, up to and including the CRC header "9104".
EXAMPLE_HEAD = "004600060000010103014022520201107013FsG6joxJrXDrbJ5102TH9104"
EXAMPLE = EXAMPLE_HEAD + "37B6"
# A hand-written e-wallet slip up to and including "9104": API id 01, provider 01 (TrueMoney),
# event P2P, transaction id 5000107110001234, date 07112020; no tag 51.
EWALLET_ID = "5000107110001234"
EWALLET_DATE = date(2020, 11, 7)
EWALLET_HEAD = (
    "0051" + "000201" + "010201" + "0203P2P" + "0316" + EWALLET_ID + "040807112020" + "9104"
)
EWALLET_REF = SlipRef(
    TRUEMONEY_MEMBER_CODE,
    EWALLET_ID,
    "TH",
    layout=SlipLayout.EWALLET,
    event_type="P2P",
    trans_date=EWALLET_DATE,
)
# A PromptPay payment QR (EMVCo, merchant-presented) without its CRC value.
PAYMENT_HEAD = "00020101021129370016A000000677010111011300668123456785802TH53037646304"

ALNUM = string.ascii_letters + string.digits
bank_codes = st.text(alphabet=string.digits, min_size=3, max_size=3)
trans_refs = st.text(alphabet=ALNUM, min_size=1, max_size=32)
country_codes = st.text(alphabet=string.ascii_uppercase, min_size=2, max_size=2)
event_types = st.text(alphabet=string.ascii_uppercase + string.digits, min_size=1, max_size=16)
slip_dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
# Every code point, surrogates and control characters included: str.encode would choke on these.
any_char = st.characters(exclude_categories=())


def _tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def _crc_hex(head: str) -> str:
    return f"{crc16_ccitt_false(head.encode('ascii')):04X}"


def _with_crc(body: str) -> str:
    """The body with a correct "9104" CRC field appended, to get bad fields past the CRC check."""
    head = body + "9104"
    return head + _crc_hex(head)


def _payload(
    api_id: str | None = "000001", bank: str | None = "014", ref: str | None = "R1"
) -> str:
    """Tag 00 with the given sub-fields; None leaves a sub-field out."""
    subs = [("00", api_id), ("01", bank), ("02", ref)]
    return _tlv("00", "".join(_tlv(tag, value) for tag, value in subs if value is not None))


def _ewallet_payload(
    api_id: str | None = "01",
    provider: str | None = "01",
    event: str | None = "P2P",
    txn: str | None = "T1",
    day: str | None = "07112020",
) -> str:
    """Tag 00 of an e-wallet slip with the given sub-fields; None leaves a sub-field out."""
    subs = [("00", api_id), ("01", provider), ("02", event), ("03", txn), ("04", day)]
    return _tlv("00", "".join(_tlv(tag, value) for tag, value in subs if value is not None))


def _ewallet_ref(txn: str, day: date, event: str = "P2P") -> SlipRef:
    return SlipRef(
        TRUEMONEY_MEMBER_CODE,
        txn,
        "TH",
        layout=SlipLayout.EWALLET,
        event_type=event,
        trans_date=day,
    )


def _reject(text: str) -> InvalidSlipQR:
    with pytest.raises(InvalidSlipQR) as info:
        parse(text)
    return info.value


def _short_crc_body(covered_header: str) -> tuple[str, str, int]:
    """A slip body (no CRC field), its ref, and its CRC over body + header, which is < 0x1000.

    A deterministic search: about 1 in 16 refs qualifies, so this ends within a few dozen tries.
    """
    for n in range(10_000):
        ref = f"REF{n}"
        body = _payload(ref=ref) + _tlv("51", "TH")
        crc = crc16_ccitt_false((body + covered_header).encode("ascii"))
        if crc < 0x1000:
            return body, ref, crc
    raise AssertionError("no ref with a short CRC found")


def _short_crc_ewallet_head() -> tuple[str, str, int]:
    """An e-wallet slip up to "9104", its transaction id, and its CRC, which is < 0x1000."""
    for n in range(10_000):
        txn = f"TXN{n}"
        head = _ewallet_payload(txn=txn) + "9104"
        crc = crc16_ccitt_false(head.encode("ascii"))
        if crc < 0x1000:
            return head, txn, crc
    raise AssertionError("no transaction id with a short CRC found")


# --- CRC -------------------------------------------------------------------------------------


def test_crc16_ccitt_false_check_value() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_published_example_crc_is_37b6() -> None:
    assert _crc_hex(EXAMPLE_HEAD) == "37B6"


def test_build_gives_the_published_example() -> None:
    assert build(EXAMPLE_BANK, EXAMPLE_REF) == EXAMPLE


def test_published_example_parses() -> None:
    assert parse(EXAMPLE) == SlipRef(EXAMPLE_BANK, EXAMPLE_REF, "TH")


# --- Round trip and accepted variants --------------------------------------------------------


@given(bank=bank_codes, ref=trans_refs)
def test_round_trip_with_default_country(bank: str, ref: str) -> None:
    assert parse(build(bank, ref)) == SlipRef(bank, ref, "TH")


@given(bank=bank_codes, ref=trans_refs, country=country_codes)
def test_round_trip_with_any_country(bank: str, ref: str, country: str) -> None:
    assert parse(build(bank, ref, country)) == SlipRef(bank, ref, country)


def test_lowercase_crc_is_accepted() -> None:
    assert parse(EXAMPLE_HEAD + "37b6") == SlipRef(EXAMPLE_BANK, EXAMPLE_REF)


def test_three_digit_crc_under_9103_header_covering_9103_is_accepted() -> None:
    body, ref, crc = _short_crc_body("9103")
    assert parse(f"{body}9103{crc:03X}") == SlipRef("014", ref)


def test_three_digit_crc_under_9103_header_covering_9104_is_accepted() -> None:
    body, ref, crc = _short_crc_body("9104")
    assert parse(f"{body}9103{crc:03X}") == SlipRef("014", ref)


def test_three_digit_crc_after_9104_header_is_accepted() -> None:
    body, ref, crc = _short_crc_body("9104")
    assert parse(f"{body}9104{crc:03x}") == SlipRef("014", ref)


def test_three_digit_crc_is_not_a_prefix_of_the_real_crc() -> None:
    # 37B is the start of the right CRC 37B6, not the CRC with a leading zero dropped.
    exc = _reject(EXAMPLE_HEAD + "37B")
    assert (exc.reason, exc.field) == (SlipReason.BAD_CRC, "91")


def test_surrounding_whitespace_is_stripped() -> None:
    assert parse(f"  {EXAMPLE}\r\n") == SlipRef(EXAMPLE_BANK, EXAMPLE_REF)


def test_country_code_is_optional_and_defaults_to_th() -> None:
    assert parse(_with_crc(_payload())) == SlipRef("014", "R1", "TH")


def test_unknown_top_level_tag_is_ignored() -> None:
    text = _with_crc(_payload() + _tlv("62", "future") + _tlv("51", "LA"))
    assert parse(text) == SlipRef("014", "R1", "LA")


# --- Robustness ------------------------------------------------------------------------------


def _parse_or_error(text: str) -> SlipRef | InvalidSlipQR:
    # Any other exception escapes and fails the calling test.
    try:
        return parse(text)
    except InvalidSlipQR as exc:
        return exc


def _assert_parse_fails_cleanly_or_round_trips(text: str) -> None:
    """parse either raises InvalidSlipQR with a SlipReason or returns a SlipRef build accepts."""
    result = _parse_or_error(text)
    if isinstance(result, SlipRef) and result.layout is SlipLayout.EWALLET:
        assert result.trans_date is not None
        provider = next(p for p, m in EWALLET_PROVIDERS.items() if m == result.sending_bank)
        rebuilt = build_ewallet(result.trans_ref, result.trans_date, result.event_type, provider)
        # build_ewallet writes no tag 51, so a country code written anyway does not come back.
        assert parse(rebuilt) == dataclasses.replace(result, country_code="TH")
        return
    if isinstance(result, SlipRef):
        assert parse(build(result.sending_bank, result.trans_ref, result.country_code)) == result
        return
    assert isinstance(result.reason, SlipReason)
    assert isinstance(result.field, str)
    # The message may echo a truncated field value, never the whole (possibly hostile) input.
    stripped = text.strip()
    if len(stripped) > 40:
        assert stripped not in str(result)


@given(
    st.one_of(
        st.text(any_char),
        st.text(alphabet="0123456789ABCDEFabcdef TH\n\x00"),
        st.text(any_char, min_size=1, max_size=8).map(lambda s: s * 100),
    )
)
def test_arbitrary_text_raises_only_invalid_slip_qr(text: str) -> None:
    _assert_parse_fails_cleanly_or_round_trips(text)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_arbitrary_printable_body_with_valid_crc_raises_only_invalid_slip_qr(body: str) -> None:
    _assert_parse_fails_cleanly_or_round_trips(_with_crc(body))


# TLV-shaped bodies reach the structural checks behind the CRC; lengths over 99 come out as
# 3 digits, which is damage worth fuzzing too.
_sub_tlvs = st.lists(
    st.tuples(st.sampled_from(["00", "01", "02", "03", "0A"]), st.text(ALNUM + "-", max_size=40)),
    max_size=4,
).map(lambda pairs: "".join(_tlv(tag, value) for tag, value in pairs))
_tlv_bodies = st.lists(
    st.tuples(
        st.sampled_from(["00", "51", "62", "91"]),
        st.one_of(_sub_tlvs, st.text(ALNUM, max_size=4), st.just("000001")),
    ),
    max_size=4,
).map(lambda pairs: "".join(_tlv(tag, value) for tag, value in pairs))


@given(_tlv_bodies)
def test_tlv_shaped_body_with_valid_crc_raises_only_invalid_slip_qr(body: str) -> None:
    _assert_parse_fails_cleanly_or_round_trips(_with_crc(body))


# E-wallet-shaped bodies: each sub-tag 00-04 right for its tag about half the time, else absent
# or wrong, so every e-wallet reason and a valid slip are all within reach.
_absent_or_other = st.one_of(st.none(), st.text(ALNUM + "-", max_size=34))
_ewallet_subs = st.tuples(
    st.one_of(st.just("01"), _absent_or_other),
    st.one_of(st.just("01"), _absent_or_other),
    st.one_of(event_types, _absent_or_other),
    st.one_of(trans_refs, _absent_or_other),
    st.one_of(
        slip_dates.map(lambda day: day.strftime("%d%m%Y")),
        st.one_of(st.text(string.digits, min_size=8, max_size=8), _absent_or_other),
    ),
)
_ewallet_bodies = st.tuples(_ewallet_subs, st.sampled_from(["", "5102TH", "5102LA", "5102th"])).map(
    lambda pair: _ewallet_payload(*pair[0]) + pair[1]
)


@given(_ewallet_bodies)
def test_ewallet_shaped_body_with_valid_crc_raises_only_invalid_slip_qr(body: str) -> None:
    _assert_parse_fails_cleanly_or_round_trips(_with_crc(body))


@given(bank=bank_codes, ref=trans_refs, index=st.integers(min_value=0), char=any_char)
def test_any_single_changed_character_is_caught(bank: str, ref: str, index: int, char: str) -> None:
    text = build(bank, ref)
    i = index % len(text)
    original = text[i]
    assume(char != original)
    # Accepted by design: the CRC hex digits are case-insensitive.
    in_crc_value = i >= len(text) - 4
    assume(not (in_crc_value and char in string.hexdigits and char.lower() == original.lower()))
    # Accepted by design: whitespace in place of the last character is stripped, leaving
    # "9104" + 3 digits, the dropped-leading-zero form; when the CRC is 0000 that reads "000",
    # which is that CRC exactly (1 text in 65536).
    assume(not (i == len(text) - 1 and char.isspace() and text.endswith("0000")))
    changed = text[:i] + char + text[i + 1 :]
    _reject(changed)


# --- Each reason, with its field -------------------------------------------------------------


def test_flipped_crc_digit_is_bad_crc() -> None:
    exc = _reject(EXAMPLE_HEAD + "37B7")
    assert (exc.reason, exc.field) == (SlipReason.BAD_CRC, "91")


def test_non_hex_crc_is_bad_crc() -> None:
    exc = _reject(EXAMPLE_HEAD + "37BZ")
    assert (exc.reason, exc.field) == (SlipReason.BAD_CRC, "91")


def test_three_non_hex_characters_after_9104_are_bad_crc() -> None:
    exc = _reject(EXAMPLE_HEAD + "37Z")
    assert (exc.reason, exc.field) == (SlipReason.BAD_CRC, "91")


def test_damage_before_the_crc_reads_as_bad_crc() -> None:
    # A misread length digit: the CRC is checked first, so it is reported as a scan error.
    exc = _reject("0047" + EXAMPLE[4:])
    assert (exc.reason, exc.field) == (SlipReason.BAD_CRC, "91")


def test_top_level_length_past_the_end_is_bad_length() -> None:
    exc = _reject(_with_crc("0099" + _payload()[4:]))
    assert (exc.reason, exc.field) == (SlipReason.BAD_LENGTH, "")


def test_length_one_past_the_end_is_bad_length() -> None:
    exc = _reject(_with_crc(_payload() + "5103TH"))
    assert (exc.reason, exc.field) == (SlipReason.BAD_LENGTH, "")


def test_tag_cut_short_is_bad_length() -> None:
    exc = _reject(_with_crc(_payload() + "5"))
    assert (exc.reason, exc.field) == (SlipReason.BAD_LENGTH, "")


def test_non_digit_length_is_bad_length() -> None:
    exc = _reject(_with_crc(_payload() + "51T" + "TH"))
    assert (exc.reason, exc.field) == (SlipReason.BAD_LENGTH, "")


def test_nested_length_past_the_end_is_bad_length_of_tag_00() -> None:
    nested = _tlv("00", "000001") + _tlv("01", "014") + "0299R1"
    exc = _reject(_with_crc(_tlv("00", nested)))
    assert (exc.reason, exc.field) == (SlipReason.BAD_LENGTH, "00")


def test_payment_qr_is_not_a_slip_qr() -> None:
    payment_qr = PAYMENT_HEAD + _crc_hex(PAYMENT_HEAD)
    exc = _reject(payment_qr)
    assert (exc.reason, exc.field) == (SlipReason.NOT_A_SLIP_QR, "00")


def test_payment_qr_prefix_alone_is_not_a_slip_qr() -> None:
    # Recognised before the CRC is looked for: a cut-off payment QR is still a payment QR.
    exc = _reject(PAYMENT_HEAD[:40])
    assert (exc.reason, exc.field) == (SlipReason.NOT_A_SLIP_QR, "00")


def test_text_ending_in_a_payment_crc_is_not_a_slip_qr() -> None:
    # The payment QR without its leading "000201" field still ends with tag 63, its CRC.
    head = PAYMENT_HEAD.removeprefix("000201")
    exc = _reject(head + _crc_hex(head))
    assert (exc.reason, exc.field) == (SlipReason.NOT_A_SLIP_QR, "00")


def test_other_api_id_is_unknown_api_id() -> None:
    exc = _reject(_with_crc(_payload(api_id="000002") + _tlv("51", "TH")))
    assert (exc.reason, exc.field) == (SlipReason.UNKNOWN_API_ID, "00.00")


def test_text_without_crc_field_is_missing_91() -> None:
    exc = _reject(EXAMPLE.removesuffix("910437B6"))
    assert (exc.reason, exc.field) == (SlipReason.MISSING_FIELD, "91")


def test_text_without_tag_00_is_missing_00() -> None:
    exc = _reject(_with_crc(_tlv("51", "TH")))
    assert (exc.reason, exc.field) == (SlipReason.MISSING_FIELD, "00")


def test_payload_without_api_id_is_missing_00_00() -> None:
    exc = _reject(_with_crc(_payload(api_id=None)))
    assert (exc.reason, exc.field) == (SlipReason.MISSING_FIELD, "00.00")


def test_payload_without_bank_code_is_missing_00_01() -> None:
    exc = _reject(_with_crc(_payload(bank=None)))
    assert (exc.reason, exc.field) == (SlipReason.MISSING_FIELD, "00.01")


def test_payload_without_trans_ref_is_missing_00_02() -> None:
    exc = _reject(_with_crc(_payload(ref=None) + _tlv("51", "TH")))
    assert (exc.reason, exc.field) == (SlipReason.MISSING_FIELD, "00.02")


def test_letter_in_bank_code_is_bad_bank_code() -> None:
    exc = _reject(_with_crc(_payload(bank="01A")))
    assert (exc.reason, exc.field) == (SlipReason.BAD_BANK_CODE, "00.01")
    assert "00.01" in str(exc)


def test_dash_in_trans_ref_is_bad_trans_ref() -> None:
    exc = _reject(_with_crc(_payload(ref="2020-1107")))
    assert (exc.reason, exc.field) == (SlipReason.BAD_TRANS_REF, "00.02")


def test_33_character_trans_ref_is_bad_trans_ref() -> None:
    exc = _reject(_with_crc(_payload(ref="A" * 33)))
    assert (exc.reason, exc.field) == (SlipReason.BAD_TRANS_REF, "00.02")


def test_lowercase_country_is_bad_country_code() -> None:
    exc = _reject(_with_crc(_payload() + _tlv("51", "th")))
    assert (exc.reason, exc.field) == (SlipReason.BAD_COUNTRY_CODE, "51")


@pytest.mark.parametrize("text", ["", "   ", "\r\n"])
def test_blank_text_is_empty(text: str) -> None:
    exc = _reject(text)
    assert (exc.reason, exc.field) == (SlipReason.EMPTY, "")


def test_text_over_max_length_is_too_long() -> None:
    exc = _reject(EXAMPLE + "0" * (MAX_TEXT_LENGTH - len(EXAMPLE) + 1))
    assert (exc.reason, exc.field) == (SlipReason.TOO_LONG, "")


def test_length_is_checked_before_stripping() -> None:
    exc = _reject(" " * (MAX_TEXT_LENGTH + 1))
    assert exc.reason == SlipReason.TOO_LONG


def test_non_ascii_character_is_bad_format() -> None:
    exc = _reject(EXAMPLE[:30] + "ก" + EXAMPLE[31:])
    assert (exc.reason, exc.field) == (SlipReason.BAD_FORMAT, "")
    assert "U+0E01" in str(exc)


def test_control_character_inside_is_bad_format() -> None:
    exc = _reject(EXAMPLE[:30] + "\t" + EXAMPLE[31:])
    assert (exc.reason, exc.field) == (SlipReason.BAD_FORMAT, "")


def test_non_digit_tag_is_bad_format() -> None:
    exc = _reject(_with_crc(_payload() + _tlv("5A", "TH")))
    assert (exc.reason, exc.field) == (SlipReason.BAD_FORMAT, "")


def test_duplicated_tag_is_bad_format() -> None:
    exc = _reject(_with_crc(_payload() + _tlv("51", "TH") + _tlv("51", "TH")))
    assert (exc.reason, exc.field) == (SlipReason.BAD_FORMAT, "51")


def test_crc_field_not_last_is_bad_format() -> None:
    exc = _reject(_with_crc(_payload() + _tlv("91", "37B6") + _tlv("51", "TH")))
    assert (exc.reason, exc.field) == (SlipReason.BAD_FORMAT, "91")


# --- The exception ---------------------------------------------------------------------------


def test_invalid_slip_qr_is_a_value_error() -> None:
    assert issubclass(InvalidSlipQR, ValueError)
    with pytest.raises(ValueError, match=r"00\.01"):
        parse(_with_crc(_payload(bank="1")))


def test_invalid_slip_qr_survives_pickling() -> None:
    exc = _reject(_with_crc(_payload(bank="01A")))
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.reason, copy.field, str(copy)) == (exc.reason, exc.field, str(exc))


def test_message_truncates_the_offending_value() -> None:
    exc = _reject(_with_crc(_payload(ref="A" * 41)))
    assert exc.reason == SlipReason.BAD_TRANS_REF
    assert "A" * 40 in str(exc)
    assert "A" * 41 not in str(exc)


@pytest.mark.parametrize(
    ("bank", "ref", "country", "reason"),
    [
        ("01A", "R1", "TH", SlipReason.BAD_BANK_CODE),
        ("0141", "R1", "TH", SlipReason.BAD_BANK_CODE),
        ("๐๑๔", "R1", "TH", SlipReason.BAD_BANK_CODE),
        ("014", "", "TH", SlipReason.BAD_TRANS_REF),
        ("014", "R-1", "TH", SlipReason.BAD_TRANS_REF),
        ("014", "A" * 33, "TH", SlipReason.BAD_TRANS_REF),
        ("014", "R1", "th", SlipReason.BAD_COUNTRY_CODE),
        ("014", "R1", "", SlipReason.BAD_COUNTRY_CODE),
    ],
)
def test_build_rejects_a_bad_field(bank: str, ref: str, country: str, reason: SlipReason) -> None:
    with pytest.raises(InvalidSlipQR) as info:
        build(bank, ref, country)
    assert info.value.reason == reason


def test_zero_crc_missing_its_last_digit_reads_as_the_dropped_zero_form() -> None:
    # Why the single-change test excludes whitespace for the last character of a 0000 CRC:
    # "9104" + "000" is how the dropped-zero form writes 0000, so the texts are the same.
    text = build("014", "R106673")
    assert text.endswith("91040000")
    assert parse(text[:-1] + "\n") == SlipRef("014", "R106673")


# --- E-wallet slips --------------------------------------------------------------------------


def test_bank_slip_has_the_bank_layout_and_no_ewallet_fields() -> None:
    ref = parse(EXAMPLE)
    assert (SlipLayout.BANK, "", None) == (ref.layout, ref.event_type, ref.trans_date)


def test_truemoney_member_code_is_a_member_code_but_no_bank_code() -> None:
    assert is_member_code(TRUEMONEY_MEMBER_CODE)
    assert TRUEMONEY_MEMBER_CODE not in BANKS


def test_provider_01_is_truemoney() -> None:
    assert {"01": "900"} == dict(EWALLET_PROVIDERS)


def test_hand_written_ewallet_example_parses() -> None:
    text = EWALLET_HEAD + f"{crc16_ccitt_false(EWALLET_HEAD.encode('ascii')):04x}"
    assert EWALLET_REF == parse(text)


def test_build_ewallet_gives_the_hand_written_example() -> None:
    text = EWALLET_HEAD + f"{crc16_ccitt_false(EWALLET_HEAD.encode('ascii')):04x}"
    assert text == build_ewallet(EWALLET_ID, EWALLET_DATE)


@given(txn=trans_refs, day=slip_dates, event=event_types)
def test_ewallet_round_trip(txn: str, day: date, event: str) -> None:
    assert _ewallet_ref(txn, day, event) == parse(build_ewallet(txn, day, event))


@given(txn=trans_refs, day=slip_dates)
def test_build_ewallet_writes_no_country_tag(txn: str, day: date) -> None:
    text = build_ewallet(txn, day)
    payload = _ewallet_payload(txn=txn, day=day.strftime("%d%m%Y"))
    assert payload + "9104" == text[:-4]


@given(txn=trans_refs, day=slip_dates)
def test_build_ewallet_writes_a_lowercase_crc(txn: str, day: date) -> None:
    text = build_ewallet(txn, day)
    assert _crc_hex(text[:-4]).lower() == text[-4:]


@given(txn=trans_refs, day=slip_dates)
def test_uppercase_ewallet_crc_is_accepted(txn: str, day: date) -> None:
    text = build_ewallet(txn, day)
    assert _ewallet_ref(txn, day) == parse(text[:-4] + text[-4:].upper())


def test_three_digit_ewallet_crc_after_9104_header_is_accepted() -> None:
    head, txn, crc = _short_crc_ewallet_head()
    assert _ewallet_ref(txn, EWALLET_DATE) == parse(f"{head}{crc:03x}")


def test_three_digit_ewallet_crc_under_9103_header_is_accepted() -> None:
    head, txn, crc = _short_crc_ewallet_head()
    assert _ewallet_ref(txn, EWALLET_DATE) == parse(f"{head[:-4]}9103{crc:03x}")


def test_ewallet_slip_with_tag_51_takes_its_country() -> None:
    text = _with_crc(_ewallet_payload() + _tlv("51", "TH"))
    assert _ewallet_ref("T1", EWALLET_DATE) == parse(text)


def test_ewallet_slip_with_lowercase_tag_51_is_bad_country_code() -> None:
    exc = _reject(_with_crc(_ewallet_payload() + _tlv("51", "th")))
    assert (SlipReason.BAD_COUNTRY_CODE, "51") == (exc.reason, exc.field)


@given(
    txn=trans_refs,
    day=slip_dates,
    event=event_types,
    index=st.integers(min_value=0),
    char=any_char,
)
def test_any_single_changed_character_in_an_ewallet_slip_is_caught(
    txn: str, day: date, event: str, index: int, char: str
) -> None:
    text = build_ewallet(txn, day, event)
    i = index % len(text)
    original = text[i]
    assume(char != original)
    # The same exclusions as for bank slips (test_any_single_changed_character_is_caught):
    # CRC hex digits are case-insensitive, and whitespace in place of the last "0" of a 0000
    # CRC leaves the dropped-zero form of that CRC.
    in_crc_value = i >= len(text) - 4
    assume(not (in_crc_value and char in string.hexdigits and char.lower() == original.lower()))
    assume(not (i == len(text) - 1 and char.isspace() and text.endswith("0000")))
    changed = text[:i] + char + text[i + 1 :]
    _reject(changed)


def test_unknown_provider_is_unknown_provider() -> None:
    exc = _reject(_with_crc(_ewallet_payload(provider="02")))
    assert (SlipReason.UNKNOWN_PROVIDER, "00.01") == (exc.reason, exc.field)


def test_bank_code_as_provider_is_unknown_provider() -> None:
    # A bank code under the e-wallet API id is not a provider id: the layouts do not mix.
    exc = _reject(_with_crc(_ewallet_payload(provider="014")))
    assert (SlipReason.UNKNOWN_PROVIDER, "00.01") == (exc.reason, exc.field)


@pytest.mark.parametrize("event", ["p2p", "", "P2P-1", "A" * 17])
def test_bad_event_type_is_bad_event_type(event: str) -> None:
    exc = _reject(_with_crc(_ewallet_payload(event=event)))
    assert (SlipReason.BAD_EVENT_TYPE, "00.02") == (exc.reason, exc.field)


@pytest.mark.parametrize("txn", ["T-1", "", "A" * 33])
def test_bad_transaction_id_is_bad_trans_ref_of_00_03(txn: str) -> None:
    exc = _reject(_with_crc(_ewallet_payload(txn=txn)))
    assert (SlipReason.BAD_TRANS_REF, "00.03") == (exc.reason, exc.field)
    assert "00.03" in str(exc)


@pytest.mark.parametrize(
    "day",
    [
        "31022026",  # no 31 February
        "29022026",  # 2026 is no leap year
        "1x022026",
        "0702202",
        "070220261",
        "07132026",
        "00022026",
        "07020000",  # no year 0
    ],
)
def test_bad_date_is_bad_date(day: str) -> None:
    exc = _reject(_with_crc(_ewallet_payload(day=day)))
    assert (SlipReason.BAD_DATE, "00.04") == (exc.reason, exc.field)


def test_leap_day_is_a_date() -> None:
    assert date(2028, 2, 29) == parse(_with_crc(_ewallet_payload(day="29022028"))).trans_date


@pytest.mark.parametrize(
    ("missing", "field"),
    [("provider", "00.01"), ("event", "00.02"), ("txn", "00.03"), ("day", "00.04")],
)
def test_ewallet_payload_without_a_sub_field_is_missing_it(missing: str, field: str) -> None:
    exc = _reject(_with_crc(_ewallet_payload(**{missing: None})))
    assert (SlipReason.MISSING_FIELD, field) == (exc.reason, exc.field)


@pytest.mark.parametrize(
    ("txn", "event", "provider", "reason"),
    [
        ("T-1", "P2P", "01", SlipReason.BAD_TRANS_REF),
        ("", "P2P", "01", SlipReason.BAD_TRANS_REF),
        ("A" * 33, "P2P", "01", SlipReason.BAD_TRANS_REF),
        ("T1", "p2p", "01", SlipReason.BAD_EVENT_TYPE),
        ("T1", "", "01", SlipReason.BAD_EVENT_TYPE),
        ("T1", "A" * 17, "01", SlipReason.BAD_EVENT_TYPE),
        ("T1", "ＰＰ", "01", SlipReason.BAD_EVENT_TYPE),
        ("T1", "P2P", "02", SlipReason.UNKNOWN_PROVIDER),
        ("T1", "P2P", "", SlipReason.UNKNOWN_PROVIDER),
    ],
)
def test_build_ewallet_rejects_a_bad_field(
    txn: str, event: str, provider: str, reason: SlipReason
) -> None:
    with pytest.raises(InvalidSlipQR) as info:
        build_ewallet(txn, EWALLET_DATE, event, provider)
    assert reason == info.value.reason
