"""The audit trail, slip uses (duplicates) and remembered answers (idempotency), in one store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.runtime.storage import (
    from_micros,
    to_micros,
)
from txverify.v1 import verification_pb2

# A request id repeated by the same member within this window gets the first answer again.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
IDEMPOTENCY_WINDOW_US = IDEMPOTENCY_WINDOW // timedelta(microseconds=1)
# What a batch gives each item: the final response of an answer (replayed=True when
# the request id was already answered), None for an entry without an answer, or the
# error the item must fail with (its request id was answered for another slip).
BatchResult = verification_pb2.VerifyResponse | ServiceError | None
Key = tuple[str, str]  # (member, request_id)


class StoreBusy(Exception):
    """Another process holds the database's write lock (only from stage_batch(wait=False))."""


def request_id_reused() -> ServiceError:
    """The error for a request id already answered for another slip."""
    return ServiceError(
        Reason.INVALID_REQUEST,
        "request_id was already used for another slip; use a new request_id",
        metadata={"field": "request_id"},
        violations=(FieldViolation("request_id", "reused with another slip"),),
    )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One Verify as answered: who, which slip, what outcome; no personal data."""

    at: datetime
    request_id: str
    requester: str
    requester_reference: str
    issuer: str
    trans_ref: str
    status: str  # gRPC status name, "OK" for an answer
    reason: str = ""
    verdict: int = 0  # verification_pb2.Verdict value
    latency_us: int = 0
    replayed: bool = False
    trace_id: str = ""  # the W3C trace id (32 hex) the request came with, "" when none


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit entries to read (all of them given nothing), newest first, at most `limit`."""

    since: datetime | None = None
    until: datetime | None = None
    member: str = ""  # the requester
    trans_ref: str = ""
    request_id: str = ""
    limit: int = 100


@dataclass(frozen=True, slots=True)
class MemberUsage:
    """A requester's audit records since the start of its month and of its day (each
    admitted Verify: answered, replayed or failed), and how many were SLIP_NOT_FOUND."""

    month: int = 0
    month_not_found: int = 0
    today: int = 0
    today_not_found: int = 0


@dataclass(frozen=True, slots=True)
class SlipUse:
    """A successful verification to count, globally and in its requester's scope."""

    sending_bank: str
    trans_ref: str
    member: str
    reference: str


@dataclass(frozen=True, slots=True)
class UseCounts:
    """Uses of a slip before this one (times as µs since the epoch, UTC)."""

    previous: int
    first_at: int | None
    first_by: str
    previous_in_scope: int
    first_in_scope_at: int | None


@dataclass(frozen=True, slots=True)
class Verified:
    """A successful answer still to be judged for duplicates and remembered.

    `finish` turns the counts into the final response (verdict and duplicate
    info); it runs in the writer, inside the transaction that counted.
    """

    use: SlipUse
    finish: Callable[[UseCounts], verification_pb2.VerifyResponse]
    # The caller named the request: claim its id (a second claim, from any process,
    # replays the first answer instead of counting) and keep the answer for replay.
    remember: bool = True


@dataclass(frozen=True, slots=True)
class BatchItem:
    """What one Verify writes: always its audit entry; for a new answer, its use."""

    entry: AuditEntry
    verified: Verified | None = None


class AuditStore(Protocol):
    """Durable audit, uses and answers; one class per backend."""

    # How the hub's AuditWriter runs a batch. False (SQLite: statements take µs,
    # in-process): stage_batch on the event loop, only the durable COMMIT in the
    # writer thread. True (PostgreSQL: each round trip waits on the network):
    # awrite_batch on the loop, its waits awaited, none blocking.
    async_batches: bool

    def write_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        """Claim request ids, count uses, remember answers and append audit entries, in
        ONE transaction; returns each item's BatchResult."""

    async def awrite_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        """write_batch for the event loop: it never blocks the loop."""

    def stage_batch(self, items: Sequence[BatchItem], *, wait: bool = True) -> list[BatchResult]:
        """write_batch without the COMMIT: the transaction stays open until commit()
        or rollback(). Lets the writer do the statements on one thread (no lock
        hand-overs per statement) and only the durable COMMIT on another.

        With wait=False it raises StoreBusy at once if another process holds the
        write lock (the caller then waits with begin() elsewhere and stages again)."""

    def begin(self) -> None:
        """Wait (blocking, up to the busy timeout) for the write lock and open the
        transaction that the next stage_batch uses."""

    def commit(self) -> None:
        """Commit what stage_batch staged (durably)."""

    def rollback(self) -> None:
        """Drop what stage_batch staged."""

    def remembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        """(sending_bank, trans_ref, response bytes) of a remembered answer, or None."""

    async def aremembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        """remembered(), for the event loop: it never blocks the loop on the network."""

    def query(self, where: AuditFilter) -> list[AuditEntry]:
        """Audit entries, newest first."""

    async def aquery(self, where: AuditFilter) -> list[AuditEntry]:
        """query(), for the event loop: it never blocks the loop on the network."""

    async def ausage(self, member: str, month: datetime, day: datetime) -> MemberUsage:
        """`member`'s records at or after `month` and `day` (one range scan of the
        requester index), off the event loop: never on the Verify path."""

    def forget_before(self, moment: datetime) -> int:
        """Drop remembered answers older than `moment`; returns how many."""

    def close(self) -> None:
        """Release the storage (from a thread or without an event loop)."""

    async def aclose(self) -> None:
        """Release the storage from the event loop the store served (async pools too)."""


# -- the batch, whatever the backend ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A named request of the batch, claimed for it before its use is counted."""

    member: str
    request_id: str
    at: int  # µs since the epoch
    sending_bank: str
    trans_ref: str

    @property
    def key(self) -> Key:
        return (self.member, self.request_id)


@dataclass(frozen=True, slots=True)
class Remembered:
    """An answer already stored for a request id: for which slip, and its bytes."""

    sending_bank: str
    trans_ref: str
    response: bytes


@dataclass(frozen=True, slots=True)
class Use:
    """A use to count: the slip and scope, its time (µs), and its claim's key if named."""

    slip: SlipUse
    at: int
    claim: Key | None


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What a batch asks of its backend, inside the batch's open transaction.

    The backend claims each request id of `claims` for the transaction (sorted by
    key: one lock order for every batch), then counts, in order, the `uses` whose
    claim is the batch's (and every unnamed one), each with its own number. It
    gives back the answers remembered within the window for the ids another
    transaction answered first (their uses are not counted) and each use's counts
    (None when not counted): what `judge_batch` turns into results. The other ids
    are the batch's: no other transaction can answer them until this one ends.
    """

    items: Sequence[BatchItem]
    claims: list[Claim]
    uses: list[Use]
    use_items: list[int]  # the item of each use
    first: dict[Key, tuple[int, SlipUse]]  # a named request's first item
    later: dict[int, Key]  # items naming a request an earlier item named


@dataclass(slots=True)
class JudgedBatch:
    """A batch's results and the rows still to append (audit, remembered answers)."""

    results: list[BatchResult]
    audit_rows: list[tuple[Any, ...]]
    remembered_rows: list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class _ReplayOf:
    """A named request already answered: for which slip, and the answer (stored bytes, or
    the index of the batch item that answers it)."""

    sending_bank: str
    trans_ref: str
    answer: bytes | int


def plan_batch(items: Sequence[BatchItem]) -> BatchPlan:
    """The claims and uses of a batch: an id named twice is claimed (and counted) once."""
    plan = BatchPlan(items, [], [], [], {}, {})
    for i, item in enumerate(items):
        if item.verified is None:
            continue
        slip, at, key = item.verified.use, to_micros(item.entry.at), None
        if item.verified.remember:
            key = (slip.member, item.entry.request_id)
            if key in plan.first:
                plan.later[i] = key
                continue
            plan.first[key] = (i, slip)
            plan.claims.append(Claim(*key, at, slip.sending_bank, slip.trans_ref))
        plan.uses.append(Use(slip, at, key))
        plan.use_items.append(i)
    plan.claims.sort(key=lambda c: c.key)
    return plan


def judge_batch(
    plan: BatchPlan, stored: dict[Key, Remembered], counted: Sequence[UseCounts | None]
) -> JudgedBatch:
    """The backend-independent part of a batch: from what the backend claimed and
    counted, each item's result (replay, error or final response) and the rows to
    append, in the same transaction.

    Exact whichever process answered first: an id answered by another transaction
    within the window replays the stored answer; an id named twice in this batch
    replays its first item's answer. The router's own look-up (before asking the
    issuer) is the fast path; the claim catches two processes (or a look-up and a
    commit) racing.
    """
    counts = {i: c for i, c in zip(plan.use_items, counted, strict=True) if c is not None}
    judged = JudgedBatch([], [], [])
    results = judged.results
    for i, item in enumerate(plan.items):
        entry = item.entry
        at = to_micros(entry.at)
        result: BatchResult = None
        verdict, replayed = entry.verdict, entry.replayed
        replay = _replay_of(i, item, stored, plan)
        if replay is not None:
            result = _replayed(item, replay, results)
            if isinstance(result, ServiceError):
                results.append(result)  # audited as a failure by the caller
                continue
            verdict, replayed = result.verdict, True
        elif item.verified is not None:
            result = item.verified.finish(counts[i])
            verdict = result.verdict
            if item.verified.remember:
                use = item.verified.use
                judged.remembered_rows.append(
                    (use.member, entry.request_id, at, use.sending_bank, use.trans_ref,
                     result.SerializeToString())
                )  # fmt: skip
        judged.audit_rows.append(
            (at, entry.request_id, entry.requester, entry.requester_reference, entry.issuer,
             entry.trans_ref, entry.status, entry.reason, verdict, entry.latency_us,
             int(replayed), entry.trace_id)
        )  # fmt: skip
        results.append(result)
    return judged


def _replay_of(
    i: int, item: BatchItem, stored: dict[Key, Remembered], plan: BatchPlan
) -> _ReplayOf | None:
    """What item i replays, if its request was answered: by another transaction (the
    stored answer) or by an earlier item of this batch (that item's answer)."""
    if item.verified is None or not item.verified.remember:
        return None
    key = plan.later.get(i) or (item.verified.use.member, item.entry.request_id)
    if (found := stored.get(key)) is not None:
        return _ReplayOf(found.sending_bank, found.trans_ref, found.response)
    if i in plan.later:
        j, use = plan.first[key]
        return _ReplayOf(use.sending_bank, use.trans_ref, j)
    return None


def _replayed(
    item: BatchItem, replay: _ReplayOf, results: Sequence[BatchResult]
) -> verification_pb2.VerifyResponse | ServiceError:
    """The remembered answer marked replayed, or the error if it was about another slip."""
    assert item.verified is not None
    use = item.verified.use
    if (replay.sending_bank, replay.trans_ref) != (use.sending_bank, use.trans_ref):
        return request_id_reused()
    response = verification_pb2.VerifyResponse()
    if isinstance(replay.answer, bytes):
        response.ParseFromString(replay.answer)
    else:
        earlier = results[replay.answer]
        assert isinstance(earlier, verification_pb2.VerifyResponse)
        response.CopyFrom(earlier)
    response.replayed = True
    return response


def use_counts(
    number: int, first_at: int, first_by: str, scope_number: int, scope_first: int
) -> UseCounts:
    """A use's counts from its numbers (1 = the first use) and its counters' first use."""
    return UseCounts(
        previous=number - 1,
        first_at=first_at if number > 1 else None,
        first_by=first_by if number > 1 else "",
        previous_in_scope=scope_number - 1,
        first_in_scope_at=scope_first if scope_number > 1 else None,
    )


AUDIT_COLUMNS = (
    "at, request_id, requester, requester_reference, issuer, trans_ref, status, reason, "
    "verdict, latency_us, replayed, trace_id"
)


def audit_query(placeholder: str, filters: AuditFilter) -> tuple[str, list[Any]]:
    """The SELECT of audit entries, newest first, with `placeholder` for parameters."""
    where: list[str] = []
    args: list[Any] = []
    f = filters
    for clause, value in (
        ("at >= ", to_micros(f.since) if f.since else None),
        ("at < ", to_micros(f.until) if f.until else None),
        ("requester = ", f.member or None),
        ("trans_ref = ", f.trans_ref or None),
        ("request_id = ", f.request_id or None),
    ):
        if value is not None:
            where.append(clause + placeholder)
            args.append(value)
    sql = (
        f"SELECT {AUDIT_COLUMNS} FROM audit"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY at DESC, id DESC LIMIT {placeholder}"
    )
    return sql, [*args, f.limit]


def usage_query(placeholder: str) -> str:
    """The count of MemberUsage: parameters day, reason, day, reason, member, month."""
    p = placeholder
    return (
        f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN reason = {p} THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(CASE WHEN at >= {p} THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(CASE WHEN at >= {p} AND reason = {p} THEN 1 ELSE 0 END), 0) "
        f"FROM audit WHERE requester = {p} AND at >= {p}"
    )


def usage_args(member: str, month: datetime, day: datetime, reason: str) -> list[Any]:
    """The parameters of usage_query, in its order."""
    return [reason, to_micros(day), to_micros(day), reason, member, to_micros(month)]


def usage_of(row: Sequence[Any]) -> MemberUsage:
    return MemberUsage(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def entry_of(row: Sequence[Any]) -> AuditEntry:
    """An AuditEntry from a row of AUDIT_COLUMNS."""
    return AuditEntry(
        at=from_micros(row[0]),
        request_id=row[1],
        requester=row[2],
        requester_reference=row[3],
        issuer=row[4],
        trans_ref=row[5],
        status=row[6],
        reason=row[7],
        verdict=row[8],
        latency_us=row[9],
        replayed=bool(row[10]),
        trace_id=row[11],
    )


class NullAuditStore:
    """No audit, no duplicate counting, no idempotency: the hub's plain forwarding cost.

    For benchmarks (audit on vs off) and nothing else: every slip looks new.
    """

    async_batches = False
    _NEVER = UseCounts(0, None, "", 0, None)

    def write_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        return [None if i.verified is None else i.verified.finish(self._NEVER) for i in items]

    async def awrite_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        return self.write_batch(items)

    def stage_batch(self, items: Sequence[BatchItem], *, wait: bool = True) -> list[BatchResult]:
        return self.write_batch(items)

    def begin(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def remembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        return None

    async def aremembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        return None

    def query(self, where: AuditFilter) -> list[AuditEntry]:
        return []

    async def aquery(self, where: AuditFilter) -> list[AuditEntry]:
        return []

    async def ausage(self, member: str, month: datetime, day: datetime) -> MemberUsage:
        return MemberUsage()

    def forget_before(self, moment: datetime) -> int:
        return 0

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
