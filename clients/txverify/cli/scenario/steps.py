"""Step types: the keys each accepts (a schema of value kinds) and what running it does.

Every step type turns its arguments into calls to the hub (as a member, or as the
operator) or to the simulator's control port; the file format is in the package's docstring."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from txverify import units
from txverify.cli.scenario.values import (
    Kind,
    StepError,
    baht,
    bank,
    choice,
    code,
    exactly_one,
    flag,
    integer,
    listed,
    moment,
    number,
    one_of,
    positive,
    proxy,
    read,
    receiver,
    save,
    slip,
    text,
)
from txverify.errors import ErrorDetails, details_of
from txverify.runtime import tls
from txverify.v1 import (
    common_pb2,
    registry_pb2,
    registry_pb2_grpc,
    simulator_pb2,
    simulator_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)
from txverify.wire import MEMBER_HEADER

RPC_TIMEOUT = 10.0  # seconds, for control and registry calls
V, R, S = verification_pb2, registry_pb2, simulator_pb2


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SavedSlip:
    """A slip a step saved under a name (`save:`) for later steps."""

    bank: str
    trans_ref: str
    qr_text: str
    amount_satang: int


@dataclass(slots=True)
class Context:
    """Where steps run: the hub, the simulator's control port, and the slips saved so far.

    `hub(identity)` is the channel that speaks for a member code or the operator: under
    mTLS (`mtls`) one per identity, presenting its certificate; in dev mode one for all,
    each call naming its caller in the header (`caller`)."""

    hub: Callable[[str], grpc.aio.Channel]
    control: grpc.aio.Channel
    default_member: str
    mtls: bool = False
    slips: dict[str, SavedSlip] = field(default_factory=dict)
    banks: dict[str, S.SimulatedBank] = field(default_factory=dict)

    def verifier(self, member: str) -> verification_pb2_grpc.VerificationServiceAsyncStub:
        return verification_pb2_grpc.VerificationServiceStub(self.hub(member))

    @property
    def registry(self) -> registry_pb2_grpc.MemberRegistryAsyncStub:
        return registry_pb2_grpc.MemberRegistryStub(self.hub(tls.OPERATOR))

    def caller(self, identity: str) -> tuple[tuple[str, str], ...]:
        """The metadata that names the caller: none under mTLS (its certificate does)."""
        return () if self.mtls else as_member(identity)

    @property
    def simulator(self) -> simulator_pb2_grpc.BankSimulatorAsyncStub:
        return simulator_pb2_grpc.BankSimulatorStub(self.control)

    def save(self, name: str, tx: common_pb2.Transaction, qr_text: str) -> None:
        self.slips[name] = SavedSlip(tx.sending_bank, tx.trans_ref, qr_text, tx.amount.satang)

    async def simulated(self, code: str) -> S.SimulatedBank | None:
        if not self.banks:
            listed = await self.simulator.ListBanks(S.ListBanksRequest(), timeout=RPC_TIMEOUT)
            self.banks.update((b.code, b) for b in listed.banks)
        return self.banks.get(code)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a step came to: an answer, a gRPC error, or a problem of its own."""

    latency_ms: float = 0.0
    response: Message | None = None
    error: ErrorDetails | None = None
    problem: str = ""  # a failure that is no RPC error (e.g. no slip to pick)
    note: str = ""  # what happened, when there is no answer to summarize

    @property
    def status(self) -> str:
        return "OK" if self.error is None else self.error.status.name

    def describe(self) -> str:
        if self.error is None:
            return self.note or summarize(self.response)
        cause = self.error.metadata.get("cause")
        reason = " ".join(filter(None, (self.error.reason, cause and f"({cause})")))
        return f"{self.status} {reason}".strip() + f": {self.error.message}"


async def call(rpc: Callable[[], Awaitable[Message]]) -> Outcome:
    started = time.perf_counter()
    try:
        response = await rpc()
    except grpc.aio.AioRpcError as error:
        return Outcome((time.perf_counter() - started) * 1000, error=details_of(error))
    return Outcome((time.perf_counter() - started) * 1000, response=response)


def as_member(member: str) -> tuple[tuple[str, str]]:
    """Dev-mode metadata: the caller names its member code (the hub trusts loopback)."""
    return ((MEMBER_HEADER, member),)


def short(enum: EnumDescriptor, number: int) -> str:
    """VERDICT_VALID -> VALID."""
    value = enum.values_by_number.get(number)
    name = value.name if value else str(number)
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return name.removeprefix(prefix)


def summarize(response: Message | None) -> str:
    """One line about an answer: the verdict and failed checks, a transRef, a member's state."""
    if isinstance(response, V.VerifyResponse):
        parts = [f"OK {short(V.Verdict.DESCRIPTOR, response.verdict)}"]
        dup = response.duplicate
        if dup.previous_count:
            parts.append(f"seen {dup.previous_count}x ({dup.previous_count_in_scope}x in scope)")
        parts += ["replayed"] if response.replayed else []
        parts += [
            f"{short(V.Check.DESCRIPTOR, c.check)} {short(V.CheckOutcome.DESCRIPTOR, c.outcome)}"
            f" (expected {c.expected}, observed {c.observed})"
            for c in response.checks
            if c.outcome != V.CHECK_OUTCOME_PASS
        ]
        return "; ".join(parts)
    if isinstance(response, S.SetFaultsResponse):
        return f"OK, issuer {'listening' if response.issuer_listening else 'NOT listening'}"
    member = getattr(response, "member", None)
    if isinstance(member, R.Member):
        roles = [short(R.Role.DESCRIPTOR, s.role) for s in member.subscriptions]
        state = short(R.MemberStatus.DESCRIPTOR, member.status)
        return f"OK {member.code} {state}, roles: {', '.join(roles) or 'none'}"
    tx = getattr(response, "transaction", None)
    if isinstance(tx, common_pb2.Transaction):
        status = short(common_pb2.TransactionStatus.DESCRIPTOR, tx.status)
        return f"OK transRef {tx.trans_ref} {status}"
    return "OK"


# --- step types ---------------------------------------------------------------------------

Args = dict[str, Any]


async def _transfer(ctx: Context, a: Args) -> Outcome:
    fields = {
        _TRANSFER_FIELDS.get(key, key): value
        for key, value in a.items()
        if key not in ("save", "time")
    }
    request = S.TransferRequest(**fields)
    if "time" in a:  # a backdated transfer
        request.trans_time.CopyFrom(units.to_timestamp(a["time"](datetime.now(UTC))))
    outcome = await call(lambda: ctx.simulator.Transfer(request, timeout=RPC_TIMEOUT))
    if "save" in a and isinstance(outcome.response, S.TransferResponse):
        ctx.save(a["save"], outcome.response.transaction, outcome.response.qr_text)
    return outcome


# Keys named otherwise than their TransferRequest field (the others are the same).
_TRANSFER_FIELDS = {
    "to": "to_proxy",
    "amount": "amount_satang",
    "fee": "fee_satang",
    "merchant": "to_merchant_id",
}


async def _verify(ctx: Context, a: Args) -> Outcome:
    request = V.VerifyRequest(
        request_id=a.get("request_id", ""), requester_reference=a.get("reference", "")
    )
    saved = ctx.slips.get(a.get("slip", ""))
    if saved is not None and not a.get("by_ref"):
        request.qr_text = saved.qr_text
    elif saved is not None:
        request.slip_ref.CopyFrom(
            common_pb2.SlipRef(sending_bank=saved.bank, trans_ref=saved.trans_ref)
        )
    elif "qr" in a:
        request.qr_text = a["qr"]
    else:
        request.slip_ref.CopyFrom(common_pb2.SlipRef(sending_bank=a["bank"], trans_ref=a["ref"]))
    wanted, expect, now = a.get("expect", {}), request.expect, datetime.now(UTC)
    for key, bound in (
        ("amount", "equals"),
        ("amount_at_least", "at_least"),
        ("amount_at_most", "at_most"),
    ):
        if key in wanted:
            setattr(expect.amount, f"{bound}_satang", wanted[key])
    expect.receivers.extend(wanted.get("receiver", []))
    expect.receiving_bank = wanted.get("receiving_bank", "")
    for key, stamp in (("since", expect.not_before), ("until", expect.not_after)):
        if key in wanted:
            stamp.CopyFrom(units.to_timestamp(wanted[key](now)))
    member = a.get("as", ctx.default_member)
    meta, timeout = ctx.caller(member), a.get("timeout", 5.0)
    verifier = ctx.verifier(member)
    return await call(lambda: verifier.Verify(request, timeout=timeout, metadata=meta))


async def _pick(ctx: Context, a: Args) -> Outcome:
    started, token, skip = time.perf_counter(), "", a.get("skip", 0)
    state = a.get("state", S.SLIP_STATE_VISIBLE)
    status = a.get("status", common_pb2.TRANSACTION_STATUS_COMPLETED)
    while True:
        request = S.ListTransactionsRequest(bank=a["bank"], page_size=1000, page_token=token)
        page = await ctx.simulator.ListTransactions(request, timeout=RPC_TIMEOUT)
        found = [s for s in page.slips if s.state == state and status in (0, s.transaction.status)]
        if skip < len(found):
            ctx.save(a["save"], found[skip].transaction, found[skip].qr_text)
            return Outcome((time.perf_counter() - started) * 1000, response=found[skip])
        skip, token = skip - len(found), page.next_page_token
        if not token:
            what = short(S.SlipState.DESCRIPTOR, state)
            return Outcome(problem=f"bank {a['bank']} has no such {what} slip (seed more?)")


_STATUS_ACTIONS = {
    "suspend": R.MEMBER_STATUS_SUSPENDED,
    "resume": R.MEMBER_STATUS_ACTIVE,
    "terminate": R.MEMBER_STATUS_TERMINATED,
}
_MEMBER_ANSWERS: dict[str, type[Message]] = {
    **{action: R.SetMemberStatusResponse for action in _STATUS_ACTIONS},
    "register": R.RegisterMemberResponse,
    "subscribe": R.SubscribeResponse,
    "unsubscribe": R.UnsubscribeResponse,
}


async def _member(ctx: Context, a: Args) -> Outcome:
    action = next(k for k in _MEMBER_ANSWERS if k in a)
    request: Message
    if action in _STATUS_ACTIONS:
        status = _STATUS_ACTIONS[action]
        request = R.SetMemberStatusRequest(
            code=a[action], status=status, reason=a.get("reason", "")
        )
        method = "SetMemberStatus"
    elif action == "register":
        request, method = await _registration(ctx, a[action]), "RegisterMember"
    else:
        method = action.capitalize()  # Subscribe, Unsubscribe
        request = getattr(R, f"{method}Request")(**a[action])
    rpc, meta = getattr(ctx.registry, method), ctx.caller(tls.OPERATOR)
    return await call(lambda: rpc(request, metadata=meta, timeout=RPC_TIMEOUT))


async def _registration(ctx: Context, a: Args) -> R.RegisterMemberRequest:
    """The member to register; what is not given comes from the simulated bank of that code."""
    known = await ctx.simulated(a["code"])
    endpoint = a.get("issuer_endpoint", "")
    if "issuer_endpoint_of" in a:
        issuer = await ctx.simulated(a["issuer_endpoint_of"])
        endpoint = issuer.issuer_address if issuer else ""
    member = R.Member(
        code=a["code"],
        name=a.get("name") or (known.name if known else f"Member {a['code']}"),
        kind=a.get("kind") or (known.kind if known else common_pb2.MEMBER_KIND_BANK),
        issuer_endpoint=endpoint,
    )
    return R.RegisterMemberRequest(member=member, roles=a.get("roles", []))


_FAULT_FIELDS = S.Faults.DESCRIPTOR.fields_by_name


async def _faults(ctx: Context, a: Args) -> Outcome:
    faults = S.Faults()
    if not a.get("clear"):
        current = await call(
            lambda: ctx.simulator.GetFaults(S.GetFaultsRequest(bank=a["bank"]), timeout=RPC_TIMEOUT)
        )
        if not isinstance(current.response, S.GetFaultsResponse):
            return current
        faults.CopyFrom(current.response.faults)
    for key, value in a.items():
        if key in _FAULT_FIELDS:
            setattr(faults, key, value)
    request = S.SetFaultsRequest(bank=a["bank"], faults=faults)
    return await call(lambda: ctx.simulator.SetFaults(request, timeout=RPC_TIMEOUT))


async def _restart(ctx: Context, a: Args) -> Outcome:
    """Close the bank's issuer port (refuse) and open it again with the faults it had."""
    started, sim, code = time.perf_counter(), ctx.simulator, a["bank"]
    before = (await sim.GetFaults(S.GetFaultsRequest(bank=code), timeout=RPC_TIMEOUT)).faults
    down = S.Faults(
        refuse=True, visibility_delay_ms=before.visibility_delay_ms, pending_ms=before.pending_ms
    )
    closed = await sim.SetFaults(S.SetFaultsRequest(bank=code, faults=down), timeout=RPC_TIMEOUT)
    await asyncio.sleep(a.get("down", 0.0))
    reopened = await sim.SetFaults(
        S.SetFaultsRequest(bank=code, faults=before), timeout=RPC_TIMEOUT
    )
    problem = ""
    if closed.issuer_listening or reopened.issuer_listening == before.refuse:
        problem = f"bank {code}'s issuer port did not close and reopen"
    ms = (time.perf_counter() - started) * 1000
    return Outcome(ms, problem=problem, note="issuer port closed and reopened")


async def _reverse(ctx: Context, a: Args) -> Outcome:
    saved = ctx.slips.get(a.get("slip", ""))
    bank_, ref = (saved.bank, saved.trans_ref) if saved else (a["bank"], a["ref"])
    request = S.ReverseRequest(bank=bank_, trans_ref=ref)
    return await call(lambda: ctx.simulator.Reverse(request, timeout=RPC_TIMEOUT))


async def _usage(ctx: Context, a: Args) -> Outcome:
    """GetUsage as `as` (the default member; `member` alone: as the operator)."""
    caller = a.get("as") or (tls.OPERATOR if "member" in a else ctx.default_member)
    stub = usage_pb2_grpc.UsageServiceStub(ctx.hub(caller))
    request, meta = usage_pb2.GetUsageRequest(member=a.get("member", "")), ctx.caller(caller)
    outcome = await call(lambda: stub.GetUsage(request, timeout=RPC_TIMEOUT, metadata=meta))
    used = outcome.response
    if not isinstance(used, usage_pb2.GetUsageResponse):
        return outcome
    today = used.today
    note = f"OK {used.member}: {today.verifications} today, {today.not_found} not found"
    return dataclasses.replace(outcome, note=f"{note}, {used.tokens:.1f} tokens left")


async def _wait(ctx: Context, a: Args) -> Outcome:
    await asyncio.sleep(a["seconds"])
    return Outcome(note=f"waited {a['seconds']:g} s")


def _one_receiver(a: Args) -> None:
    exactly_one(a, ("to", "to_account"), "transfer")


def _verify_rules(a: Args) -> None:
    exactly_one(a, ("slip", "qr", "bank"), "verify")
    if ("bank" in a) != ("ref" in a) or ("by_ref" in a and "slip" not in a):
        raise StepError("verify: bank goes with ref; by_ref goes with slip")


def _member_rules(a: Args) -> None:
    action = exactly_one(a, tuple(_MEMBER_ANSWERS), "member")
    if "reason" in a and action not in _STATUS_ACTIONS:
        raise StepError("member: reason goes with suspend, resume or terminate")
    if action == "register" and {"issuer_endpoint", "issuer_endpoint_of"} <= set(a[action]):
        raise StepError("member.register: issuer_endpoint or issuer_endpoint_of, not both")


def _reverse_rules(a: Args) -> None:
    if ("slip" in a) == ("bank" in a) or ("bank" in a) != ("ref" in a):
        raise StepError("reverse needs a saved slip, or bank and ref")


def _faults_rules(a: Args) -> None:
    if not a.get("clear") and not set(a) & set(_FAULT_FIELDS):
        raise StepError(f"faults needs clear: true or a field: {one_of(_FAULT_FIELDS)}")


def sub(schema: Mapping[str, Kind], *required: str) -> Kind:
    """A nested mapping read with its own schema."""
    return lambda value, what, env: read(value, what, schema, env, required)


_ROLES = {"REQUESTER": R.ROLE_REQUESTER, "ISSUER": R.ROLE_ISSUER}
_KINDS = {"BANK": common_pb2.MEMBER_KIND_BANK, "NON_BANK": common_pb2.MEMBER_KIND_NON_BANK}
_STATES = {
    short(S.SlipState.DESCRIPTOR, v.number): v.number for v in S.SlipState.DESCRIPTOR.values[1:]
}
_TX_STATUSES = {"COMPLETED": common_pb2.TRANSACTION_STATUS_COMPLETED, "ANY": 0}
_TX_STATUSES |= {"REVERSED": common_pb2.TRANSACTION_STATUS_REVERSED}
_FAULT_KINDS: dict[int, Kind] = {
    FieldDescriptor.CPPTYPE_BOOL: flag,
    FieldDescriptor.CPPTYPE_STRING: text,
    FieldDescriptor.CPPTYPE_DOUBLE: number,
}
_EXPECTATIONS: dict[str, Kind] = {
    "amount": baht,
    "amount_at_least": baht,
    "amount_at_most": baht,
    "receiver": listed(receiver),
    "receiving_bank": code,
    "since": moment,
    "until": moment,
}
_MEMBERSHIP = sub({"code": code, "role": choice(_ROLES)}, "code", "role")
_REGISTRATION: dict[str, Kind] = {
    "code": code,
    "name": text,
    "kind": choice(_KINDS),
    "issuer_endpoint": text,
    "issuer_endpoint_of": bank,
    "roles": listed(choice(_ROLES)),
}


@dataclass(frozen=True, slots=True)
class StepType:
    """A step type: its keys and their kinds, and what running it does."""

    schema: Mapping[str, Kind]
    required: tuple[str, ...]
    run: Callable[[Context, Args], Awaitable[Outcome]]
    answer: Callable[[Args], type[Message] | None] = lambda a: None  # None: takes no expect
    rules: Callable[[Args], None] = lambda a: None  # rules across keys


_FAULT_SCHEMA = {k: _FAULT_KINDS.get(f.cpp_type, integer) for k, f in _FAULT_FIELDS.items()}
STEP_TYPES: dict[str, StepType] = {
    "transfer": StepType(
        schema={
            "save": save,
            "bank": bank,
            "amount": baht,
            "fee": baht,
            "from_account": text,
            "to": proxy,
            "to_account": text,
            "to_bank": code,
            "merchant": text,
            "ref1": text,
            "ref2": text,
            "ref3": text,
            "time": moment,
        },
        required=("bank", "amount"),
        run=_transfer,
        answer=lambda a: S.TransferResponse,
        rules=lambda a: _one_receiver(a),
    ),
    "verify": StepType(
        schema={
            "slip": slip,
            "by_ref": flag,
            "qr": text,
            "bank": code,
            "ref": text,
            "as": text,
            "reference": text,
            "request_id": text,
            "timeout": positive,
            "expect": sub(_EXPECTATIONS),
        },
        required=(),
        run=_verify,
        answer=lambda a: V.VerifyResponse,
        rules=_verify_rules,
    ),
    "pick": StepType(
        schema={
            "save": save,
            "bank": bank,
            "state": choice(_STATES),
            "status": choice(_TX_STATUSES),
            "skip": integer,
        },
        required=("save", "bank"),
        run=_pick,
    ),
    "member": StepType(
        schema={
            "suspend": code,
            "resume": code,
            "terminate": code,
            "reason": text,
            "subscribe": _MEMBERSHIP,
            "unsubscribe": _MEMBERSHIP,
            "register": sub(_REGISTRATION, "code"),
        },
        required=(),
        run=_member,
        answer=lambda a: next(t for k, t in _MEMBER_ANSWERS.items() if k in a),
        rules=_member_rules,
    ),
    "faults": StepType(
        schema={"bank": bank, "clear": flag, **_FAULT_SCHEMA},
        required=("bank",),
        run=_faults,
        answer=lambda a: S.SetFaultsResponse,
        rules=_faults_rules,
    ),
    "restart": StepType(schema={"bank": bank, "down": number}, required=("bank",), run=_restart),
    "reverse": StepType(
        schema={"slip": slip, "bank": bank, "ref": text},
        required=(),
        run=_reverse,
        answer=lambda a: S.ReverseResponse,
        rules=_reverse_rules,
    ),
    "wait": StepType(schema={"seconds": number}, required=("seconds",), run=_wait),
    "usage": StepType(
        schema={"as": text, "member": code},
        required=(),
        run=_usage,
        answer=lambda a: usage_pb2.GetUsageResponse,
    ),
}
