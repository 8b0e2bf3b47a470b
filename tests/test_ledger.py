"""The LedgerStore contract, written once and run against every backend (memory and file SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from txverify import miniqr
from txverify.errors import Reason, ServiceError
from txverify.runtime.storage import to_micros
from txverify.simulators.ledger import (
    AccountRecord,
    LedgerStore,
    LedgerTransaction,
    PartyRecord,
    ProxyKind,
    ProxyRecord,
    StoredSlip,
    TxStatus,
)
from txverify.simulators.ledger_stores import open_ledger
from txverify.simulators.sqlite_ledger import SqliteLedger
from txverify.units import BANGKOK

BANK = "014"
OTHER_BANK = "004"
# A Bangkok wall-clock time with microseconds, so that "exactly" means exactly.
T0 = datetime(2026, 8, 1, 9, 15, 30, 123_456, tzinfo=BANGKOK)
ALICE = "1000000001"
BOB = "1000000002"
CAROL = "1000000003"


def _file_url(directory: Path) -> str:
    # tmp_path is absolute, so this is the three-slash form sqlite:///abs/path/bank.sqlite.
    return f"sqlite://{directory / 'bank.sqlite'}"


@pytest.fixture(params=["memory", "file"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "sqlite://" if request.param == "memory" else _file_url(tmp_path)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[LedgerStore]:
    store = open_ledger(ledger_url)
    try:
        yield store
    finally:
        store.close()


def account(
    number: str,
    balance: int = 1_000_000,
    *,
    opened_at: datetime = T0 - timedelta(days=30),
    proxies: tuple[ProxyRecord, ...] = (),
) -> AccountRecord:
    return AccountRecord(number, "สมชาย ใจดี", "SOMCHAI JAIDEE", balance, opened_at, proxies)


def transaction(
    ref: str,
    *,
    amount: int = 10_000,
    fee: int = 0,
    when: datetime = T0,
    debit: str = ALICE,
    credit: str | None = None,
) -> LedgerTransaction:
    sender = PartyRecord("สมชาย ใจดี", "SOMCHAI JAIDEE", BANK, debit, ProxyKind.MSISDN, "0811111111")
    if credit is None:
        receiver = PartyRecord(
            "สุดา รักไทย", "SUDA RAKTHAI", OTHER_BANK, "", ProxyKind.MSISDN, "0898765432"
        )
    else:
        receiver = PartyRecord("วิภา แสงทอง", "WIPA SAENGTHONG", BANK, credit)
    return LedgerTransaction(
        trans_ref=ref,
        sending_bank=BANK,
        receiving_bank=receiver.bank,
        trans_time=when,
        sender=sender,
        receiver=receiver,
        amount=amount,
        fee=fee,
    )


def record(
    store: LedgerStore, tx: LedgerTransaction, *, debit: str = ALICE, credit: str | None = None
) -> int:
    return store.record_transfer(tx, miniqr.build(BANK, tx.trans_ref), debit=debit, credit=credit)


def balance_of(store: LedgerStore, number: str) -> int:
    found = store.get_account(number)
    assert found is not None
    return found.balance


# accounts ---------------------------------------------------------------------


def test_opened_account_reads_back_as_the_same_record(ledger: LedgerStore) -> None:
    opened = account(
        ALICE,
        proxies=(
            ProxyRecord(ProxyKind.MSISDN, "0811111111"),
            ProxyRecord(ProxyKind.NATID, "1101700230705"),
        ),
    )
    ledger.open_account(opened)

    found = ledger.get_account(ALICE)

    assert opened == found


def test_opened_at_reads_back_timezone_aware_and_equal(ledger: LedgerStore) -> None:
    opened_at = datetime(2025, 12, 31, 23, 59, 59, 999_999, tzinfo=BANGKOK)
    ledger.open_account(account(ALICE, opened_at=opened_at))

    found = ledger.get_account(ALICE)

    assert found is not None
    assert found.opened_at.tzinfo is not None
    assert opened_at == found.opened_at


def test_get_account_keeps_proxies_in_registration_order(ledger: LedgerStore) -> None:
    proxies = (
        ProxyRecord(ProxyKind.NATID, "1101700230705"),
        ProxyRecord(ProxyKind.MSISDN, "0811111111"),
    )
    ledger.open_account(account(ALICE, proxies=proxies))

    found = ledger.get_account(ALICE)

    assert found is not None
    assert proxies == found.proxies


def test_get_account_of_unknown_number_is_none(ledger: LedgerStore) -> None:
    assert ledger.get_account(ALICE) is None


def test_account_by_proxy_finds_the_account_it_is_registered_to(ledger: LedgerStore) -> None:
    proxy = ProxyRecord(ProxyKind.MSISDN, "0811111111")
    opened = account(ALICE, proxies=(proxy,))
    ledger.open_account(opened)
    ledger.open_account(account(BOB, proxies=(ProxyRecord(ProxyKind.MSISDN, "0822222222"),)))

    found = ledger.account_by_proxy(proxy)

    assert opened == found


def test_account_by_unregistered_proxy_is_none(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE, proxies=(ProxyRecord(ProxyKind.MSISDN, "0811111111"),)))

    found = ledger.account_by_proxy(ProxyRecord(ProxyKind.NATID, "0811111111"))

    assert found is None


def test_taken_account_number_is_account_exists_and_stores_no_proxy(
    ledger: LedgerStore,
) -> None:
    first = account(ALICE, 500, proxies=(ProxyRecord(ProxyKind.MSISDN, "0811111111"),))
    ledger.open_account(first)
    new_proxy = ProxyRecord(ProxyKind.MSISDN, "0822222222")

    with pytest.raises(ServiceError) as caught:
        ledger.open_account(account(ALICE, 9_999, proxies=(new_proxy,)))

    assert Reason.ACCOUNT_EXISTS == caught.value.reason
    assert ledger.account_by_proxy(new_proxy) is None
    assert first == ledger.get_account(ALICE)
    assert 1 == ledger.count_accounts()


def test_taken_proxy_is_account_exists_and_stores_nothing_of_the_failed_account(
    ledger: LedgerStore,
) -> None:
    taken = ProxyRecord(ProxyKind.MSISDN, "0811111111")
    first = account(ALICE, proxies=(taken,))
    ledger.open_account(first)
    fresh = ProxyRecord(ProxyKind.EMAIL, "bob@example.com")

    with pytest.raises(ServiceError) as caught:
        ledger.open_account(account(BOB, proxies=(fresh, taken)))

    assert Reason.ACCOUNT_EXISTS == caught.value.reason
    assert ledger.get_account(BOB) is None
    assert ledger.account_by_proxy(fresh) is None
    assert first == ledger.account_by_proxy(taken)
    assert 1 == ledger.count_accounts()


def test_first_account_with_picks_the_oldest_account_that_can_pay(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE, 999, opened_at=T0 - timedelta(days=3)))
    ledger.open_account(account(CAROL, 5_000, opened_at=T0 - timedelta(days=1)))
    ledger.open_account(account(BOB, 1_000, opened_at=T0 - timedelta(days=2)))

    found = ledger.first_account_with(1_000)

    assert found is not None
    assert BOB == found.account_number


def test_first_account_with_is_none_when_no_account_can_pay(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE, 999))
    ledger.open_account(account(BOB, 500))

    assert ledger.first_account_with(1_000) is None


# transfers --------------------------------------------------------------------


def test_record_transfer_debits_amount_plus_fee_and_returns_the_new_balance(
    ledger: LedgerStore,
) -> None:
    ledger.open_account(account(ALICE, 100_000))

    returned = record(ledger, transaction("REF1", amount=30_000, fee=500))

    assert 69_500 == returned
    assert 69_500 == balance_of(ledger, ALICE)


def test_record_transfer_credits_the_amount_to_a_local_receiver(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE, 100_000))
    ledger.open_account(account(BOB, 1_000))

    record(ledger, transaction("REF1", amount=30_000, fee=500, credit=BOB), credit=BOB)

    assert 31_000 == balance_of(ledger, BOB)


def test_record_transfer_to_the_same_account_returns_the_stored_balance(
    ledger: LedgerStore,
) -> None:
    ledger.open_account(account(ALICE, 100_000))

    returned = record(
        ledger, transaction("REF1", amount=30_000, fee=500, credit=ALICE), credit=ALICE
    )

    assert balance_of(ledger, ALICE) == returned


def test_recorded_transaction_reads_back_field_by_field(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE))
    tx = LedgerTransaction(
        trans_ref="2026080101412345abcdeXYZ9",
        sending_bank=BANK,
        receiving_bank=OTHER_BANK,
        trans_time=T0,
        sender=PartyRecord(
            "สมชาย ใจดี", "SOMCHAI JAIDEE", BANK, ALICE, ProxyKind.NATID, "1101700230705"
        ),
        receiver=PartyRecord(
            "การไฟฟ้า นครหลวง",
            "METROPOLITAN ELECTRICITY",
            OTHER_BANK,
            "",
            ProxyKind.BILLERID,
            "099400016512345",
        ),
        amount=123_456,
        fee=2_500,
        ref1="REF1ABC",
        ref2="REF2",
        ref3="R3",
        to_merchant_id="MEA1234567",
    )
    record(ledger, tx)

    found = ledger.get_transaction(tx.trans_ref)

    assert found is not None
    assert asdict(tx) == asdict(found)
    assert to_micros(tx.trans_time) == to_micros(found.trans_time)
    assert found.trans_time.tzinfo is not None


def test_get_transaction_of_unknown_ref_is_none(ledger: LedgerStore) -> None:
    assert ledger.get_transaction("NOSUCHREF") is None


def test_recorded_transfer_is_listed_with_its_slip_qr_text(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE))
    tx = transaction("REF1")
    qr_text = miniqr.build(BANK, tx.trans_ref)
    ledger.record_transfer(tx, qr_text, debit=ALICE, credit=None)

    slips = ledger.list_slips(10, None)

    assert [StoredSlip(tx, qr_text)] == slips


def test_insufficient_funds_leaves_balances_and_transactions_unchanged(
    ledger: LedgerStore,
) -> None:
    ledger.open_account(account(ALICE, 10_000))
    ledger.open_account(account(BOB, 1_000))

    with pytest.raises(ServiceError) as caught:
        record(ledger, transaction("REF1", amount=9_600, fee=500, credit=BOB), credit=BOB)

    assert Reason.INSUFFICIENT_FUNDS == caught.value.reason
    assert (10_000, 1_000) == (balance_of(ledger, ALICE), balance_of(ledger, BOB))
    assert 0 == ledger.count_transactions()
    assert ledger.get_transaction("REF1") is None
    assert [] == ledger.list_slips(10, None)


def test_record_transfer_from_unknown_account_is_unknown_account(ledger: LedgerStore) -> None:
    with pytest.raises(ServiceError) as caught:
        record(ledger, transaction("REF1"))

    assert Reason.UNKNOWN_ACCOUNT == caught.value.reason
    assert 0 == ledger.count_transactions()


def test_duplicate_trans_ref_is_value_error_and_moves_no_money(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE, 100_000))
    ledger.open_account(account(BOB, 0))
    record(ledger, transaction("REF1", amount=10_000, credit=BOB), credit=BOB)

    with pytest.raises(ValueError, match="duplicate"):
        record(ledger, transaction("REF1", amount=20_000, fee=100, credit=BOB), credit=BOB)

    assert (90_000, 10_000) == (balance_of(ledger, ALICE), balance_of(ledger, BOB))
    assert 1 == ledger.count_transactions()


def test_add_history_stores_transactions_without_moving_money(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE, 100_000))
    slips = [StoredSlip(transaction(f"OLD{i}"), miniqr.build(BANK, f"OLD{i}")) for i in range(3)]

    ledger.add_history(slips)

    assert 100_000 == balance_of(ledger, ALICE)
    assert sorted(slips, key=lambda s: s.transaction.trans_ref, reverse=True) == ledger.list_slips(
        10, None
    )


# reversals --------------------------------------------------------------------


def test_reverse_marks_the_transaction_reversed(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE))
    record(ledger, transaction("REF1"))

    reversed_tx = ledger.reverse("REF1")

    assert TxStatus.REVERSED == reversed_tx.status
    assert reversed_tx == ledger.get_transaction("REF1")


def test_reverse_refunds_amount_plus_fee_to_the_sender(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE, 100_000))
    record(ledger, transaction("REF1", amount=30_000, fee=500))

    ledger.reverse("REF1")

    assert 100_000 == balance_of(ledger, ALICE)


def test_reverse_takes_the_amount_back_from_a_local_receiver(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE, 100_000))
    ledger.open_account(account(BOB, 1_000))
    record(ledger, transaction("REF1", amount=30_000, fee=500, credit=BOB), credit=BOB)

    ledger.reverse("REF1")

    assert 1_000 == balance_of(ledger, BOB)


def test_reverse_when_the_local_receiver_spent_the_money_is_insufficient_funds(
    ledger: LedgerStore,
) -> None:
    ledger.open_account(account(ALICE, 100_000))
    ledger.open_account(account(BOB, 0))
    record(ledger, transaction("REF1", amount=30_000, credit=BOB), credit=BOB)
    record(ledger, transaction("REF2", amount=20_000, debit=BOB), debit=BOB)

    with pytest.raises(ServiceError) as caught:
        ledger.reverse("REF1")

    assert Reason.INSUFFICIENT_FUNDS == caught.value.reason
    assert (70_000, 10_000) == (balance_of(ledger, ALICE), balance_of(ledger, BOB))
    found = ledger.get_transaction("REF1")
    assert found is not None
    assert TxStatus.COMPLETED == found.status


def test_reversing_twice_is_already_reversed_and_refunds_once(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE, 100_000))
    record(ledger, transaction("REF1", amount=30_000, fee=500))
    ledger.reverse("REF1")

    with pytest.raises(ServiceError) as caught:
        ledger.reverse("REF1")

    assert Reason.ALREADY_REVERSED == caught.value.reason
    assert 100_000 == balance_of(ledger, ALICE)


def test_reversing_an_unknown_ref_is_slip_not_found(ledger: LedgerStore) -> None:
    with pytest.raises(ServiceError) as caught:
        ledger.reverse("NOSUCHREF")

    assert Reason.SLIP_NOT_FOUND == caught.value.reason


# listing and counting -----------------------------------------------------------


def test_list_slips_orders_newest_first_and_ties_by_trans_ref_descending(
    ledger: LedgerStore,
) -> None:
    ledger.open_account(account(ALICE))
    for ref, when in [
        ("B", T0),
        ("D", T0 - timedelta(microseconds=1)),
        ("A", T0),
        ("C", T0 + timedelta(seconds=1)),
        ("E", T0 - timedelta(days=1)),
    ]:
        record(ledger, transaction(ref, amount=100, when=when))

    refs = [slip.transaction.trans_ref for slip in ledger.list_slips(10, None)]

    assert ["C", "B", "A", "D", "E"] == refs


def test_list_slips_pages_with_the_cursor_without_gaps_or_repeats(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE))
    # Seven distinct times, three transactions at each: many ties fall on page borders.
    expected = sorted(
        ((T0 + timedelta(seconds=i // 3), f"R{i:02d}") for i in range(21)),
        key=lambda pair: (pair[0], pair[1]),
        reverse=True,
    )
    for when, ref in expected:
        record(ledger, transaction(ref, amount=100, when=when))
    seen: list[tuple[datetime, str]] = []
    before: tuple[int, str] | None = None

    while page := ledger.list_slips(4, before):
        seen.extend((s.transaction.trans_time, s.transaction.trans_ref) for s in page)
        last = page[-1].transaction
        before = (to_micros(last.trans_time), last.trans_ref)

    assert expected == seen


def test_counts_accounts_and_transactions(ledger: LedgerStore) -> None:
    ledger.open_account(account(ALICE))
    ledger.open_account(account(BOB))
    ledger.open_account(account(CAROL))
    record(ledger, transaction("REF1"))
    record(ledger, transaction("REF2"))

    assert (3, 2) == (ledger.count_accounts(), ledger.count_transactions())


def test_empty_ledger_counts_nothing(ledger: LedgerStore) -> None:
    assert (0, 0) == (ledger.count_accounts(), ledger.count_transactions())


# file backend only --------------------------------------------------------------


@pytest.fixture
def file_ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = open_ledger(_file_url(tmp_path))
    assert isinstance(store, SqliteLedger)
    try:
        yield store
    finally:
        store.close()


def test_file_ledger_data_survives_closing_and_reopening(tmp_path: Path) -> None:
    url = _file_url(tmp_path)
    first = open_ledger(url)
    first.open_account(account(ALICE, 100_000))
    first.open_account(account(BOB, 0))
    tx = transaction("REF1", amount=30_000, fee=500, credit=BOB)
    record(first, tx, credit=BOB)
    first.close()

    second = open_ledger(url)
    try:
        balances = (balance_of(second, ALICE), balance_of(second, BOB))
        found = second.get_transaction("REF1")
        counts = (second.count_accounts(), second.count_transactions())
    finally:
        second.close()

    assert (69_500, 30_000) == balances
    assert tx == found
    assert (2, 1) == counts


def test_file_ledger_is_in_wal_mode(file_ledger: SqliteLedger) -> None:
    mode = file_ledger.db.execute("PRAGMA journal_mode").fetchone()[0]

    assert "wal" == mode


def test_file_ledger_enforces_foreign_keys(file_ledger: SqliteLedger) -> None:
    enabled = file_ledger._conn.execute("PRAGMA foreign_keys").fetchone()[0]

    assert 1 == enabled
