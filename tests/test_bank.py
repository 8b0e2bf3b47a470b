"""The simulated bank's domain rules (transfers, inquiries, retention, seeding) on a moved clock."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from txverify import miniqr
from txverify.errors import Reason, ServiceError
from txverify.simulators import profiles
from txverify.simulators.bank import MAX_AMOUNT, Bank, SlipVisibility, TransferOrder, TransferResult
from txverify.simulators.ledger import (
    AccountRecord,
    LedgerStore,
    ProxyKind,
    ProxyRecord,
    TxStatus,
)
from txverify.simulators.ledger_stores import open_ledger
from txverify.simulators.proxies import natid_check_digit
from txverify.simulators.seed import seed_ledger
from txverify.units import BANGKOK, bangkok

# 2026-08-01 23:30 in Bangkok: late on a Bangkok day that is still 1 Aug in UTC too.
NOW = datetime(2026, 8, 1, 16, 30, tzinfo=UTC)
BANK_CODE = "014"
PAYER = "1234567890"
PAYEE = "2345678901"
MSISDN = "0812345678"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


BankFactory = Callable[..., Bank]


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def make_bank(clock: Clock) -> Iterator[BankFactory]:
    ledgers: list[LedgerStore] = []

    def make(code: str = BANK_CODE, **options: Any) -> Bank:
        ledger = open_ledger("sqlite://")
        ledgers.append(ledger)
        return Bank(profiles.profile(code), ledger, clock=clock, rng=random.Random(1), **options)

    yield make
    for ledger in ledgers:
        ledger.close()


@pytest.fixture
def bank(make_bank: BankFactory) -> Bank:
    return make_bank()


def open_payer(bank: Bank, balance: int = 1_000_000, number: str = PAYER) -> AccountRecord:
    return bank.open_account(
        name_th="สมชาย ใจดี",
        name_en="Somchai Jaidee",
        initial_balance=balance,
        proxies=((ProxyKind.MSISDN, MSISDN),),
        account_number=number,
    )


def open_payee(bank: Bank, balance: int = 0) -> AccountRecord:
    return bank.open_account(
        name_th="วิภา แสงทอง",
        name_en="Wipa Saengthong",
        initial_balance=balance,
        proxies=((ProxyKind.EMAIL, "wipa@example.com"),),
        account_number=PAYEE,
    )


def to_other_bank(amount: int = 15_000, fee: int = 500, **fields: Any) -> TransferOrder:
    return TransferOrder(
        from_account=PAYER,
        to_bank="011",  # TTB: not one of the banks under test, so always another bank
        to_proxy=ProxyRecord(ProxyKind.MSISDN, "0898765432"),
        amount=amount,
        fee=fee,
        **fields,
    )


def balance_of(bank: Bank, number: str) -> int:
    found = bank.ledger.get_account(number)
    assert found is not None
    return found.balance


NATID_FIRST12 = "110170023070"
NATID_CHECK = natid_check_digit(NATID_FIRST12)


# transfers --------------------------------------------------------------------


def test_transfer_to_proxy_at_other_bank_stores_parties_amounts_fee_and_time(
    bank: Bank,
) -> None:
    open_payer(bank)

    result = bank.transfer(to_other_bank(amount=15_000, fee=500))

    stored = bank.ledger.get_transaction(result.transaction.trans_ref)
    assert stored is not None
    assert result.transaction == stored
    assert (BANK_CODE, "011") == (stored.sending_bank, stored.receiving_bank)
    assert (15_000, 500) == (stored.amount, stored.fee)
    assert NOW == stored.trans_time
    assert (BANK_CODE, PAYER, "สมชาย ใจดี", "SOMCHAI JAIDEE") == (
        stored.sender.bank,
        stored.sender.account,
        stored.sender.name_th,
        stored.sender.name_en,
    )
    assert (ProxyKind.MSISDN, MSISDN) == (stored.sender.proxy_kind, stored.sender.proxy_value)
    assert ("011", "", ProxyKind.MSISDN, "0898765432") == (
        stored.receiver.bank,
        stored.receiver.account,
        stored.receiver.proxy_kind,
        stored.receiver.proxy_value,
    )
    assert TxStatus.COMPLETED == stored.status


def test_transfer_qr_text_parses_to_bank_and_trans_ref(bank: Bank) -> None:
    open_payer(bank)

    result = bank.transfer(to_other_bank())

    slip = miniqr.parse(result.qr_text)
    assert (BANK_CODE, result.transaction.trans_ref) == (slip.sending_bank, slip.trans_ref)


def test_transfer_debits_amount_plus_fee_from_the_sender(bank: Bank) -> None:
    open_payer(bank, balance=100_000)

    result = bank.transfer(to_other_bank(amount=15_000, fee=500))

    assert 84_500 == result.balance
    assert 84_500 == balance_of(bank, PAYER)


def test_transfer_to_an_account_at_the_same_bank_credits_it(bank: Bank) -> None:
    open_payer(bank, balance=100_000)
    open_payee(bank, balance=1_000)

    bank.transfer(TransferOrder(from_account=PAYER, to_account=PAYEE, amount=20_000, fee=300))

    assert (79_700, 21_000) == (balance_of(bank, PAYER), balance_of(bank, PAYEE))


def test_transfer_to_a_proxy_registered_at_the_same_bank_credits_its_account(bank: Bank) -> None:
    open_payer(bank, balance=100_000)
    open_payee(bank, balance=0)
    order = TransferOrder(
        from_account=PAYER, to_proxy=ProxyRecord(ProxyKind.EMAIL, "wipa@example.com"), amount=5_000
    )

    result = bank.transfer(order)

    assert 5_000 == balance_of(bank, PAYEE)
    assert PAYEE == result.transaction.receiver.account


def test_transfer_without_from_account_uses_the_oldest_account_that_can_pay(
    bank: Bank, clock: Clock
) -> None:
    open_payer(bank, balance=1_000, number="1000000001")
    clock.now += timedelta(minutes=1)
    rich = bank.open_account(name_th="สุดา รักไทย", name_en="Suda Rakthai", initial_balance=50_000)
    clock.now += timedelta(minutes=1)
    bank.open_account(name_th="มาลี พงษ์ไพร", name_en="Malee Pongprai", initial_balance=90_000)

    result = bank.transfer(replace(to_other_bank(amount=10_000, fee=0), from_account=""))

    assert rich.account_number == result.transaction.sender.account
    assert 40_000 == balance_of(bank, rich.account_number)


# validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"amount": 0}, "amount_satang", id="amount-zero"),
        pytest.param({"amount": -100}, "amount_satang", id="amount-negative"),
        pytest.param({"amount": MAX_AMOUNT + 1}, "amount_satang", id="amount-over-max"),
        pytest.param({"fee": -1}, "fee_satang", id="fee-negative"),
        pytest.param(
            {"to_proxy": ProxyRecord(ProxyKind.MSISDN, "12345")}, "to_proxy", id="bad-msisdn"
        ),
        pytest.param(
            {"to_proxy": ProxyRecord(ProxyKind.MSISDN, "0912345678901")},
            "to_proxy",
            id="msisdn-too-long",
        ),
        pytest.param(
            {"to_proxy": ProxyRecord(ProxyKind.NATID, NATID_FIRST12 + "X")},
            "to_proxy",
            id="natid-not-digits",
        ),
        pytest.param(
            {"to_proxy": ProxyRecord(ProxyKind.NATID, NATID_FIRST12 + str((NATID_CHECK + 1) % 10))},
            "to_proxy",
            id="natid-wrong-check-digit",
        ),
        pytest.param(
            {"to_proxy": ProxyRecord(ProxyKind.BILLERID, "099400016512345")},
            "ref1",
            id="bill-without-ref1",
        ),
        pytest.param({"to_account": PAYEE}, "to", id="both-account-and-proxy"),
        pytest.param({"to_proxy": None}, "to", id="neither-account-nor-proxy"),
        pytest.param({"to_bank": "04"}, "to_bank", id="to-bank-two-digits"),
        pytest.param({"to_bank": "ABC"}, "to_bank", id="to-bank-letters"),
        pytest.param({"to_bank": "๐๑๔"}, "to_bank", id="to-bank-thai-digits"),
        pytest.param({"ref1": "has space"}, "ref1", id="ref1-not-alphanumeric"),
        pytest.param({"ref1": "BILL1\n"}, "ref1", id="ref1-trailing-newline"),
    ],
)
def test_invalid_transfer_is_invalid_request_naming_the_field(
    bank: Bank, fields: dict[str, Any], field: str
) -> None:
    open_payer(bank, balance=100_000)
    order = replace(to_other_bank(), **fields)

    with pytest.raises(ServiceError) as caught:
        bank.transfer(order)

    assert (Reason.INVALID_REQUEST, field) == (caught.value.reason, caught.value.metadata["field"])
    assert [field] == [v.field for v in caught.value.violations]


def test_invalid_transfer_moves_no_money(bank: Bank) -> None:
    open_payer(bank, balance=100_000)

    with pytest.raises(ServiceError):
        bank.transfer(to_other_bank(amount=0))

    assert 100_000 == balance_of(bank, PAYER)
    assert 0 == bank.ledger.count_transactions()


@pytest.mark.parametrize(
    ("name_th", "name_en", "field"),
    [
        ("สมชาย", "Somchai Jaidee", "name_th"),
        ("สมชาย ใจดี", "Somchai", "name_en"),
        ("สมชาย ใจดี", "   ", "name_en"),
    ],
)
def test_open_account_without_surname_is_invalid_request(
    bank: Bank, name_th: str, name_en: str, field: str
) -> None:
    with pytest.raises(ServiceError) as caught:
        bank.open_account(name_th=name_th, name_en=name_en)

    assert (Reason.INVALID_REQUEST, field) == (caught.value.reason, caught.value.metadata["field"])
    assert 0 == bank.ledger.count_accounts()


def test_transfer_from_unknown_account_is_unknown_account(bank: Bank) -> None:
    open_payer(bank)

    with pytest.raises(ServiceError) as caught:
        bank.transfer(replace(to_other_bank(), from_account="9999999999"))

    assert Reason.UNKNOWN_ACCOUNT == caught.value.reason


def test_transfer_over_the_balance_is_insufficient_funds(bank: Bank) -> None:
    open_payer(bank, balance=15_499)

    with pytest.raises(ServiceError) as caught:
        bank.transfer(to_other_bank(amount=15_000, fee=500))

    assert Reason.INSUFFICIENT_FUNDS == caught.value.reason
    assert 15_499 == balance_of(bank, PAYER)


def test_transfer_without_from_account_when_no_account_can_pay_is_insufficient_funds(
    bank: Bank,
) -> None:
    open_payer(bank, balance=15_499)

    with pytest.raises(ServiceError) as caught:
        bank.transfer(replace(to_other_bank(amount=15_000, fee=500), from_account=""))

    assert Reason.INSUFFICIENT_FUNDS == caught.value.reason


@pytest.mark.parametrize("written", ["+66812345678", "0066812345678", "081-234-5678", "0812345678"])
def test_msisdn_forms_normalise_to_ten_digits(bank: Bank, written: str) -> None:
    opened = bank.open_account(
        name_th="สมชาย ใจดี", name_en="Somchai Jaidee", proxies=((ProxyKind.MSISDN, written),)
    )

    found = bank.ledger.account_by_proxy(ProxyRecord(ProxyKind.MSISDN, "0812345678"))

    assert (ProxyRecord(ProxyKind.MSISDN, "0812345678"),) == opened.proxies
    assert found is not None
    assert opened.account_number == found.account_number


# transRef styles --------------------------------------------------------------

STYLE_CODES = ("002", "004", "006", "014", "025", "900")
TRANSFERS_PER_BANK = 200


@pytest.fixture(scope="module")
def transfers_by_bank() -> Iterator[dict[str, list[TransferResult]]]:
    """200 transfers per member, the clock moving 7 minutes per transfer (past Bangkok midnight)."""
    clock = Clock(NOW)
    ledgers: list[LedgerStore] = []
    made: dict[str, list[TransferResult]] = {}
    for code in STYLE_CODES:
        ledger = open_ledger("sqlite://")
        ledgers.append(ledger)
        bank = Bank(profiles.profile(code), ledger, clock=clock, rng=random.Random(1))
        open_payer(bank, balance=10**9)
        clock.now = NOW
        made[code] = []
        for _ in range(TRANSFERS_PER_BANK):
            made[code].append(bank.transfer(to_other_bank(amount=100, fee=0)))
            clock.now += timedelta(minutes=7)
    yield made
    for ledger in ledgers:
        ledger.close()


def refs_of(transfers: list[TransferResult]) -> list[str]:
    return [t.transaction.trans_ref for t in transfers]


@pytest.mark.parametrize("code", STYLE_CODES)
def test_trans_refs_are_ascii_alphanumeric(
    transfers_by_bank: dict[str, list[TransferResult]], code: str
) -> None:
    bad = [ref for ref in refs_of(transfers_by_bank[code]) if not (ref.isascii() and ref.isalnum())]

    assert [] == bad


@pytest.mark.parametrize("code", STYLE_CODES)
def test_trans_ref_length_is_constant_per_bank(
    transfers_by_bank: dict[str, list[TransferResult]], code: str
) -> None:
    lengths = {len(ref) for ref in refs_of(transfers_by_bank[code])}

    assert 1 == len(lengths)


@pytest.mark.parametrize("code", STYLE_CODES)
def test_trans_refs_are_unique(
    transfers_by_bank: dict[str, list[TransferResult]], code: str
) -> None:
    refs = refs_of(transfers_by_bank[code])

    assert TRANSFERS_PER_BANK == len(set(refs))


def test_trans_ref_lengths_vary_across_banks_within_16_to_25(
    transfers_by_bank: dict[str, list[TransferResult]],
) -> None:
    lengths = {code: len(refs_of(ts)[0]) for code, ts in transfers_by_bank.items()}

    # The shapes real apps print (domain.md: BBL 25 digits, KTB 17-21, SCB and BAY 25),
    # e-wallet ids 16: four distinct lengths for six members.
    assert {"002": 25, "004": 20, "006": 21, "014": 25, "025": 25, "900": 16} == lengths
    assert all(17 <= n <= 25 for code, n in lengths.items() if code != "900")
    assert 4 == len(set(lengths.values()))


@pytest.mark.parametrize("code", STYLE_CODES)
def test_slip_qr_parses_to_its_own_bank_and_trans_ref(
    transfers_by_bank: dict[str, list[TransferResult]], code: str
) -> None:
    transfers = transfers_by_bank[code]

    parsed = [miniqr.parse(t.qr_text) for t in transfers]

    assert [(code, ref) for ref in refs_of(transfers)] == [
        (s.sending_bank, s.trans_ref) for s in parsed
    ]


def test_ewallet_slip_qr_parses_to_an_ewallet_slip_ref(
    transfers_by_bank: dict[str, list[TransferResult]],
) -> None:
    transfers = transfers_by_bank["900"]

    parsed = [miniqr.parse(t.qr_text) for t in transfers]

    assert {(miniqr.SlipLayout.EWALLET, "900", "P2P")} == {
        (s.layout, s.sending_bank, s.event_type) for s in parsed
    }
    assert all(ref.isdigit() for ref in refs_of(transfers))


def test_ewallet_slip_qr_prints_the_bangkok_date_of_the_transfer(
    transfers_by_bank: dict[str, list[TransferResult]],
) -> None:
    transfers = transfers_by_bank["900"]

    printed = [miniqr.parse(t.qr_text).trans_date for t in transfers]

    # The first transfer is at 23:30 Bangkok (16:30 UTC); the sixth at 00:05 on 2 Aug in Bangkok,
    # still 1 Aug in UTC.
    assert [bangkok(t.transaction.trans_time).date() for t in transfers] == printed
    assert (date(2026, 8, 1), date(2026, 8, 2)) == (printed[4], printed[5])


# retention and visibility -------------------------------------------------------


@pytest.mark.parametrize(
    ("retention_days", "last_day"),
    [
        (7, datetime(2026, 8, 8, 23, 59, tzinfo=BANGKOK)),
        (3, datetime(2026, 8, 4, 23, 59, tzinfo=BANGKOK)),
    ],
)
def test_slip_is_found_until_the_end_of_the_last_bangkok_day_of_retention(
    make_bank: BankFactory, clock: Clock, retention_days: int, last_day: datetime
) -> None:
    bank = make_bank(retention_days=retention_days)
    open_payer(bank)
    ref = bank.transfer(to_other_bank()).transaction.trans_ref  # 2026-08-01 23:30 Bangkok
    clock.now = last_day

    found = bank.inquire(BANK_CODE, ref)

    assert ref == found.trans_ref


@pytest.mark.parametrize(
    ("retention_days", "first_expired"),
    [
        (7, datetime(2026, 8, 9, 0, 0, tzinfo=BANGKOK)),
        (3, datetime(2026, 8, 5, 0, 0, tzinfo=BANGKOK)),
    ],
)
def test_slip_is_expired_from_the_next_bangkok_midnight(
    make_bank: BankFactory, clock: Clock, retention_days: int, first_expired: datetime
) -> None:
    bank = make_bank(retention_days=retention_days)
    open_payer(bank)
    ref = bank.transfer(to_other_bank()).transaction.trans_ref  # 2026-08-01 23:30 Bangkok
    clock.now = first_expired

    with pytest.raises(ServiceError) as caught:
        bank.inquire(BANK_CODE, ref)

    assert Reason.SLIP_EXPIRED == caught.value.reason
    assert "8404" == caught.value.code


def test_slip_is_not_found_before_the_visibility_delay(bank: Bank, clock: Clock) -> None:
    bank.visibility_delay = timedelta(seconds=30)
    open_payer(bank)
    ref = bank.transfer(to_other_bank()).transaction.trans_ref
    clock.now += timedelta(seconds=29)

    with pytest.raises(ServiceError) as caught:
        bank.inquire(BANK_CODE, ref)

    assert Reason.SLIP_NOT_FOUND == caught.value.reason


def test_slip_is_found_once_the_visibility_delay_has_passed(bank: Bank, clock: Clock) -> None:
    bank.visibility_delay = timedelta(seconds=30)
    open_payer(bank)
    ref = bank.transfer(to_other_bank()).transaction.trans_ref
    clock.now += timedelta(seconds=30)

    found = bank.inquire(BANK_CODE, ref)

    assert ref == found.trans_ref


def test_reversed_transfer_is_still_found_with_status_reversed(bank: Bank) -> None:
    open_payer(bank)
    ref = bank.transfer(to_other_bank()).transaction.trans_ref
    bank.reverse(ref)

    found = bank.inquire(BANK_CODE, ref)

    assert TxStatus.REVERSED == found.status


def test_inquiry_for_unknown_ref_is_slip_not_found(bank: Bank) -> None:
    with pytest.raises(ServiceError) as caught:
        bank.inquire(BANK_CODE, "20260801014NOSUCHREF12345")

    assert (Reason.SLIP_NOT_FOUND, "8404") == (caught.value.reason, caught.value.code)


def test_inquiry_for_another_banks_code_is_invalid_request_8400(bank: Bank) -> None:
    open_payer(bank)
    ref = bank.transfer(to_other_bank()).transaction.trans_ref

    with pytest.raises(ServiceError) as caught:
        bank.inquire("004", ref)

    assert (Reason.INVALID_REQUEST, "8400") == (caught.value.reason, caught.value.code)


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "ABC-123",
        "A" * 33,
        "ABC 123",
        "๑๒๓๔",
        pytest.param("REF\n"),
    ],
    ids=repr,
)
def test_inquiry_for_malformed_ref_is_invalid_request_8400(bank: Bank, ref: str) -> None:
    with pytest.raises(ServiceError) as caught:
        bank.inquire(BANK_CODE, ref)

    assert (Reason.INVALID_REQUEST, "8400") == (caught.value.reason, caught.value.code)


# seeding ----------------------------------------------------------------------


def seed(bank: Bank) -> None:
    seed_ledger(bank.ledger, bank.profile, transactions=300, seed=5, now=NOW)


def seeded(bank: Bank) -> Bank:
    seed(bank)
    return bank


def test_seeding_twice_with_one_seed_gives_identical_transactions(make_bank: BankFactory) -> None:
    first, second = make_bank(), make_bank()

    seed(first)
    seed(second)

    one, other = first.ledger.list_slips(1_000, None), second.ledger.list_slips(1_000, None)
    assert 300 == len(one)
    assert one == other


def test_about_five_percent_of_seeded_slips_are_expired(make_bank: BankFactory) -> None:
    bank = seeded(make_bank())
    slips = bank.ledger.list_slips(1_000, None)

    expired = [s for s in slips if bank.visibility(s.transaction) is SlipVisibility.EXPIRED]

    assert 0.01 <= len(expired) / len(slips) <= 0.12


@pytest.mark.parametrize("code", ["014", "004", "900"])
def test_every_seeded_slip_qr_parses_to_its_own_bank_and_ref(
    make_bank: BankFactory, code: str
) -> None:
    bank = seeded(make_bank(code))
    slips = bank.ledger.list_slips(1_000, None)

    parsed = [
        (miniqr.parse(s.qr_text).sending_bank, miniqr.parse(s.qr_text).trans_ref) for s in slips
    ]

    assert [(code, s.transaction.trans_ref) for s in slips] == parsed


def test_transfer_to_an_unregistered_proxy_at_the_same_bank_is_unknown_account(
    make_bank: BankFactory,
) -> None:
    bank = make_bank()
    open_payer(bank)

    with pytest.raises(ServiceError) as caught:
        bank.transfer(replace(to_other_bank(), to_bank=BANK_CODE))

    assert (Reason.UNKNOWN_ACCOUNT, "to_proxy") == (
        caught.value.reason,
        caught.value.metadata["field"],
    )
    assert 1_000_000 == balance_of(bank, PAYER)
