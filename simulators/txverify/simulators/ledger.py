"""A simulated bank's ledger: accounts, transactions and slips behind one store interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class ProxyKind(StrEnum):
    """PromptPay proxy types a simulated bank records (domain.md)."""

    MSISDN = "MSISDN"
    NATID = "NATID"
    EWALLETID = "EWALLETID"
    EMAIL = "EMAIL"
    BILLERID = "BILLERID"


class TxStatus(StrEnum):
    """Whether a transaction stands or was reversed."""

    COMPLETED = "COMPLETED"
    REVERSED = "REVERSED"


@dataclass(frozen=True, slots=True)
class ProxyRecord:
    """A PromptPay proxy registered to an account (unmasked)."""

    kind: ProxyKind
    value: str


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """An account at this bank (unmasked); balance in satang."""

    account_number: str
    name_th: str
    name_en: str
    balance: int
    opened_at: datetime
    proxies: tuple[ProxyRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class PartyRecord:
    """One side of a transfer as the bank knows it: unmasked, never sent out as is."""

    name_th: str
    name_en: str
    bank: str
    account: str = ""  # digits only; "" when the bank knows only the proxy
    proxy_kind: ProxyKind | None = None
    proxy_value: str = ""


@dataclass(frozen=True, slots=True)
class LedgerTransaction:
    """A transfer the bank sent, as stored in its ledger (amounts in satang)."""

    trans_ref: str
    sending_bank: str
    receiving_bank: str
    trans_time: datetime  # timezone-aware
    sender: PartyRecord
    receiver: PartyRecord
    amount: int
    fee: int = 0
    ref1: str = ""
    ref2: str = ""
    ref3: str = ""
    to_merchant_id: str = ""
    country_code: str = "TH"
    status: TxStatus = TxStatus.COMPLETED

    def __post_init__(self) -> None:
        if self.trans_time.tzinfo is None:
            raise ValueError("trans_time must be timezone-aware")
        if self.amount <= 0 or self.fee < 0:
            raise ValueError("amount must be positive and fee not negative (satang)")


@dataclass(frozen=True, slots=True)
class StoredSlip:
    """A transaction with the mini QR text of its slip."""

    transaction: LedgerTransaction
    qr_text: str


class LedgerStore(Protocol):
    """What a simulated bank needs from its storage; one class per backend.

    Money moves only inside `record_transfer` and `reverse`, each one atomic.
    Failures are txverify.errors.ServiceError with the reason to report.
    """

    def open_account(self, account: AccountRecord) -> None:
        """Add an account and its proxies (ACCOUNT_EXISTS if the number or a proxy is taken)."""

    def get_account(self, account_number: str) -> AccountRecord | None:
        """The account, or None."""

    def account_by_proxy(self, proxy: ProxyRecord) -> AccountRecord | None:
        """The account a proxy is registered to, or None."""

    def first_account_with(self, min_balance: int) -> AccountRecord | None:
        """The oldest account holding at least `min_balance` satang, or None."""

    def record_transfer(
        self, tx: LedgerTransaction, qr_text: str, *, debit: str, credit: str | None
    ) -> int:
        """Debit amount + fee from `debit`, credit amount to local account `credit` (if any),
        store the transaction and its slip; returns the debited account's new balance.
        INSUFFICIENT_FUNDS when the balance is short; ValueError on a duplicate transRef."""

    def add_history(self, slips: Sequence[StoredSlip]) -> None:
        """Store past transactions (seeding) without moving money."""

    def get_transaction(self, trans_ref: str) -> LedgerTransaction | None:
        """The transaction with this reference, or None."""

    def reverse(self, trans_ref: str) -> LedgerTransaction:
        """Mark REVERSED, refund the sender, take the amount back from a local receiver."""

    def list_slips(self, limit: int, before: tuple[int, str] | None) -> list[StoredSlip]:
        """Slips newest first; `before` = (trans_time µs, trans_ref) of the last one seen."""

    def count_transactions(self) -> int:
        """How many transactions the ledger holds."""

    def count_accounts(self) -> int:
        """How many accounts the ledger holds."""

    def close(self) -> None:
        """Release the storage."""
