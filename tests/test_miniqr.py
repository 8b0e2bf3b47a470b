"""Tests for txverify.miniqr, the slip mini QR codec."""

from __future__ import annotations

import pickle
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from txverify.miniqr import (
    MAX_TEXT_LENGTH,
    InvalidSlipQR,
    SlipReason,
    SlipRef,
    build,
    crc16_ccitt_false,
    parse,
)

EXAMPLE_BANK = "014"
EXAMPLE_REF = "20201107013FsG6joxJrXDrbJ"
# The published example, up to and including the CRC header "9104".
EXAMPLE_HEAD = "004600060000010103014022520201107013FsG6joxJrXDrbJ5102TH9104"
EXAMPLE = EXAMPLE_HEAD + "37B6"
# A PromptPay payment QR (EMVCo, merchant-presented) without its CRC value.
PAYMENT_HEAD = "00020101021129370016A000000677010111011300668123456785802TH53037646304"

ALNUM = string.ascii_letters + string.digits
bank_codes = st.text(alphabet=string.digits, min_size=3, max_size=3)
trans_refs = st.text(alphabet=ALNUM, min_size=1, max_size=32)
country_codes = st.text(alphabet=string.ascii_uppercase, min_size=2, max_size=2)
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
