"""Deterministic seed data for simulated banks: people, accounts and a few transfers."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime, timedelta

from simulators.ledger import LedgerStore, LedgerTransaction, PartyRecord, ProxyKind
from txverify.units import BANGKOK

# transRef lengths differ between banks (domain.md: 18, 20 and 25 are common).
REF_LENGTHS: dict[str, int] = {"002": 18, "004": 20, "006": 22, "014": 25, "025": 20}
DEFAULT_REF_LENGTH = 20

# (Thai name, English name): fictional people, for the seeded ledgers only.
PEOPLE: tuple[tuple[str, str], ...] = (
    ("ชิซูกะ สมใจ", "CHICHUKA SOMJAI"),
    ("สมชาย ใจดี", "SOMCHAI JAIDEE"),
    ("สุดา รักไทย", "SUDA RAKTHAI"),
    ("ประเสริฐ มั่นคง", "PRASERT MANKONG"),
    ("วิภา แสงทอง", "WIPA SAENGTHONG"),
    ("อนันต์ ศรีสุข", "ANAN SRISUK"),
    ("มาลี พงษ์ไพร", "MALEE PONGPRAI"),
    ("ธนา วงศ์ใหญ่", "THANA WONGYAI"),
)
_ALNUM = string.ascii_uppercase + string.ascii_lowercase + string.digits


def make_trans_ref(rng: random.Random, bank: str, when: datetime) -> str:
    """A transRef in the bank's style: a Bangkok date prefix and random letters and digits."""
    length = REF_LENGTHS.get(bank, DEFAULT_REF_LENGTH)
    prefix = when.astimezone(BANGKOK).strftime("%Y%m%d") + bank
    return prefix + "".join(rng.choice(_ALNUM) for _ in range(length - len(prefix)))


def _person(rng: random.Random, bank: str) -> PartyRecord:
    name_th, name_en = rng.choice(PEOPLE)
    account = "".join(rng.choice(string.digits) for _ in range(10))
    if rng.random() < 0.5:
        mobile = "08" + "".join(rng.choice(string.digits) for _ in range(8))
        return PartyRecord(name_th, name_en, bank, account, ProxyKind.MSISDN, mobile)
    return PartyRecord(name_th, name_en, bank, account)


def seed_ledger(
    ledger: LedgerStore,
    bank: str,
    *,
    count: int,
    seed: int,
    now: datetime | None = None,
    receiving_banks: tuple[str, ...] = ("002", "004", "006", "014", "025"),
) -> list[LedgerTransaction]:
    """Add `count` transfers sent by `bank` in the last few hours; same seed, same ledger."""
    rng = random.Random(f"{seed}:{bank}")
    now = now or datetime.now(UTC)
    made: list[LedgerTransaction] = []
    for i in range(count):
        when = now - timedelta(minutes=5 + 7 * i, seconds=rng.randrange(60))
        receiving = rng.choice(receiving_banks)
        tx = LedgerTransaction(
            trans_ref=make_trans_ref(rng, bank, when),
            sending_bank=bank,
            receiving_bank=receiving,
            trans_time=when.replace(microsecond=0),
            sender=_person(rng, bank),
            receiver=_person(rng, receiving),
            amount=rng.randrange(100, 5_000_000),  # 1.00 to 50,000.00 baht
        )
        ledger.add_transaction(tx)
        made.append(tx)
    return made
