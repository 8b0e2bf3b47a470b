"""The Verify request path: admit, decode, replay or ask the issuer, judge, record."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.hub.admission import Admission
from txverify.hub.audit import (
    IDEMPOTENCY_WINDOW,
    AuditEntry,
    BatchItem,
    SlipUse,
    UseCounts,
    Verified,
    request_id_reused,
)
from txverify.hub.audit.writer import AuditWriter
from txverify.hub.checks import evaluate, validate_expectations, verdict
from txverify.hub.forwarding import IssuerGateway
from txverify.hub.identity import Caller
from txverify.hub.images import ImageDecoder
from txverify.hub.outcome import Observer, Observers, RequestLog, Verification
from txverify.hub.registry import Member
from txverify.hub.slip import slip_of, slip_of_qr
from txverify.hub.tracing import TraceContext
from txverify.runtime.logs import FIELDS
from txverify.v1 import common_pb2, verification_pb2

if TYPE_CHECKING:  # imported only when an OTLP endpoint is configured (app.py)
    from txverify.hub.otel import Spans

MAX_REQUEST_ID = 64
MAX_REFERENCE = 64
# Answers this process gave to named requests, kept for replay without a database
# read: the most recent ones (a retry comes seconds after its first try). Each is
# its serialized response, ~0.5 KB: 10,000 of them cost ~6 MB.
RECENT_ANSWERS = 10_000
log = logging.getLogger("txverify.hub.verification")


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


_random = random.Random()  # seeded from os.urandom; a forked worker reseeds (below)
os.register_at_fork(after_in_child=_random.seed)


def new_id() -> str:
    """A request id for a request that named none: 128 random bits as 32 hex digits.

    Not a secret (ids are scoped to their member), only unique: a Mersenne Twister
    draw instead of uuid4's system call per request."""
    return f"{_random.getrandbits(128):032x}"


def checked_request_id(request_id: str) -> str:
    """The caller's request id if well-formed, a new one if empty."""
    if not request_id:
        return new_id()
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
    """Answers Verify requests and owns each outcome: answers, replays and failures are
    audited here, then told to the observers (log line, metrics, console). Knows
    nothing of gRPC servers."""

    def __init__(
        self,
        admission: Admission,
        gateway: IssuerGateway,
        audit: AuditWriter,
        observer: Observer | None = None,
        images: ImageDecoder | None = None,
        spans: Spans | None = None,
    ) -> None:
        self.admission = admission
        # OpenTelemetry's Verify and IssuerInquiry spans; None (the default): no
        # OpenTelemetry at all, only the caller's traceparent passed on (tracing.py).
        self.spans = spans
        self.images = images or ImageDecoder()
        self.gateway = gateway
        self.audit = audit
        self.observer: Observer = observer or Observers(())
        # One request at a time per (member, request id): a second request with
        # the same id waits its turn, then finds the first one's answer instead of
        # asking the issuer and counting again. Per process; across processes (hub
        # workers) the audit store's claim of the id, inside the batch transaction,
        # makes the second one a replay. A key maps to the requests waiting for
        # it (None: one running, none waiting); unnamed requests take no turn.
        self._turns: dict[tuple[str, str], deque[asyncio.Future[None]] | None] = {}
        self.recent = RecentAnswers()

    async def verify(
        self,
        request: verification_pb2.VerifyRequest,
        caller: Callable[[], Caller],
        caller_remaining: float | None,
        trace: TraceContext | None = None,
    ) -> verification_pb2.VerifyResponse:
        """Answer one Verify once it is durably audited, or raise its (audited) ServiceError.

        `caller` identifies who calls (it may raise ServiceError, audited as any
        failure); `caller_remaining` is the caller's deadline in seconds, if any;
        `trace` the caller's span (its traceparent), if it sent one.
        """
        v = Verification(time.perf_counter(), trace=trace)
        if self.spans is not None:
            self.spans.verify_started(v, trace)  # v.trace: the Verify span's, a root if none
        try:
            response = await self._verify(request, caller, caller_remaining, v)
        except ServiceError as error:
            raise await self._failed(v, error) from None
        except Exception:
            log.exception("verify failed unexpectedly", extra={FIELDS: RequestLog.fields(v)})
            internal = ServiceError(Reason.INTERNAL, "internal error in the hub")
            raise await self._failed(v, internal) from None
        except BaseException:  # cancelled: neither audited nor observed; its span ends
            if self.spans is not None:
                self.spans.verify_abandoned(v)
            raise
        v.verdict = response.verdict
        self._observe(v)
        return response

    async def _verify(
        self,
        request: verification_pb2.VerifyRequest,
        caller: Callable[[], Caller],
        caller_remaining: float | None,
        v: Verification,
    ) -> verification_pb2.VerifyResponse:
        who = caller()
        v.caller = who.identity[:64]
        requester = await self.admission.admit(who)
        v.requester = member = requester.code
        named = bool(request.request_id)
        v.request_id = request_id = checked_request_id(request.request_id)
        v.reference = _printable(request.requester_reference, "requester_reference", MAX_REFERENCE)
        if request.HasField("slip_image"):  # read after admission: members' images only
            slip = slip_of_qr(await self.images.slip_qr(request.slip_image), "slip_image")
        else:
            slip = slip_of(request)
        v.issuer, v.trans_ref = slip.sending_bank, slip.trans_ref
        if request.HasField("expect"):
            validate_expectations(request.expect)
        if not named:  # a new id: no other request can have it
            return await self._answer(request, slip, v, caller_remaining, named=False)
        key = (member, request_id)
        await self._take_turn(key)
        try:
            return await self._answer(request, slip, v, caller_remaining, named=True)
        finally:
            self._pass_turn(key)

    async def _answer(
        self,
        request: verification_pb2.VerifyRequest,
        slip: common_pb2.SlipRef,
        v: Verification,
        caller_remaining: float | None,
        *,
        named: bool,
    ) -> verification_pb2.VerifyResponse:
        key = (v.requester, v.request_id)
        if named:
            found = self.recent.get(key)
            if found is not None:
                return await self._replayed(_replay_of(found, slip), v)
        try:
            issuer = self.admission.issuer(slip.sending_bank)
            tx = await self._inquire(issuer, slip, v, caller_remaining)
        except ServiceError:
            # The issuer cannot answer now; if this request was answered before (by
            # another process, or before a restart), its first answer stands.
            replay = await self._replay(v.requester, v.request_id, slip) if named else None
            if replay is None:
                raise
            return await self._replayed(replay, v)
        checks = evaluate(request.expect, tx)
        response = verification_pb2.VerifyResponse(
            transaction=tx, request_id=v.request_id, checks=checks
        )
        use = SlipUse(slip.sending_bank, slip.trans_ref, v.requester, v.reference)
        final = await self.audit.write(
            BatchItem(audit_entry(v), Verified(use, _finish(response, checks), remember=named))
        )
        assert final is not None  # a Verified item always gets its final response
        if final.replayed:  # another process answered this request id first
            v.replayed = True
        if named:
            self.recent.put(key, slip, final.SerializeToString())
        return final

    async def _inquire(
        self,
        issuer: Member,
        slip: common_pb2.SlipRef,
        v: Verification,
        caller_remaining: float | None,
    ) -> common_pb2.Transaction:
        """The issuer's answer; a traced request passes its trace on: the same trace id
        and flags, the hub's span as the parent (the IssuerInquiry span's when on)."""
        budget = self.gateway.policy.timeout(caller_remaining)
        trace, spans = v.trace, self.spans
        if trace is None:  # the default: nothing to pass on
            return await self.gateway.inquire(
                issuer, slip, requester=v.requester, request_id=v.request_id, budget=budget
            )
        if spans is None:
            return await self.gateway.inquire(
                issuer, slip, requester=v.requester, request_id=v.request_id, budget=budget,
                metadata=trace.child().metadata(),
            )  # fmt: skip
        span, outgoing = spans.inquiry_started(v, issuer.code)
        try:
            tx = await self.gateway.inquire(
                issuer, slip, requester=v.requester, request_id=v.request_id, budget=budget,
                metadata=outgoing.metadata(),
            )  # fmt: skip
        except ServiceError as error:
            spans.inquiry_ended(span, error.status_code.name, error.reason.value)
            raise
        except BaseException:
            spans.inquiry_ended(span, "CANCELLED", "")
            raise
        spans.inquiry_ended(span, "OK", "")
        return tx

    async def _replayed(
        self, replay: verification_pb2.VerifyResponse, v: Verification
    ) -> verification_pb2.VerifyResponse:
        """Audit a replay (no use counted), then give it back."""
        v.replayed = True
        await self.audit.write(BatchItem(audit_entry(v, verdict=replay.verdict)))
        return replay

    async def _failed(self, v: Verification, error: ServiceError) -> ServiceError:
        """Audit a failure and tell the observers; the error to answer (AUDIT_UNAVAILABLE
        instead when even the failure cannot be recorded)."""
        if error.reason is Reason.SLIP_NOT_FOUND and v.requester:
            # Known only now, after the issuer answered: a miss costs more (admission.py).
            await self.admission.answered(v.requester, error.reason)
        if error.reason is not Reason.AUDIT_UNAVAILABLE:
            v.status, v.reason = error.status_code.name, error.reason.value
            try:
                await self.audit.write(BatchItem(audit_entry(v)))
            except ServiceError as audit_error:
                error = audit_error
        v.status, v.reason = error.status_code.name, error.reason.value
        self._observe(v)
        return error

    def _observe(self, v: Verification) -> None:
        v.ended = time.time()
        v.elapsed = time.perf_counter() - v.started
        self.observer.verified(v)
        if v.span is not None:
            assert self.spans is not None
            self.spans.verify_ended(v)

    async def _take_turn(self, key: tuple[str, str]) -> None:
        """Wait until no other request with this key is running here; then it is ours."""
        turns = self._turns
        if key not in turns:
            turns[key] = None
            return
        waiting = turns[key]
        if waiting is None:
            waiting = turns[key] = deque()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._pass_turn(key)  # it was handed to us as we were cancelled
            else:
                waiting.remove(turn)
            raise

    def _pass_turn(self, key: tuple[str, str]) -> None:
        waiting = self._turns.get(key)
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._turns[key]

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


def audit_entry(v: Verification, *, verdict: int = 0) -> AuditEntry:
    """The audit record of a Verify from what the request path learnt."""
    return AuditEntry(
        at=datetime.now(UTC),
        request_id=v.request_id,
        requester=v.requester,
        requester_reference=v.reference,
        issuer=v.issuer,
        trans_ref=v.trans_ref,
        status=v.status,
        reason=v.reason,
        verdict=verdict,
        latency_us=int((time.perf_counter() - v.started) * 1_000_000),
        replayed=v.replayed,
        trace_id=v.trace_id,
    )


def _finish(
    response: verification_pb2.VerifyResponse, checks: list[verification_pb2.CheckResult]
) -> Callable[[UseCounts], verification_pb2.VerifyResponse]:
    """The response once the uses before this one are known (runs in the batch, which
    gives each response to its own request: it is completed in place)."""

    def finish(counts: UseCounts) -> verification_pb2.VerifyResponse:
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
