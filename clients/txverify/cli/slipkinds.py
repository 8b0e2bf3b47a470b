"""Slips of each kind a load or an export needs, made from the simulated banks' ledgers:
every slip of a bank, taken round-robin across banks, well-formed slips nobody issued,
slips of a real bank that is not simulated, and QR texts with a broken CRC."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from txverify import miniqr
from txverify.v1 import simulator_pb2


def iter_slips(stub: Any, bank: str) -> Iterator[simulator_pb2.Slip]:
    """Every slip of a bank, newest first, page by page."""
    token = ""
    while True:
        page = stub.ListTransactions(
            simulator_pb2.ListTransactionsRequest(bank=bank, page_size=1000, page_token=token),
            timeout=30,
        )
        yield from page.slips
        token = page.next_page_token
        if not token:
            return


def round_robin(pools: dict[str, list[str]], n: int) -> list[str]:
    """Up to n slips, one from each bank in turn."""
    picked: list[str] = []
    iters = [iter(p) for p in pools.values() if p]
    while len(picked) < n and iters:
        for it in list(iters):
            qr = next(it, None)
            if qr is None:
                iters.remove(it)
            elif len(picked) < n:
                picked.append(qr)
    return picked


def not_found(banks: list[str], n: int) -> list[str]:
    issuers = [b for b in banks if b != miniqr.TRUEMONEY_MEMBER_CODE] or ["014"]
    # "NF" never starts a simulated bank's transRef, so these are well-formed and unknown.
    return [miniqr.build(issuers[i % len(issuers)], f"NF{i:018d}") for i in range(n)]


def unknown_issuer(i: int) -> str:
    return miniqr.build("071", f"UI{i:018d}")  # Thai Credit: a real bank code, not simulated


def broken(qr: str, i: int) -> str:
    """A QR text with one CRC digit changed: what a misread scan looks like."""
    last = qr[-1]
    replacement = "0123456789ABCDEF"[(int(last, 16) + 1 + i % 15) % 16]
    return qr[:-1] + replacement
