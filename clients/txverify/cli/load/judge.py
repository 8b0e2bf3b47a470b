"""Every answer of a load judged against what its kind of slip must get.

Kinds of slips and the answer each must get (anything else is a wrong answer,
except UNAVAILABLE (but UNAVAILABLE/SLIP_PENDING, an answer), DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED and CANCELLED, which are counted as "no answer"):

- valid, duplicate: OK with the transaction of that very slip, the request's own
  request_id and, since every run verifies under its own requester_reference
  (`load-RUNID`), verdict VALID at the slip's first use in the run and
  DUPLICATE at every later use. `valid` walks through many slips (mostly VALID),
  `duplicate` reuses a few (mostly DUPLICATE). A reversed transfer's slip is
  MISMATCH (its STATUS check fails), which is right too.
- notfound NOT_FOUND/SLIP_NOT_FOUND, expired NOT_FOUND/SLIP_EXPIRED,
  bad INVALID_ARGUMENT/INVALID_SLIP_QR, unknownissuer NOT_FOUND/ISSUER_NOT_FOUND.
- pending UNAVAILABLE/SLIP_PENDING (an answer, although UNAVAILABLE), or, once its
  bank's pending window has passed during the run, OK about that very slip
  (VALID or DUPLICATE: when it settled is the bank's, so first use is not judged).

Each load process owns its share of the valid and duplicate slips, so it alone
knows whether a use is the first; with fewer slips than processes they are
shared and only VALID is checked against the process's own uses.
"""

from __future__ import annotations

from collections import Counter

from txverify import miniqr
from txverify.v1 import common_pb2, verification_pb2

FIRST_USE_KINDS = frozenset({"valid", "duplicate"})
EXPECTED_ERRORS = {
    "notfound": "NOT_FOUND/SLIP_NOT_FOUND",
    "expired": "NOT_FOUND/SLIP_EXPIRED",
    "bad": "INVALID_ARGUMENT/INVALID_SLIP_QR",
    "unknownissuer": "NOT_FOUND/ISSUER_NOT_FOUND",
    "pending": "UNAVAILABLE/SLIP_PENDING",
}
SETTLES_KINDS = frozenset({"pending"})  # an OK answer about the slip is right too
NO_ANSWER = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"})


class FirstUses:
    """Judges VALID against DUPLICATE for the slips of one process: VALID only at a first use."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.valid: Counter[str] = Counter()

    def send(self, key: str) -> int:
        """Before a request: returns how many answers about this slip had come back."""
        self.sent[key] += 1
        return self.answered[key]

    def judge(self, key: str, verdict: str, answered_before: int, *, exclusive: bool) -> str:
        """What is wrong with this verdict ("" if nothing).

        DUPLICATE needs only another request for the slip, answered or not: one
        that timed out may still have counted a use. With shared slips another
        process may have used the slip first, so any DUPLICATE may be right.
        """
        self.answered[key] += 1
        if verdict == "VALID":
            self.valid[key] += 1
            first = answered_before == 0 and self.valid[key] == 1
            return "" if first else "VALID although the slip was verified before in this run"
        if exclusive and self.sent[key] < 2:
            return "DUPLICATE at the slip's first use in this run"
        return ""


def judge_answer(
    kind: str,
    response: verification_pb2.VerifyResponse,
    request_id: str,
    slip: miniqr.SlipRef | None,
) -> str:
    """What is wrong with an OK answer, short of VALID/DUPLICATE ("" if nothing)."""
    verdict = verification_pb2.Verdict.Name(response.verdict).removeprefix("VERDICT_")
    tx = response.transaction
    if kind not in FIRST_USE_KINDS | SETTLES_KINDS:
        return f"answered OK/{verdict}"
    if response.request_id != request_id:
        return f"request_id {response.request_id!r} is not the request's"
    if response.replayed:
        return "replayed an answer to a new request id"
    if slip is None or (tx.sending_bank, tx.trans_ref) != (slip.sending_bank, slip.trans_ref):
        return f"answered about {tx.sending_bank} {tx.trans_ref}"
    if verdict == "MISMATCH" and tx.status == common_pb2.TRANSACTION_STATUS_REVERSED:
        return ""  # a reversed transfer: genuine, but its STATUS check fails
    return "" if verdict in ("VALID", "DUPLICATE") else f"verdict {verdict}"


def judge_error(kind: str, outcome: str) -> str:
    """How an error outcome ("STATUS/REASON") counts: "ok", "wrong" or "failed" (no answer)."""
    if EXPECTED_ERRORS.get(kind) == outcome:
        return "ok"
    if outcome == EXPECTED_ERRORS["pending"]:  # UNAVAILABLE, but the issuer's answer
        return "wrong"
    return "failed" if outcome.partition("/")[0] in NO_ANSWER else "wrong"


def expected_of(kind: str) -> str:
    return EXPECTED_ERRORS.get(kind, "OK/VALID at the slip's first use in the run, then DUPLICATE")
