"""Deterministic seed data for simulated banks: people, accounts and past transfers."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime, timedelta

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
from txverify.simulators.profiles import Profile
from txverify.simulators.proxies import natid_check_digit

# (Thai name, English name): fictional people, for the simulated ledgers only.
PEOPLE: tuple[tuple[str, str], ...] = (
    ("ชิซูกะ สมใจ", "CHICHUKA SOMJAI"),
    ("สมชาย ใจดี", "SOMCHAI JAIDEE"),
    ("สุดา รักไทย", "SUDA RAKTHAI"),
    ("ประเสริฐ มั่นคง", "PRASERT MANKONG"),
    ("วิภา แสงทอง", "WIPA SAENGTHONG"),
    ("อนันต์ ศรีสุข", "ANAN SRISUK"),
    ("มาลี พงษ์ไพร", "MALEE PONGPRAI"),
    ("ธนา วงศ์ใหญ่", "THANA WONGYAI"),
    ("กมล ทองดี", "KAMOL THONGDEE"),
    ("นภา บุญมา", "NAPA BOONMA"),
    ("วีระ ชัยมงคล", "WEERA CHAIMONGKOL"),
    ("ปราณี สุขใจ", "PRANEE SUKJAI"),
)
ACCOUNTS_PER_BANK = 40
OTHER_BANKS = ("002", "004", "006", "011", "014", "025", "030", "069")
# Shares of the seeded history, 35 days of it: slips 9-29 days old (expired at
# the 7-day banks, found at the 30-day ones) and 32-35 days old (expired
# everywhere), so that load mixes and scenarios have expired slips at every bank.
OLDER_THAN_A_WEEK_SHARE = 0.05
EXPIRED_SHARE = 0.05
HISTORY_DAYS = 35
REVERSED_SHARE = 0.01
BILL_SHARE = 0.05


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _natid(rng: random.Random) -> str:
    first = str(rng.randrange(1, 9)) + _digits(rng, 11)
    return first + str(natid_check_digit(first))


def seed_accounts(
    rng: random.Random, profile: Profile, count: int, now: datetime
) -> list[AccountRecord]:
    accounts = []
    for i in range(count):
        name_th, name_en = PEOPLE[i % len(PEOPLE)]
        proxies: list[ProxyRecord] = []
        if profile.kind == "NON_BANK":
            number = "1" + _digits(rng, 9)
            proxies.append(ProxyRecord(ProxyKind.EWALLETID, "14" + _digits(rng, 13)))
        else:
            number = _digits(rng, 10)
            if rng.random() < 0.6:
                proxies.append(ProxyRecord(ProxyKind.MSISDN, "08" + _digits(rng, 8)))
            if rng.random() < 0.3:
                proxies.append(ProxyRecord(ProxyKind.NATID, _natid(rng)))
        accounts.append(
            AccountRecord(
                account_number=number,
                name_th=name_th,
                name_en=name_en,
                balance=rng.randrange(1_000_000, 500_000_000),  # 10k to 5M baht
                opened_at=now - timedelta(days=400 + i),
                proxies=tuple(proxies),
            )
        )
    return accounts


def _history(
    rng: random.Random, profile: Profile, accounts: list[AccountRecord], now: datetime, i: int
) -> LedgerTransaction:
    age = rng.random()
    if age < OLDER_THAN_A_WEEK_SHARE:
        when = now - timedelta(days=rng.uniform(9, 29))
    elif age < OLDER_THAN_A_WEEK_SHARE + EXPIRED_SHARE:
        when = now - timedelta(days=rng.uniform(32, HISTORY_DAYS))
    else:
        when = now - timedelta(minutes=5 + rng.uniform(0, 6 * 24 * 60))
    when = when.replace(microsecond=0)
    src = accounts[rng.randrange(len(accounts))]
    sender = PartyRecord(
        src.name_th,
        src.name_en,
        profile.code,
        src.account_number,
        src.proxies[0].kind if src.proxies else None,
        src.proxies[0].value if src.proxies else "",
    )
    ref1 = ref2 = merchant = ""
    if rng.random() < BILL_SHARE:
        to_bank = rng.choice(OTHER_BANKS)
        name_th, name_en = "การไฟฟ้า นครหลวง", "METROPOLITAN ELECTRICITY"
        receiver = PartyRecord(
            name_th, name_en, to_bank, "", ProxyKind.BILLERID, "0994000165" + _digits(rng, 5)
        )
        ref1, ref2, merchant = _digits(rng, 12), _digits(rng, 8), "MEA" + _digits(rng, 7)
    elif rng.random() < 0.3:
        dst = accounts[rng.randrange(len(accounts))]
        receiver = PartyRecord(dst.name_th, dst.name_en, profile.code, dst.account_number)
    else:
        to_bank = rng.choice(OTHER_BANKS)
        name_th, name_en = PEOPLE[rng.randrange(len(PEOPLE))]
        if rng.random() < 0.5:
            receiver = PartyRecord(
                name_th, name_en, to_bank, "", ProxyKind.MSISDN, "08" + _digits(rng, 8)
            )
        else:
            receiver = PartyRecord(name_th, name_en, to_bank, _digits(rng, 10))
    return LedgerTransaction(
        trans_ref=profile.ref_style(rng, when),
        sending_bank=profile.code,
        receiving_bank=receiver.bank,
        trans_time=when,
        sender=sender,
        receiver=receiver,
        amount=rng.randrange(100, 5_000_000),  # 1.00 to 50,000.00 baht
        fee=rng.choice((0, 0, 0, 0, 500, 1000, 2500)),
        ref1=ref1,
        ref2=ref2,
        to_merchant_id=merchant,
        status=TxStatus.REVERSED if rng.random() < REVERSED_SHARE else TxStatus.COMPLETED,
    )


def seed_ledger(
    ledger: LedgerStore,
    profile: Profile,
    *,
    transactions: int,
    seed: int,
    now: datetime | None = None,
) -> None:
    """Fill an empty ledger: accounts, then `transactions` past transfers.

    The same seed gives the same ledger within the same hour: times count
    back from `now` rounded down to the hour.
    """
    rng = random.Random(f"{seed}:{profile.code}")
    anchor = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    accounts = seed_accounts(rng, profile, ACCOUNTS_PER_BANK, anchor)
    for account in accounts:
        ledger.open_account(account)
    seen: set[str] = set()
    batch: list[StoredSlip] = []
    while len(seen) < transactions:
        tx = _history(rng, profile, accounts, anchor, len(seen))
        if tx.trans_ref in seen:
            continue
        seen.add(tx.trans_ref)
        batch.append(StoredSlip(tx, profile.slip_qr(tx.trans_ref, tx.trans_time)))
        if len(batch) >= 1000:
            ledger.add_history(batch)
            batch = []
    if batch:
        ledger.add_history(batch)
