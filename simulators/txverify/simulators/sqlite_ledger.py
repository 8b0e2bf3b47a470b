"""The ledger in SQLite (through sqlite-utils): file with WAL, or in memory."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from txverify.errors import Reason, ServiceError
from txverify.runtime.storage import connect_sqlite, from_micros, to_micros, write_transaction
from txverify.simulators.ledger import (
    AccountRecord,
    LedgerTransaction,
    PartyRecord,
    ProxyKind,
    ProxyRecord,
    StoredSlip,
    TxStatus,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account_number TEXT PRIMARY KEY,
    name_th        TEXT NOT NULL,
    name_en        TEXT NOT NULL,
    balance        INTEGER NOT NULL CHECK (balance >= 0),   -- satang
    opened_at      INTEGER NOT NULL                         -- µs since the epoch, UTC
);
CREATE TABLE IF NOT EXISTS proxies (
    type           TEXT NOT NULL,
    value          TEXT NOT NULL,
    account_number TEXT NOT NULL REFERENCES accounts (account_number),
    PRIMARY KEY (type, value)
);
CREATE INDEX IF NOT EXISTS proxies_account ON proxies (account_number);
CREATE TABLE IF NOT EXISTS transactions (
    trans_ref            TEXT PRIMARY KEY,
    sending_bank         TEXT NOT NULL,
    receiving_bank       TEXT NOT NULL,
    trans_time           INTEGER NOT NULL,                  -- µs since the epoch, UTC
    from_account         TEXT REFERENCES accounts (account_number),
    credit_account       TEXT REFERENCES accounts (account_number),
    sender_name_th       TEXT NOT NULL,
    sender_name_en       TEXT NOT NULL,
    sender_account       TEXT NOT NULL,
    sender_proxy_type    TEXT,
    sender_proxy_value   TEXT NOT NULL,
    receiver_name_th     TEXT NOT NULL,
    receiver_name_en     TEXT NOT NULL,
    receiver_account     TEXT NOT NULL,
    receiver_proxy_type  TEXT,
    receiver_proxy_value TEXT NOT NULL,
    amount               INTEGER NOT NULL CHECK (amount > 0),
    fee                  INTEGER NOT NULL CHECK (fee >= 0),
    ref1                 TEXT NOT NULL,
    ref2                 TEXT NOT NULL,
    ref3                 TEXT NOT NULL,
    to_merchant_id       TEXT NOT NULL,
    country_code         TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('COMPLETED', 'REVERSED'))
);
CREATE INDEX IF NOT EXISTS transactions_newest ON transactions (trans_time DESC, trans_ref DESC);
CREATE TABLE IF NOT EXISTS slips (
    trans_ref TEXT PRIMARY KEY REFERENCES transactions (trans_ref),
    qr_text   TEXT NOT NULL
);
"""
_TX_COLUMNS = (
    "trans_ref, sending_bank, receiving_bank, trans_time, sender_name_th, sender_name_en, "
    "sender_account, sender_proxy_type, sender_proxy_value, receiver_name_th, receiver_name_en, "
    "receiver_account, receiver_proxy_type, receiver_proxy_value, amount, fee, ref1, ref2, ref3, "
    "to_merchant_id, country_code, status"
)
_TX_SELECT = f"SELECT {_TX_COLUMNS} FROM transactions"


class SqliteLedger:
    """LedgerStore on one SQLite database (one per bank)."""

    def __init__(self, url: str) -> None:
        self.db = connect_sqlite(url)
        self._conn: sqlite3.Connection = self.db.conn
        self._conn.executescript(SCHEMA)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._conn)

    # accounts -----------------------------------------------------------------

    def open_account(self, account: AccountRecord) -> None:
        try:
            with self._transaction() as conn:
                conn.execute(
                    "INSERT INTO accounts VALUES (?, ?, ?, ?, ?)",
                    (
                        account.account_number,
                        account.name_th,
                        account.name_en,
                        account.balance,
                        to_micros(account.opened_at),
                    ),
                )
                conn.executemany(
                    "INSERT INTO proxies VALUES (?, ?, ?)",
                    [(p.kind.value, p.value, account.account_number) for p in account.proxies],
                )
        except sqlite3.IntegrityError as exc:
            raise ServiceError(
                Reason.ACCOUNT_EXISTS,
                "the account number or one of the proxies is already registered",
            ) from exc

    def _account(self, row: tuple[Any, ...] | None) -> AccountRecord | None:
        if row is None:
            return None
        number = row[0]
        proxies = tuple(
            ProxyRecord(ProxyKind(kind), value)
            for kind, value in self._conn.execute(
                "SELECT type, value FROM proxies WHERE account_number = ? ORDER BY rowid",
                (number,),
            )
        )
        return AccountRecord(number, row[1], row[2], row[3], from_micros(row[4]), proxies)

    def get_account(self, account_number: str) -> AccountRecord | None:
        row = self._conn.execute(
            "SELECT * FROM accounts WHERE account_number = ?", (account_number,)
        ).fetchone()
        return self._account(row)

    def account_by_proxy(self, proxy: ProxyRecord) -> AccountRecord | None:
        row = self._conn.execute(
            "SELECT a.* FROM proxies p JOIN accounts a USING (account_number) "
            "WHERE p.type = ? AND p.value = ?",
            (proxy.kind.value, proxy.value),
        ).fetchone()
        return self._account(row)

    def first_account_with(self, min_balance: int) -> AccountRecord | None:
        row = self._conn.execute(
            "SELECT * FROM accounts WHERE balance >= ? ORDER BY opened_at, account_number LIMIT 1",
            (min_balance,),
        ).fetchone()
        return self._account(row)

    # transactions -------------------------------------------------------------

    def record_transfer(
        self, tx: LedgerTransaction, qr_text: str, *, debit: str, credit: str | None
    ) -> int:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT balance FROM accounts WHERE account_number = ?", (debit,)
            ).fetchone()
            if row is None:
                raise ServiceError(Reason.UNKNOWN_ACCOUNT, f"no account {debit} at this bank")
            balance = int(row[0]) - tx.amount - tx.fee
            if balance < 0:
                raise ServiceError(
                    Reason.INSUFFICIENT_FUNDS,
                    f"account {debit} cannot pay {tx.amount + tx.fee} satang",
                )
            conn.execute(
                "UPDATE accounts SET balance = ? WHERE account_number = ?", (balance, debit)
            )
            if credit is not None:
                conn.execute(
                    "UPDATE accounts SET balance = balance + ? WHERE account_number = ?",
                    (tx.amount, credit),
                )
            self._insert(conn, [StoredSlip(tx, qr_text)], debit=debit, credit=credit)
            if credit == debit:  # paying oneself: only the fee left the account
                balance += tx.amount
        return balance

    def add_history(self, slips: Sequence[StoredSlip]) -> None:
        with self._transaction() as conn:
            self._insert(conn, slips, debit=None, credit=None)

    def _insert(
        self,
        conn: sqlite3.Connection,
        slips: Sequence[StoredSlip],
        *,
        debit: str | None,
        credit: str | None,
    ) -> None:
        try:
            conn.executemany(
                f"INSERT INTO transactions ({_TX_COLUMNS}, from_account, credit_account) "
                f"VALUES ({', '.join('?' * 24)})",
                [(*_tx_row(s.transaction), debit, credit) for s in slips],
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"duplicate transRef or bad reference: {exc}") from exc
        conn.executemany(
            "INSERT INTO slips VALUES (?, ?)", [(s.transaction.trans_ref, s.qr_text) for s in slips]
        )

    def get_transaction(self, trans_ref: str) -> LedgerTransaction | None:
        row = self._conn.execute(f"{_TX_SELECT} WHERE trans_ref = ?", (trans_ref,)).fetchone()
        return None if row is None else _tx_from_row(row)

    def reverse(self, trans_ref: str) -> LedgerTransaction:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status, amount, fee, from_account, credit_account FROM transactions "
                "WHERE trans_ref = ?",
                (trans_ref,),
            ).fetchone()
            if row is None:
                raise ServiceError(Reason.SLIP_NOT_FOUND, f"no transaction {trans_ref}")
            status, amount, fee, debited, credited = row
            if status == TxStatus.REVERSED:
                raise ServiceError(Reason.ALREADY_REVERSED, f"{trans_ref} is already reversed")
            if credited is not None:
                try:
                    conn.execute(
                        "UPDATE accounts SET balance = balance - ? WHERE account_number = ?",
                        (amount, credited),
                    )
                except sqlite3.IntegrityError as exc:  # CHECK (balance >= 0)
                    raise ServiceError(
                        Reason.INSUFFICIENT_FUNDS,
                        f"the receiving account no longer holds {amount} satang",
                    ) from exc
            if debited is not None:
                conn.execute(
                    "UPDATE accounts SET balance = balance + ? WHERE account_number = ?",
                    (amount + fee, debited),
                )
            conn.execute(
                "UPDATE transactions SET status = 'REVERSED' WHERE trans_ref = ?", (trans_ref,)
            )
        reversed_tx = self.get_transaction(trans_ref)
        assert reversed_tx is not None  # updated just above, in this connection
        return reversed_tx

    def list_slips(self, limit: int, before: tuple[int, str] | None) -> list[StoredSlip]:
        where, args = "", tuple[Any, ...]()
        if before is not None:
            where, args = "WHERE (trans_time, trans_ref) < (?, ?)", before
        rows = self._conn.execute(
            f"SELECT {_TX_COLUMNS}, qr_text FROM transactions JOIN slips USING (trans_ref) {where} "
            "ORDER BY trans_time DESC, trans_ref DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [StoredSlip(_tx_from_row(row[:-1]), row[-1]) for row in rows]

    def count_transactions(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM transactions").fetchone()[0])

    def count_accounts(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM accounts").fetchone()[0])

    def close(self) -> None:
        self._conn.close()


def _tx_row(tx: LedgerTransaction) -> tuple[Any, ...]:
    s, r = tx.sender, tx.receiver
    return (
        tx.trans_ref,
        tx.sending_bank,
        tx.receiving_bank,
        to_micros(tx.trans_time),
        s.name_th,
        s.name_en,
        s.account,
        s.proxy_kind.value if s.proxy_kind else None,
        s.proxy_value,
        r.name_th,
        r.name_en,
        r.account,
        r.proxy_kind.value if r.proxy_kind else None,
        r.proxy_value,
        tx.amount,
        tx.fee,
        tx.ref1,
        tx.ref2,
        tx.ref3,
        tx.to_merchant_id,
        tx.country_code,
        tx.status.value,
    )


def _tx_from_row(row: Sequence[Any]) -> LedgerTransaction:
    return LedgerTransaction(
        trans_ref=row[0],
        sending_bank=row[1],
        receiving_bank=row[2],
        trans_time=from_micros(row[3]),
        sender=PartyRecord(
            row[4], row[5], row[1], row[6], ProxyKind(row[7]) if row[7] else None, row[8]
        ),
        receiver=PartyRecord(
            row[9], row[10], row[2], row[11], ProxyKind(row[12]) if row[12] else None, row[13]
        ),
        amount=row[14],
        fee=row[15],
        ref1=row[16],
        ref2=row[17],
        ref3=row[18],
        to_merchant_id=row[19],
        country_code=row[20],
        status=TxStatus(row[21]),
    )
