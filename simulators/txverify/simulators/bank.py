"""A simulated member bank: accounts, transfers that issue slips, reversals, inquiries."""

from __future__ import annotations

import hashlib
import random
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from txverify.banks import is_member_code
from txverify.errors import Reason, ServiceError, invalid_field
from txverify.simulators.ledger import (
    AccountRecord,
    LedgerStore,
    LedgerTransaction,
    PartyRecord,
    ProxyKind,
    ProxyRecord,
    StoredSlip,
)
from txverify.simulators.profiles import Profile
from txverify.simulators.proxies import check_account_number, normalise_proxy
from txverify.simulators.seed import OTHER_BANKS, PEOPLE
from txverify.units import bangkok

Clock = Callable[[], datetime]
MAX_AMOUNT = 200_000_000  # 2 million baht in satang
MAX_BACKDATE_DAYS = 400  # a backdated transfer: the seeded accounts were opened 400 days back
_TRANS_REF = re.compile(r"[A-Za-z0-9]{1,32}")  # used with fullmatch: "$" would allow "\n"
_BILL_REF = re.compile(r"[A-Za-z0-9]{0,20}")
# Transactions kept in memory for repeated inquiries (load tests ask about the
# same slips again and again); a reversal, the only change to a stored
# transaction, drops its entry. Misses are not cached: a new slip must be found.
CACHE_SIZE = 20_000
# Bank-side "missing or invalid parameter" in the existing central system.
BANK_INVALID_PARAMETER = "8400"


class SlipVisibility(StrEnum):
    """What an inquiry about a slip sees now."""

    VISIBLE = "VISIBLE"
    NOT_YET_VISIBLE = "NOT_YET_VISIBLE"
    EXPIRED = "EXPIRED"
    PENDING = "PENDING"  # known, not settled yet: SLIP_PENDING


@dataclass(frozen=True, slots=True)
class TransferOrder:
    """A transfer as asked for; validated by Bank.transfer."""

    from_account: str = ""
    to_bank: str = ""
    to_account: str = ""
    to_proxy: ProxyRecord | None = None
    amount: int = 0
    fee: int = 0
    ref1: str = ""
    ref2: str = ""
    ref3: str = ""
    to_merchant_id: str = ""
    receiver_name_th: str = ""
    receiver_name_en: str = ""
    # A backdated transfer (QA): when it was made; None = now. Not in the future,
    # not before the seeded accounts were opened.
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TransferResult:
    """A completed transfer: the stored transaction, its slip QR, the sender's balance."""

    transaction: LedgerTransaction
    qr_text: str
    balance: int


class Bank:
    """One simulated member: its ledger, its clock and its rules. Knows nothing of gRPC."""

    def __init__(
        self,
        profile: Profile,
        ledger: LedgerStore,
        *,
        retention_days: int | None = None,
        pending_window: timedelta | None = None,
        visibility_delay: timedelta = timedelta(0),
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        retention_days = profile.retention_days if retention_days is None else retention_days
        pending_window = profile.pending_window if pending_window is None else pending_window
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if pending_window < timedelta(0):
            raise ValueError("pending_window must not be negative")
        self.profile = profile
        self.ledger = ledger
        self.retention_days = retention_days
        self.pending_window = pending_window
        self.visibility_delay = visibility_delay
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.rng = rng or random.Random()
        self._cache: OrderedDict[str, LedgerTransaction] = OrderedDict()

    @property
    def code(self) -> str:
        return self.profile.code

    # inquiries ------------------------------------------------------------------

    def visibility(self, tx: LedgerTransaction, now: datetime | None = None) -> SlipVisibility:
        """Retention by Bangkok calendar day (7 days: paid on 1 Aug, found until 8 Aug,
        expired 9 Aug); then not yet visible, then pending, each for a while after it."""
        now = now or self.clock()
        age_days = (bangkok(now).date() - bangkok(tx.trans_time).date()).days
        if age_days > self.retention_days:
            return SlipVisibility.EXPIRED
        age = now - tx.trans_time
        if age < self.visibility_delay:
            return SlipVisibility.NOT_YET_VISIBLE
        if age < self.pending_window:
            return SlipVisibility.PENDING
        return SlipVisibility.VISIBLE

    def inquire(self, sending_bank: str, trans_ref: str) -> LedgerTransaction:
        """The transaction an issuer may report, or ServiceError with the reason to send."""
        if sending_bank != self.code:
            raise ServiceError(
                Reason.INVALID_REQUEST,
                f"this is member {self.code}; the slip names {sending_bank!r}",
                code=BANK_INVALID_PARAMETER,
            )
        if not _TRANS_REF.fullmatch(trans_ref):
            raise ServiceError(
                Reason.INVALID_REQUEST,
                "transRef must be 1-32 ASCII letters and digits",
                code=BANK_INVALID_PARAMETER,
            )
        tx = self._lookup(trans_ref)
        now = self.clock()
        state = None if tx is None else self.visibility(tx, now)
        if tx is None or state is SlipVisibility.NOT_YET_VISIBLE:
            raise ServiceError(
                Reason.SLIP_NOT_FOUND, f"no transaction {trans_ref} at member {self.code}"
            )
        if state is SlipVisibility.EXPIRED:
            raise ServiceError(
                Reason.SLIP_EXPIRED,
                f"transaction {trans_ref} is older than {self.retention_days} days",
            )
        if state is SlipVisibility.PENDING:
            assert tx is not None
            settles_in = (tx.trans_time + self.pending_window - now).total_seconds()
            raise ServiceError(
                Reason.SLIP_PENDING,
                f"transaction {trans_ref} is not settled yet at member {self.code}",
                retry_after=max(settles_in, 0.0),
            )
        return tx

    def _lookup(self, trans_ref: str) -> LedgerTransaction | None:
        tx = self._cache.get(trans_ref)
        if tx is not None:
            self._cache.move_to_end(trans_ref)
            return tx
        tx = self.ledger.get_transaction(trans_ref)
        if tx is not None:
            self._cache[trans_ref] = tx
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return tx

    # accounts -------------------------------------------------------------------

    def open_account(
        self,
        *,
        name_th: str,
        name_en: str,
        initial_balance: int = 0,
        proxies: tuple[tuple[ProxyKind, str], ...] = (),
        account_number: str = "",
    ) -> AccountRecord:
        for field, name in (("name_th", name_th), ("name_en", name_en)):
            if len(name.split()) < 2 or len(name) > 100:
                raise invalid_field(field, "first name and surname, at most 100 characters")
        if not name_en.isascii():
            raise invalid_field("name_en", "English names are ASCII")
        if not 0 <= initial_balance <= 10 * MAX_AMOUNT * 1000:
            raise invalid_field("initial_balance_satang", "must be 0 or more satang")
        records = tuple(
            normalise_proxy(kind, value, field=f"proxies[{i}]")
            for i, (kind, value) in enumerate(proxies)
        )
        number = (
            check_account_number(account_number, field="account_number")
            if account_number
            else self._new_account_number()
        )
        account = AccountRecord(
            number, name_th.strip(), name_en.strip().upper(), initial_balance, self.clock(), records
        )
        self.ledger.open_account(account)
        return account

    def _new_account_number(self) -> str:
        while True:
            number = f"{self.rng.randrange(10**9, 10**10):010d}"
            if self.ledger.get_account(number) is None:
                return number

    # transfers ------------------------------------------------------------------

    def transfer(self, order: TransferOrder) -> TransferResult:
        """Move money, store the transaction and its slip, return the slip."""
        if order.to_bank and not is_member_code(order.to_bank):
            raise invalid_field("to_bank", "a 3-digit bank code")
        if not 1 <= order.amount <= MAX_AMOUNT:
            raise invalid_field("amount_satang", f"1 to {MAX_AMOUNT} satang")
        if not 0 <= order.fee <= MAX_AMOUNT:
            raise invalid_field("fee_satang", "0 or more satang")
        for field in ("ref1", "ref2", "ref3", "to_merchant_id"):
            if not _BILL_REF.fullmatch(getattr(order, field)):
                raise invalid_field(field, "up to 20 ASCII letters and digits")
        receiver, credit = self._receiver(order)
        to_bank = receiver.bank
        sender_account = self._sender(order)
        now = self._trans_time(order.at)
        sender = PartyRecord(
            sender_account.name_th,
            sender_account.name_en,
            self.code,
            sender_account.account_number,
            *(_first_proxy(sender_account)),
        )
        for _ in range(20):  # transRefs are random; retry the rare collision
            tx = LedgerTransaction(
                trans_ref=self.profile.ref_style(self.rng, now),
                sending_bank=self.code,
                receiving_bank=to_bank,
                trans_time=now,
                sender=sender,
                receiver=receiver,
                amount=order.amount,
                fee=order.fee,
                ref1=order.ref1,
                ref2=order.ref2,
                ref3=order.ref3,
                to_merchant_id=order.to_merchant_id,
            )
            qr = self.profile.slip_qr(tx.trans_ref, now)
            try:
                balance = self.ledger.record_transfer(
                    tx, qr, debit=sender_account.account_number, credit=credit
                )
            except ValueError:
                continue
            return TransferResult(tx, qr, balance)
        raise ServiceError(Reason.INTERNAL, "could not find a free transRef")

    def _trans_time(self, at: datetime | None) -> datetime:
        now = self.clock()
        if at is None:
            return now
        if at.tzinfo is None:
            raise invalid_field("trans_time", "a time with its time zone")
        if not now - timedelta(days=MAX_BACKDATE_DAYS) <= at <= now:
            raise invalid_field(
                "trans_time", f"not in the future, at most {MAX_BACKDATE_DAYS} days back"
            )
        return at

    def _sender(self, order: TransferOrder) -> AccountRecord:
        if order.from_account:
            number = check_account_number(order.from_account, field="from_account")
            account = self.ledger.get_account(number)
            if account is None:
                raise ServiceError(
                    Reason.UNKNOWN_ACCOUNT,
                    f"no account {number} at member {self.code}",
                    metadata={"field": "from_account"},
                )
            return account
        account = self.ledger.first_account_with(order.amount + order.fee)
        if account is None:
            raise ServiceError(
                Reason.INSUFFICIENT_FUNDS,
                f"no account at member {self.code} can pay {order.amount + order.fee} satang",
            )
        return account

    def _receiver(self, order: TransferOrder) -> tuple[PartyRecord, str | None]:
        """The receiving party and, when it is an account of this bank, its number to credit.

        Without to_bank, an account is taken to be at this bank, and a proxy is
        resolved as PromptPay's directory would: to this bank when registered
        here, else to another bank chosen by the proxy (stable for a proxy).
        """
        if bool(order.to_account) == (order.to_proxy is not None):
            raise invalid_field("to", "set exactly one of to_account and to_proxy")
        local: AccountRecord | None = None
        proxy: ProxyRecord | None = None
        number = ""
        to_bank = order.to_bank or self.code
        if order.to_proxy is not None:
            proxy = normalise_proxy(order.to_proxy.kind, order.to_proxy.value, field="to_proxy")
            if proxy.kind is ProxyKind.BILLERID and not order.ref1:
                raise invalid_field("ref1", "a bill payment (BILLERID) needs ref1")
            if not order.to_bank and self.ledger.account_by_proxy(proxy) is None:
                to_bank = directory_bank(proxy, exclude=self.code)
            if to_bank == self.code:
                local = self.ledger.account_by_proxy(proxy)
                # PromptPay refuses a proxy nobody registered; this bank can tell for its own.
                if local is None and proxy.kind is not ProxyKind.BILLERID:
                    raise ServiceError(
                        Reason.UNKNOWN_ACCOUNT,
                        f"no {proxy.kind} proxy {proxy.value} is registered at member {self.code}",
                        metadata={"field": "to_proxy"},
                    )
        else:
            number = check_account_number(order.to_account, field="to_account")
            if to_bank == self.code:
                local = self.ledger.get_account(number)
                if local is None:
                    raise ServiceError(
                        Reason.UNKNOWN_ACCOUNT,
                        f"no account {number} at member {self.code}",
                        metadata={"field": "to_account"},
                    )
        if local is not None:
            name_th, name_en, number = local.name_th, local.name_en, local.account_number
        elif order.receiver_name_th and order.receiver_name_en:
            name_th, name_en = order.receiver_name_th, order.receiver_name_en.upper()
        else:
            name_th, name_en = fictional_name(f"{to_bank}:{number}:{proxy}")
        party = PartyRecord(
            name_th,
            name_en,
            to_bank,
            number,
            proxy.kind if proxy else None,
            proxy.value if proxy else "",
        )
        return party, local.account_number if local else None

    def reverse(self, trans_ref: str) -> LedgerTransaction:
        if not _TRANS_REF.fullmatch(trans_ref):
            raise invalid_field("trans_ref", "1-32 ASCII letters and digits")
        try:
            return self.ledger.reverse(trans_ref)
        finally:
            self._cache.pop(trans_ref, None)

    def list_slips(self, limit: int, before: tuple[int, str] | None) -> list[StoredSlip]:
        return self.ledger.list_slips(limit, before)


def _first_proxy(account: AccountRecord) -> tuple[ProxyKind | None, str]:
    if not account.proxies:
        return None, ""
    return account.proxies[0].kind, account.proxies[0].value


def directory_bank(proxy: ProxyRecord, *, exclude: str) -> str:
    """The bank a proxy registered elsewhere resolves to: stable, never `exclude`."""
    banks = [b for b in OTHER_BANKS if b != exclude]
    digest = hashlib.sha256(f"{proxy.kind}:{proxy.value}".encode()).digest()
    return banks[digest[0] % len(banks)]


def fictional_name(key: str) -> tuple[str, str]:
    """A stable made-up (Thai, English) name for a receiver this bank does not hold."""
    digest = hashlib.sha256(key.encode()).digest()
    return PEOPLE[digest[0] % len(PEOPLE)]
