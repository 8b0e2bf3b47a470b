"""The Verify request path: admit, decode, replay or ask the issuer, judge, record."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from server.admission import Admission
from server.audit import (
    IDEMPOTENCY_WINDOW,
    AuditEntry,
    BatchItem,
    SlipUse,
    UseCounts,
    Verified,
    request_id_reused,
)
from server.auditlog import Announcement, AuditWriter
from server.checks import evaluate, validate_expectations, verdict
from server.forwarding import IssuerGateway
from server.identity import Caller
from server.slip import slip_of
from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.v1 import common_pb2, verification_pb2

MAX_REQUEST_ID = 64
MAX_REFERENCE = 64
# Answers this process gave to named requests, kept for replay without a database
# read: the most recent ones (a retry comes seconds after its first try). Each is
# its serialized response, ~0.5 KB: 10,000 of them cost ~6 MB.
RECENT_ANSWERS = 10_000


_PRINTABLE = re.compile(r"[!-~]*")  # printable ASCII, no spaces


def _printable(value: str, field: str, limit: int) -> str:
    if len(value) > limit or not _PRINTABLE.fullmatch(value):
        raise ServiceError(
            Reason.INVALID_REQUEST,
            f"{field} must be 1-{limit} printable ASCII characters without spaces",
            metadata={"field": field},
            violations=(FieldViolation(field, f"1-{limit} printable ASCII, no spaces"),),
        )
    return value


def checked_request_id(request_id: str) -> str:
    """The caller's request id if well-formed, a new one if empty."""
    if not request_id:
        return uuid.uuid4().hex
    return _printable(request_id, "request_id", MAX_REQUEST_ID)


class RecentAnswers:
    """The latest answers to named requests that this process gave, by (member, request id).

    A hint, never the authority: what is not here (evicted, answered by another
    process, or before a restart) is found by the batch's claim of the request id
    (a replay, not counted again) or, when the issuer cannot answer, by a read of
    the remembered answers (Router._answer)."""

    def __init__(self, capacity: int = RECENT_ANSWERS) -> None:
        self.capacity = capacity
        # (member, request id) -> (sending bank, transRef, response bytes, answered at)
        self._answers: dict[tuple[str, str], tuple[str, str, bytes, float]] = {}

    def get(self, key: tuple[str, str]) -> tuple[str, str, bytes] | None:
        found = self._answers.get(key)
        if found is None:
            return None
        if time.time() - found[3] > IDEMPOTENCY_WINDOW_S:
            del self._answers[key]
            return None
        return found[0], found[1], found[2]

    def put(self, key: tuple[str, str], slip: common_pb2.SlipRef, raw: bytes) -> None:
        answers = self._answers
        answers.pop(key, None)
        answers[key] = (slip.sending_bank, slip.trans_ref, raw, time.time())
        if len(answers) > self.capacity:  # dicts keep insertion order: drop the oldest
            del answers[next(iter(answers))]

    def __len__(self) -> int:
        return len(self._answers)


IDEMPOTENCY_WINDOW_S = IDEMPOTENCY_WINDOW.total_seconds()


class Router:
    """Answers Verify requests; knows nothing of gRPC servers."""

    def __init__(
        self,
        admission: Admission,
        gateway: IssuerGateway,
        audit: AuditWriter,
    ) -> None:
        self.admission = admission
        self.gateway = gateway
        self.audit = audit
        # One request at a time per (member, request id): a second request
        # with the same id waits, then finds the first one's remembered answer
        # instead of asking the issuer and counting again. This lock is per
        # process; across processes (hub workers) the audit store's claim of the
        # id, inside the batch transaction, makes the second one a replay.
        self._keys: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}
        self.recent = RecentAnswers()

    async def verify(
        self,
        request: verification_pb2.VerifyRequest,
        *,
        caller: Caller,
        caller_remaining: float | None,
        outcome: dict[str, str],
        started: float,
        announcement: Announcement | None = None,
    ) -> verification_pb2.VerifyResponse:
        """Answer one Verify, durably audited; fills `outcome` (log line, failure audit)."""
        requester = await self.admission.admit(caller)
        outcome["requester"] = requester.code
        explicit_id = bool(request.request_id)
        request_id = checked_request_id(request.request_id)
        outcome["request_id"] = request_id
        reference = _printable(request.requester_reference, "requester_reference", MAX_REFERENCE)
        outcome["requester_reference"] = reference
        slip = slip_of(request)
        outcome["issuer"] = slip.sending_bank
        outcome["trans_ref"] = slip.trans_ref
        validate_expectations(request.expect)
        key = (requester.code, request_id)
        lock, users = self._keys.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await self._answer(
                    request, slip, requester.code, request_id, reference, explicit_id,
                    caller_remaining, outcome, started, announcement,
                )  # fmt: skip
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._keys[key]

    async def _answer(
        self,
        request: verification_pb2.VerifyRequest,
        slip: common_pb2.SlipRef,
        member: str,
        request_id: str,
        reference: str,
        explicit_id: bool,
        caller_remaining: float | None,
        outcome: dict[str, str],
        started: float,
        announcement: Announcement | None,
    ) -> verification_pb2.VerifyResponse:
        key = (member, request_id)
        if explicit_id:
            found = self.recent.get(key)
            if found is not None:
                return await self._replayed(_replay_of(found, slip), outcome, started, announcement)
        try:
            issuer = self.admission.issuer(slip.sending_bank)
            tx = await self.gateway.inquire(
                issuer,
                slip,
                requester=member,
                request_id=request_id,
                budget=self.gateway.policy.timeout(caller_remaining),
            )
        except ServiceError:
            # The issuer cannot answer now; if this request was answered before (by
            # another process, or before a restart), its first answer stands.
            replay = await self._replay(member, request_id, slip) if explicit_id else None
            if replay is None:
                raise
            return await self._replayed(replay, outcome, started, announcement)
        checks = evaluate(request.expect, tx)
        base = verification_pb2.VerifyResponse(transaction=tx, request_id=request_id, checks=checks)
        use = SlipUse(slip.sending_bank, slip.trans_ref, member, reference)
        final = await self.audit.write(
            BatchItem(
                self._entry(outcome, started),
                Verified(use, _finish(base, checks), remember=explicit_id),
            ),
            announcement,
        )
        assert final is not None  # a Verified item always gets its final response
        if final.replayed:  # another process answered this request id first
            outcome["replayed"] = "true"
        if explicit_id:
            self.recent.put(key, slip, final.SerializeToString())
        return final

    async def _replayed(
        self,
        replay: verification_pb2.VerifyResponse,
        outcome: dict[str, str],
        started: float,
        announcement: Announcement | None,
    ) -> verification_pb2.VerifyResponse:
        """Audit a replay (no use counted), then give it back."""
        outcome["replayed"] = "true"
        await self.audit.write(
            BatchItem(self._entry(outcome, started, replay.verdict, replayed=True)),
            announcement,
        )
        return replay

    @staticmethod
    def _entry(
        outcome: dict[str, str], started: float, verdict_value: int = 0, *, replayed: bool = False
    ) -> AuditEntry:
        return audit_entry(outcome, started, "OK", "", verdict_value, replayed=replayed)

    async def _replay(
        self, member: str, request_id: str, slip: common_pb2.SlipRef
    ) -> verification_pb2.VerifyResponse | None:
        """The remembered answer to this member's request id in the database, if any,
        marked replayed. Read only when the issuer cannot answer: otherwise the
        batch's claim finds it anyway. aremembered: a SQLite read on the loop (µs),
        a PostgreSQL one on an asyncio pool connection."""
        since = datetime.now(UTC) - IDEMPOTENCY_WINDOW
        found = await self.audit.store.aremembered(member, request_id, since)
        return None if found is None else _replay_of(found, slip)


def _replay_of(
    found: tuple[str, str, bytes], slip: common_pb2.SlipRef
) -> verification_pb2.VerifyResponse:
    """A remembered answer as a replay of `slip`; INVALID_REQUEST if it was another slip's."""
    sending_bank, trans_ref, raw = found
    if (sending_bank, trans_ref) != (slip.sending_bank, slip.trans_ref):
        raise request_id_reused()
    response = verification_pb2.VerifyResponse.FromString(raw)
    response.replayed = True
    return response


def audit_entry(
    outcome: dict[str, str],
    started: float,
    status: str,
    reason: str,
    verdict_value: int = 0,
    *,
    replayed: bool = False,
) -> AuditEntry:
    """The audit record of a Verify from what the request path learnt."""
    return AuditEntry(
        at=datetime.now(UTC),
        request_id=outcome.get("request_id", ""),
        requester=outcome.get("requester", ""),
        requester_reference=outcome.get("requester_reference", ""),
        issuer=outcome.get("issuer", ""),
        trans_ref=outcome.get("trans_ref", ""),
        status=status,
        reason=reason,
        verdict=verdict_value,
        latency_us=int((time.perf_counter() - started) * 1_000_000),
        replayed=replayed,
    )


def _finish(
    base: verification_pb2.VerifyResponse, checks: list[verification_pb2.CheckResult]
) -> Callable[[UseCounts], verification_pb2.VerifyResponse]:
    """The response once the uses before this one are known (runs in the audit writer)."""

    def finish(counts: UseCounts) -> verification_pb2.VerifyResponse:
        response = verification_pb2.VerifyResponse()
        response.CopyFrom(base)
        response.verdict = verdict(checks, counts.previous_in_scope)
        duplicate = response.duplicate
        duplicate.previous_count = counts.previous
        duplicate.first_verified_by = counts.first_by
        duplicate.previous_count_in_scope = counts.previous_in_scope
        if counts.first_at is not None:
            duplicate.first_verified_at.FromMicroseconds(counts.first_at)
        if counts.first_in_scope_at is not None:
            duplicate.first_verified_in_scope_at.FromMicroseconds(counts.first_in_scope_at)
        return response

    return finish
