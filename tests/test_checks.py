"""Expectation checks: a merchant's plain expectations against an issuer's masked transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from txverify.errors import Reason, ServiceError
from txverify.hub.checks import (
    MAX_RECEIVERS,
    evaluate,
    masked_matches,
    validate_expectations,
    verdict,
)
from txverify.simulators.masking import mask_account
from txverify.units import BANGKOK, money, to_timestamp
from txverify.v1 import common_pb2, verification_pb2

PASS = verification_pb2.CHECK_OUTCOME_PASS
FAIL = verification_pb2.CHECK_OUTCOME_FAIL
UNCHECKABLE = verification_pb2.CHECK_OUTCOME_UNCHECKABLE
TRANS_TIME = datetime(2026, 11, 27, 14, 5, tzinfo=BANGKOK)
MSISDN = common_pb2.PROXY_TYPE_MSISDN
NATID = common_pb2.PROXY_TYPE_NATID
EMAIL = common_pb2.PROXY_TYPE_EMAIL


def receiver_party(
    account: str | None = "xxx-x-x2295-x",
    proxy: common_pb2.Proxy | None = None,
) -> common_pb2.Party:
    party = common_pb2.Party(display_name="ชิซูกะ ส", name="CHICHUKA S")
    if account is not None:
        party.account.CopyFrom(
            common_pb2.Account(type=common_pb2.ACCOUNT_TYPE_BANKAC, value=account)
        )
    if proxy is not None:
        party.proxy.CopyFrom(proxy)
    return party


def transaction(
    receiver: common_pb2.Party | None = None,
    status: common_pb2.TransactionStatus.ValueType = common_pb2.TRANSACTION_STATUS_COMPLETED,
) -> common_pb2.Transaction:
    """A masked transaction as an issuer reports it: 150.00 THB to SCB-style account 2295."""
    return common_pb2.Transaction(
        trans_ref="016331141519BPM04805",
        sending_bank="014",
        receiving_bank="004",
        trans_time=to_timestamp(TRANS_TIME),
        sender=receiver_party(account="xxx-x-x1234-x"),
        receiver=receiver_party(proxy=msisdn("xxx-xxx-5678")) if receiver is None else receiver,
        amount=money(15000),
        paid_local_amount=money(15000),
        trans_fee_amount=money(0),
        country_code="TH",
        status=status,
    )


def msisdn(value: str) -> common_pb2.Proxy:
    return common_pb2.Proxy(type=MSISDN, value=value)


def by_account(account: str) -> verification_pb2.ReceiverExpectation:
    return verification_pb2.ReceiverExpectation(account=account)


def by_proxy(
    proxy_type: common_pb2.ProxyType.ValueType, value: str
) -> verification_pb2.ReceiverExpectation:
    return verification_pb2.ReceiverExpectation(
        proxy=common_pb2.Proxy(type=proxy_type, value=value)
    )


def only(
    results: list[verification_pb2.CheckResult], check: verification_pb2.Check.ValueType
) -> verification_pb2.CheckResult:
    (found,) = [result for result in results if result.check == check]
    return found


def receiver_outcome(
    *receivers: verification_pb2.ReceiverExpectation,
    tx: common_pb2.Transaction | None = None,
) -> verification_pb2.CheckOutcome.ValueType:
    expect = verification_pb2.Expectations(receivers=receivers)
    result = only(evaluate(expect, tx or transaction()), verification_pb2.CHECK_RECEIVER)
    return result.outcome


def check(
    check: verification_pb2.Check.ValueType,
    outcome: verification_pb2.CheckOutcome.ValueType,
    expected: str,
    observed: str,
) -> verification_pb2.CheckResult:
    return verification_pb2.CheckResult(
        check=check, outcome=outcome, expected=expected, observed=observed
    )


def invalid_fields(expect: verification_pb2.Expectations) -> tuple[Reason, str, list[str]]:
    with pytest.raises(ServiceError) as caught:
        validate_expectations(expect)
    error = caught.value
    return error.reason, error.metadata["field"], [v.field for v in error.violations]


# --- amount -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "outcome", "expected"),
    [
        (verification_pb2.AmountExpectation(equals_satang=15000), PASS, "= 150.00 THB"),
        (verification_pb2.AmountExpectation(equals_satang=15050), FAIL, "= 150.50 THB"),
        (verification_pb2.AmountExpectation(at_least_satang=15000), PASS, ">= 150.00 THB"),
        (verification_pb2.AmountExpectation(at_least_satang=15001), FAIL, ">= 150.01 THB"),
        (verification_pb2.AmountExpectation(at_most_satang=15000), PASS, "<= 150.00 THB"),
        (verification_pb2.AmountExpectation(at_most_satang=14999), FAIL, "<= 149.99 THB"),
        (
            verification_pb2.AmountExpectation(at_least_satang=10000, at_most_satang=20000),
            PASS,
            ">= 100.00 THB, <= 200.00 THB",
        ),
        (
            verification_pb2.AmountExpectation(at_least_satang=20000, at_most_satang=30000),
            FAIL,
            ">= 200.00 THB, <= 300.00 THB",
        ),
    ],
    ids=[
        "equals",
        "not-equal",
        "at-least-bound",
        "below-at-least",
        "at-most-bound",
        "above-at-most",
        "in-range",
        "out-of-range",
    ],
)
def test_amount_holds_only_when_every_set_bound_holds(
    amount: verification_pb2.AmountExpectation,
    outcome: verification_pb2.CheckOutcome.ValueType,
    expected: str,
) -> None:
    results = evaluate(verification_pb2.Expectations(amount=amount), transaction())

    assert check(verification_pb2.CHECK_AMOUNT, outcome, expected, "150.00 THB") == only(
        results, verification_pb2.CHECK_AMOUNT
    )


def test_amount_observed_is_what_the_issuer_reported() -> None:
    tx = transaction()
    tx.amount.satang = 15050
    expect = verification_pb2.Expectations(
        amount=verification_pb2.AmountExpectation(equals_satang=15000)
    )

    result = only(evaluate(expect, tx), verification_pb2.CHECK_AMOUNT)

    assert (FAIL, "150.50 THB") == (result.outcome, result.observed)


# --- receiver: accounts -----------------------------------------------------


def test_account_matching_the_shown_digits_passes() -> None:
    assert PASS == receiver_outcome(by_account("1234522950"))


def test_account_separators_are_ignored() -> None:
    assert PASS == receiver_outcome(by_account("123-4-52295-0"))


def test_account_with_other_shown_digits_fails() -> None:
    assert FAIL == receiver_outcome(by_account("1234522960"))


def test_account_of_another_length_fails() -> None:
    assert FAIL == receiver_outcome(by_account("123452295012"))


def test_receiver_observed_shows_the_issuers_masked_values() -> None:
    result = only(
        evaluate(
            verification_pb2.Expectations(receivers=[by_account("1234522950")]), transaction()
        ),
        verification_pb2.CHECK_RECEIVER,
    )

    assert "BANKAC xxx-x-x2295-x, MSISDN xxx-xxx-5678" == result.observed


def test_receiver_expected_shows_only_the_digits_the_issuer_shows() -> None:
    expect = verification_pb2.Expectations(
        receivers=[by_account("1234522960"), by_proxy(MSISDN, "0812345678")]
    )

    result = only(evaluate(expect, transaction()), verification_pb2.CHECK_RECEIVER)

    assert "ACCOUNT xxx-x-x2296-x or MSISDN xxx-xxx-5678" == result.expected


def test_account_reported_as_an_account_proxy_still_matches() -> None:
    party = receiver_party(
        account=None,
        proxy=common_pb2.Proxy(type=common_pb2.PROXY_TYPE_ACCOUNT, value="xxx-x-x2295-x"),
    )

    assert PASS == receiver_outcome(by_account("1234522950"), tx=transaction(receiver=party))


# --- receiver: proxies ------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    ["0812345678", "+66812345678", "0066812345678", "081-234-5678", "081 234 5678", "66812345678"],
)
def test_msisdn_matches_in_every_spelling(spelling: str) -> None:
    assert PASS == receiver_outcome(by_proxy(MSISDN, spelling))


def test_msisdn_with_other_last_digits_fails() -> None:
    assert FAIL == receiver_outcome(by_proxy(MSISDN, "0812345679"))


def test_proxy_of_another_type_than_observed_is_not_a_match() -> None:
    # The same digits as the observed mobile number, but as an e-wallet ID.
    assert FAIL == receiver_outcome(by_proxy(common_pb2.PROXY_TYPE_EWALLETID, "0812345678"))


def test_natid_matches_its_shown_digits() -> None:
    party = receiver_party(
        account=None, proxy=common_pb2.Proxy(type=NATID, value="x-xxxx-xxxx0-12-3")
    )

    assert PASS == receiver_outcome(
        by_proxy(NATID, "1-2345-67890-12-3"), tx=transaction(receiver=party)
    )


def test_email_matches_case_insensitively() -> None:
    party = receiver_party(
        account=None, proxy=common_pb2.Proxy(type=EMAIL, value="sxxxxxx@example.com")
    )

    assert PASS == receiver_outcome(
        by_proxy(EMAIL, "Somchai@Example.COM"), tx=transaction(receiver=party)
    )


def test_email_at_another_domain_fails() -> None:
    party = receiver_party(
        account=None, proxy=common_pb2.Proxy(type=EMAIL, value="sxxxxxx@example.com")
    )

    assert FAIL == receiver_outcome(
        by_proxy(EMAIL, "somchai@exampla.com"), tx=transaction(receiver=party)
    )


def test_one_matching_receiver_of_several_passes() -> None:
    assert PASS == receiver_outcome(
        by_account("9999999999"),
        by_proxy(MSISDN, "0899999999"),
        by_proxy(MSISDN, "+66812345678"),
    )


# --- receiver: undecidable --------------------------------------------------


def test_receiver_without_account_or_proxy_is_uncheckable() -> None:
    tx = transaction(receiver=receiver_party(account=None))

    result = only(
        evaluate(verification_pb2.Expectations(receivers=[by_account("1234522950")]), tx),
        verification_pb2.CHECK_RECEIVER,
    )

    assert (UNCHECKABLE, "no account or proxy") == (result.outcome, result.observed)


def test_receiver_showing_fewer_than_four_characters_is_uncheckable() -> None:
    tx = transaction(receiver=receiver_party(account="xxx-x-xxx95-x"))

    assert UNCHECKABLE == receiver_outcome(by_account("1234522950"), tx=tx)


def test_undecidable_comparison_outweighs_failed_ones() -> None:
    tx = transaction(receiver=receiver_party(account="xxx-x-xxx95-x"))

    assert UNCHECKABLE == receiver_outcome(
        by_account("123452295012"), by_account("1234522950"), tx=tx
    )


# --- masked_matches ---------------------------------------------------------


def test_masked_matches_accepts_uppercase_masks() -> None:
    assert masked_matches("XXX-X-X2295-X", "1234522950") is True


def test_masked_matches_compares_letters_case_insensitively() -> None:
    assert masked_matches("xxxxABCD", "1234abcd") is True


def test_masked_matches_is_false_when_lengths_differ() -> None:
    assert masked_matches("xxx-x-x2295-x", "12345229501") is False


def test_masked_matches_is_undecidable_with_fewer_than_four_shown() -> None:
    assert masked_matches("xxxxxxx95x", "1234522950") is None


def test_masked_matches_is_false_when_a_shown_character_disagrees_however_few() -> None:
    # A contradiction proves another value even where agreement would prove nothing.
    assert masked_matches("xxxxxxx96x", "1234522950") is False


@settings(database=None)
@given(st.text("0123456789", min_size=10, max_size=10))
def test_masked_matches_accepts_every_ten_digit_account_as_masked(account: str) -> None:
    assert masked_matches(mask_account(account), account) is True


@settings(database=None)
@given(
    st.text("0123456789", min_size=10, max_size=10),
    st.text("0123456789", min_size=10, max_size=10),
)
def test_masked_matches_rejects_an_account_with_other_shown_digits(
    account: str, other: str
) -> None:
    assume(account[5:9] != other[5:9])  # the four digits mask_account shows

    assert masked_matches(mask_account(account), other) is False


# --- receiving bank, time window, status ------------------------------------


@pytest.mark.parametrize(("bank", "outcome"), [("004", PASS), ("014", FAIL)])
def test_receiving_bank_must_equal_the_reported_one(
    bank: str, outcome: verification_pb2.CheckOutcome.ValueType
) -> None:
    results = evaluate(verification_pb2.Expectations(receiving_bank=bank), transaction())

    assert check(verification_pb2.CHECK_RECEIVING_BANK, outcome, bank, "004") == only(
        results, verification_pb2.CHECK_RECEIVING_BANK
    )


def test_receiving_bank_not_reported_is_uncheckable() -> None:
    tx = transaction()
    tx.receiving_bank = ""

    result = only(
        evaluate(verification_pb2.Expectations(receiving_bank="004"), tx),
        verification_pb2.CHECK_RECEIVING_BANK,
    )

    assert UNCHECKABLE == result.outcome


def window(
    not_before: datetime | None = None, not_after: datetime | None = None
) -> verification_pb2.Expectations:
    expect = verification_pb2.Expectations()
    if not_before is not None:
        expect.not_before.CopyFrom(to_timestamp(not_before))
    if not_after is not None:
        expect.not_after.CopyFrom(to_timestamp(not_after))
    return expect


def test_time_window_bounds_are_inclusive() -> None:
    result = only(
        evaluate(window(TRANS_TIME, TRANS_TIME), transaction()),
        verification_pb2.CHECK_TIME_WINDOW,
    )

    assert (
        check(
            verification_pb2.CHECK_TIME_WINDOW,
            PASS,
            ">= 2026-11-27T14:05:00+07:00, <= 2026-11-27T14:05:00+07:00",
            "2026-11-27T14:05:00+07:00",
        )
        == result
    )


@pytest.mark.parametrize(
    "expect",
    [
        window(not_before=TRANS_TIME + timedelta(seconds=1)),
        window(not_after=TRANS_TIME - timedelta(seconds=1)),
    ],
    ids=["before-not-before", "after-not-after"],
)
def test_time_outside_the_window_fails(expect: verification_pb2.Expectations) -> None:
    result = only(evaluate(expect, transaction()), verification_pb2.CHECK_TIME_WINDOW)

    assert FAIL == result.outcome


def test_time_window_up_to_the_last_valid_instant_is_accepted() -> None:
    # 9999-12-31T23:59:59Z is a valid Timestamp, though on Bangkok's clock it is year 10000.
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

    expect = window(TRANS_TIME, last)
    validate_expectations(expect)  # raises ServiceError when refused
    result = only(evaluate(expect, transaction()), verification_pb2.CHECK_TIME_WINDOW)

    assert PASS == result.outcome
    assert result.expected.endswith("<= 9999-12-31T23:59:59+00:00")


def test_time_window_shows_times_on_a_bangkok_clock() -> None:
    start = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)

    result = only(
        evaluate(window(not_before=start), transaction()), verification_pb2.CHECK_TIME_WINDOW
    )

    assert ">= 2026-11-27T07:00:00+07:00" == result.expected


def test_time_window_without_a_reported_time_is_uncheckable() -> None:
    tx = transaction()
    tx.ClearField("trans_time")

    result = only(evaluate(window(not_before=TRANS_TIME), tx), verification_pb2.CHECK_TIME_WINDOW)

    assert UNCHECKABLE == result.outcome


@pytest.mark.parametrize(
    ("status", "outcome", "observed"),
    [
        (common_pb2.TRANSACTION_STATUS_COMPLETED, PASS, "COMPLETED"),
        (common_pb2.TRANSACTION_STATUS_REVERSED, FAIL, "REVERSED"),
        (common_pb2.TRANSACTION_STATUS_UNSPECIFIED, UNCHECKABLE, "UNSPECIFIED"),
    ],
)
def test_status_passes_only_for_a_completed_transfer(
    status: common_pb2.TransactionStatus.ValueType,
    outcome: verification_pb2.CheckOutcome.ValueType,
    observed: str,
) -> None:
    results = evaluate(None, transaction(status=status))

    assert [check(verification_pb2.CHECK_STATUS, outcome, "COMPLETED", observed)] == results


def test_reversed_transfer_is_a_mismatch() -> None:
    results = evaluate(None, transaction(status=common_pb2.TRANSACTION_STATUS_REVERSED))

    assert verification_pb2.VERDICT_MISMATCH == verdict(results, previous_uses_in_scope=0)


# --- which results, in which order ------------------------------------------


def test_results_follow_the_check_order_and_end_with_status() -> None:
    expect = window(not_before=TRANS_TIME)
    expect.receiving_bank = "004"
    expect.receivers.append(by_account("1234522950"))
    expect.amount.equals_satang = 15000

    results = evaluate(expect, transaction())

    assert [
        verification_pb2.CHECK_AMOUNT,
        verification_pb2.CHECK_RECEIVER,
        verification_pb2.CHECK_RECEIVING_BANK,
        verification_pb2.CHECK_TIME_WINDOW,
        verification_pb2.CHECK_STATUS,
    ] == [result.check for result in results]


@pytest.mark.parametrize(
    "expect",
    [
        None,
        verification_pb2.Expectations(),
        verification_pb2.Expectations(amount=verification_pb2.AmountExpectation()),
    ],
    ids=["none", "empty", "amount-without-bounds"],
)
def test_without_expectations_only_status_is_checked(
    expect: verification_pb2.Expectations | None,
) -> None:
    results = evaluate(expect, transaction())

    assert [verification_pb2.CHECK_STATUS] == [result.check for result in results]


def test_only_set_expectations_produce_results() -> None:
    expect = verification_pb2.Expectations(receiving_bank="004")
    expect.not_after.CopyFrom(to_timestamp(TRANS_TIME))

    results = evaluate(expect, transaction())

    assert [
        verification_pb2.CHECK_RECEIVING_BANK,
        verification_pb2.CHECK_TIME_WINDOW,
        verification_pb2.CHECK_STATUS,
    ] == [result.check for result in results]


# --- no personal data in results --------------------------------------------


PLAIN_VALUES = ("1234522950", "0812345678", "1234567890123", "somchai@example.com")


@pytest.mark.parametrize(
    "party",
    [
        receiver_party(proxy=msisdn("xxx-xxx-5678")),
        receiver_party(account="xxx-x-x9999-x", proxy=msisdn("xxx-xxx-0000")),
        receiver_party(account=None, proxy=common_pb2.Proxy(type=NATID, value="x-xxxx-xxxx0-12-3")),
        receiver_party(
            account=None, proxy=common_pb2.Proxy(type=EMAIL, value="sxxxxxx@example.com")
        ),
        receiver_party(account=None),
    ],
    ids=["matching", "other", "natid", "email", "nothing-shown"],
)
def test_results_never_carry_the_callers_plain_receiver_values(
    party: common_pb2.Party,
) -> None:
    expect = verification_pb2.Expectations(
        receivers=[
            by_account("123-4-52295-0"),
            by_proxy(MSISDN, "+66812345678"),
            by_proxy(NATID, "1-2345-67890-12-3"),
            by_proxy(EMAIL, "somchai@example.com"),
        ]
    )

    results = evaluate(expect, transaction(receiver=party))

    texts = [text for result in results for text in (result.expected, result.observed)]
    assert [] == [(plain, text) for plain in PLAIN_VALUES for text in texts if plain in text]


# --- verdict ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "previous_uses", "expected"),
    [
        ([FAIL, UNCHECKABLE, PASS], 3, verification_pb2.VERDICT_MISMATCH),
        ([UNCHECKABLE, PASS], 1, verification_pb2.VERDICT_DUPLICATE),
        ([UNCHECKABLE, PASS], 0, verification_pb2.VERDICT_INCONCLUSIVE),
        ([PASS, PASS], 0, verification_pb2.VERDICT_VALID),
    ],
    ids=["mismatch-over-duplicate", "duplicate-over-inconclusive", "inconclusive", "valid"],
)
def test_verdict_precedence(
    outcomes: list[verification_pb2.CheckOutcome.ValueType],
    previous_uses: int,
    expected: verification_pb2.Verdict.ValueType,
) -> None:
    checks = [verification_pb2.CheckResult(outcome=outcome) for outcome in outcomes]

    assert expected == verdict(checks, previous_uses_in_scope=previous_uses)


# --- validate_expectations --------------------------------------------------


def amount(**bounds: int) -> verification_pb2.Expectations:
    return verification_pb2.Expectations(amount=verification_pb2.AmountExpectation(**bounds))


@pytest.mark.parametrize(
    ("expect", "field"),
    [
        (amount(equals_satang=-1), "expect.amount.equals_satang"),
        (amount(at_least_satang=-1), "expect.amount.at_least_satang"),
        (amount(at_most_satang=-1), "expect.amount.at_most_satang"),
        (amount(at_least_satang=200, at_most_satang=100), "expect.amount"),
        (amount(equals_satang=50, at_least_satang=100), "expect.amount"),
        (amount(equals_satang=150, at_most_satang=100), "expect.amount"),
        (
            verification_pb2.Expectations(
                receivers=[by_account("1234522950")] * (MAX_RECEIVERS + 1)
            ),
            "expect.receivers",
        ),
        (
            verification_pb2.Expectations(
                receivers=[by_account("1234522950"), verification_pb2.ReceiverExpectation()]
            ),
            "expect.receivers[1]",
        ),
        (verification_pb2.Expectations(receivers=[by_account("")]), "expect.receivers[0].account"),
        (
            verification_pb2.Expectations(receivers=[by_account("1" * 21)]),
            "expect.receivers[0].account",
        ),
        (
            verification_pb2.Expectations(receivers=[by_account("12345A")]),
            "expect.receivers[0].account",
        ),
        (
            verification_pb2.Expectations(
                receivers=[by_proxy(common_pb2.PROXY_TYPE_UNSPECIFIED, "0812345678")]
            ),
            "expect.receivers[0].proxy",
        ),
        (
            verification_pb2.Expectations(receivers=[by_proxy(MSISDN, "")]),
            "expect.receivers[0].proxy",
        ),
        (
            verification_pb2.Expectations(receivers=[by_proxy(EMAIL, "a" * 101)]),
            "expect.receivers[0].proxy",
        ),
        (verification_pb2.Expectations(receiving_bank="04"), "expect.receiving_bank"),
        (verification_pb2.Expectations(receiving_bank="๐๐๔"), "expect.receiving_bank"),
        (window(TRANS_TIME, TRANS_TIME - timedelta(seconds=1)), "expect"),
    ],
    ids=[
        "negative-equals",
        "negative-at-least",
        "negative-at-most",
        "at-least-above-at-most",
        "equals-below-at-least",
        "equals-above-at-most",
        "too-many-receivers",
        "receiver-without-account-or-proxy",
        "empty-account",
        "account-too-long",
        "account-not-digits",
        "proxy-type-unspecified",
        "proxy-empty",
        "proxy-too-long",
        "bank-not-three-digits",
        "bank-thai-digits",
        "window-reversed",
    ],
)
def test_invalid_expectations_are_an_invalid_request_naming_the_field(
    expect: verification_pb2.Expectations, field: str
) -> None:
    assert (Reason.INVALID_REQUEST, field, [field]) == invalid_fields(expect)


def test_every_invalid_field_is_a_violation() -> None:
    expect = amount(at_least_satang=-1)
    expect.receiving_bank = "4"

    assert (
        Reason.INVALID_REQUEST,
        "expect.amount.at_least_satang",
        ["expect.amount.at_least_satang", "expect.receiving_bank"],
    ) == invalid_fields(expect)


def test_invalid_request_does_not_repeat_the_callers_value() -> None:
    account = "123456789012345678901"

    with pytest.raises(ServiceError) as caught:
        validate_expectations(verification_pb2.Expectations(receivers=[by_account(account)]))

    assert account not in caught.value.message


def test_sensible_expectations_are_accepted() -> None:
    expect = window(TRANS_TIME, TRANS_TIME)
    expect.amount.CopyFrom(
        verification_pb2.AmountExpectation(
            equals_satang=15000, at_least_satang=15000, at_most_satang=15000
        )
    )
    expect.receivers.extend(
        [by_account("123-4-52295-0"), by_proxy(EMAIL, "somchai@example.com")] * (MAX_RECEIVERS // 2)
    )
    expect.receiving_bank = "004"

    validate_expectations(expect)  # raises nothing
