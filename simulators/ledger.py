"""A simulated bank's ledger: unmasked transaction records behind one store interface."""

from __future__ import annotations

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


class LedgerStore(Protocol):
    """What a simulated bank needs from its storage; one class per backend."""

    def add_transaction(self, tx: LedgerTransaction) -> None:
        """Record a transaction; a duplicate trans_ref raises ValueError."""

    def get_transaction(self, trans_ref: str) -> LedgerTransaction | None:
        """The transaction with this reference, or None."""

    def count_transactions(self) -> int:
        """How many transactions the ledger holds."""

    def recent_transactions(self, limit: int) -> list[LedgerTransaction]:
        """The newest transactions first, at most `limit`."""


class MemoryLedger:
    """A ledger in a dict: for the walking skeleton and tests."""

    def __init__(self) -> None:
        self._by_ref: dict[str, LedgerTransaction] = {}

    def add_transaction(self, tx: LedgerTransaction) -> None:
        if tx.trans_ref in self._by_ref:
            raise ValueError(f"duplicate transRef {tx.trans_ref}")
        self._by_ref[tx.trans_ref] = tx

    def get_transaction(self, trans_ref: str) -> LedgerTransaction | None:
        return self._by_ref.get(trans_ref)

    def count_transactions(self) -> int:
        return len(self._by_ref)

    def recent_transactions(self, limit: int) -> list[LedgerTransaction]:
        newest = sorted(self._by_ref.values(), key=lambda t: t.trans_time, reverse=True)
        return newest[:limit]
