"""Scenario step types: the keys each accepts, the kinds of their values, and what it does.

The file format is documented in clients/txverify/cli/scenario.py, which checks whole files
and runs them. Here every step type has a schema (key -> value kind), read
before anything runs, and a runner that turns the arguments into calls to the
hub (as a member, or as the operator) or to the simulator's control port.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from txverify import units
from txverify.banks import is_member_code
from txverify.errors import ErrorDetails, details_of
from txverify.runtime import tls
from txverify.v1 import (
    common_pb2,
    registry_pb2,
    registry_pb2_grpc,
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)
from txverify.wire import MEMBER_HEADER

RPC_TIMEOUT = 10.0  # seconds, for control and registry calls
V, R, S = verification_pb2, registry_pb2, simulator_pb2


class StepError(ValueError):
    """A step of a scenario file is wrong; the loader adds the file and the step number."""


# --- value kinds: (value, what, env) -> the parsed value, or StepError ----------------------


@dataclass(slots=True)
class ParseEnv:
    """What checking a step may look at: the simulated banks and the slips saved so far."""

    banks: tuple[str, ...]
    saved: set[str] = field(default_factory=set)


Kind = Callable[[object, str, ParseEnv], Any]


def describe(value: object) -> str:
    kinds: dict[type, str] = {dict: "a mapping", list: "a list", type(None): "nothing"}
    return next((n for k, n in kinds.items() if isinstance(value, k)), repr(value))


def one_of(options: Iterable[object]) -> str:
    return ", ".join(sorted(str(o) for o in options))


def text(value: object, what: str, env: ParseEnv | None = None) -> str:
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, int | float) else ""
        raise StepError(f"{what} must be a string{hint}, got {describe(value)}")
    return value


def code(value: object, what: str, env: ParseEnv | None = None) -> str:
    """A member code, quoted: YAML reads 014 as the number 12."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise StepError(f'{what} must be a quoted code like "014" (YAML reads 014 as a number)')
    if not is_member_code(found := text(value, what)):
        raise StepError(f"{what} must be a 3-digit member code, got {found!r}")
    return found


def bank(value: object, what: str, env: ParseEnv) -> str:
    """A member code the scenario's network simulates."""
    if (found := code(value, what)) not in env.banks:
        raise StepError(f"{what}: {found} is not simulated (network.banks: {one_of(env.banks)})")
    return found


def slip(value: object, what: str, env: ParseEnv) -> str:
    """The name of a slip an earlier step saved."""
    if (name := text(value, what)) not in env.saved:
        saved = one_of(env.saved) or "none yet"
        raise StepError(f"{what}: no earlier step saves a slip {name!r} (saved: {saved})")
    return name


def save(value: object, what: str, env: ParseEnv) -> str:
    if not re.fullmatch(r"\w+", name := text(value, what)):
        raise StepError(f"{what} must be a name of letters, digits and _, got {name!r}")
    env.saved.add(name)
    return name


def number(value: object, what: str, env: ParseEnv | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StepError(f"{what} must be a number, got {describe(value)}")
    if value < 0:
        raise StepError(f"{what} must not be negative, got {value}")
    return float(value)


def positive(value: object, what: str, env: ParseEnv | None = None) -> float:
    if (found := number(value, what)) == 0:
        raise StepError(f"{what} must be more than 0")
    return found


def integer(value: object, what: str, env: ParseEnv | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StepError(f"{what} must be a whole number, at least 0, got {describe(value)}")
    return value


def flag(value: object, what: str, env: ParseEnv | None = None) -> bool:
    if not isinstance(value, bool):
        raise StepError(f"{what} must be true or false, got {describe(value)}")
    return value


def baht(value: object, what: str, env: ParseEnv | None = None) -> int:
    """'150.00' baht -> 15000 satang."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise StepError(f'{what} must be an amount in baht like "150.00", got {describe(value)}')
    try:
        return units.parse_baht(str(value))
    except ValueError as exc:
        raise StepError(f"{what}: {exc}") from None


def choice(options: Mapping[str, int]) -> Kind:
    def parse(value: object, what: str, env: ParseEnv) -> int:
        if (name := text(value, what).upper()) not in options:
            raise StepError(f"{what} must be one of {one_of(options)}, got {value!r}")
        return options[name]

    return parse


def named(options: Iterable[str]) -> Kind:
    """One of these names (upper case), as given."""
    known = frozenset(options)

    def parse(value: object, what: str, env: ParseEnv) -> str:
        if (name := text(value, what).upper()) not in known:
            raise StepError(f"{what} must be one of {one_of(known)}, got {value!r}")
        return name

    return parse


def listed(kind: Kind) -> Kind:
    """A list of `kind`, or one value standing for a list of one."""

    def parse(value: object, what: str, env: ParseEnv) -> list[Any]:
        return [kind(v, what, env) for v in (value if isinstance(value, list) else [value])]

    return parse


_PROXIES = {
    name: common_pb2.ProxyType.Value(f"PROXY_TYPE_{name}")
    for name in ("MSISDN", "NATID", "EWALLETID", "EMAIL", "BILLERID")
}


def proxy(value: object, what: str, env: ParseEnv | None = None) -> common_pb2.Proxy:
    """'MSISDN:0812345678', or a bare mobile number, national ID, e-wallet ID or e-mail."""
    given = text(value, what)
    kind, sep, rest = given.partition(":")
    if sep and kind.upper() in _PROXIES:
        return common_pb2.Proxy(type=_PROXIES[kind.upper()], value=rest)
    digits = given.replace("-", "").replace(" ", "")
    plain = digits.isascii() and digits.isdigit()
    by_length = {10: "MSISDN", 13: "NATID", 15: "EWALLETID"}
    guess = "EMAIL" if "@" in given else by_length.get(len(digits), "") if plain else ""
    if not guess or (guess == "MSISDN" and not digits.startswith("0")):
        kinds = one_of(_PROXIES)
        raise StepError(f"{what}: cannot tell what {given!r} is; write TYPE:VALUE ({kinds})")
    return common_pb2.Proxy(type=_PROXIES[guess], value=given)


def receiver(value: object, what: str, env: ParseEnv) -> V.ReceiverExpectation:
    """An account number, or TYPE:VALUE for a proxy."""
    given = text(value, what)
    if ":" in given:
        return V.ReceiverExpectation(proxy=proxy(given, what))
    return V.ReceiverExpectation(account=given)


_RELATIVE = re.compile(r"now\s*(?:([+-])\s*(\d+)\s*([smhd]))?")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
Moment = Callable[[datetime], datetime]  # now -> the instant meant


def moment(value: object, what: str, env: ParseEnv | None = None) -> Moment:
    """An ISO date-time (Bangkok unless it has an offset), or `now`, `now-10m`, `now+1h`."""
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        fixed = value if value.tzinfo else value.replace(tzinfo=units.BANGKOK)
        return lambda now: fixed
    if relative := _RELATIVE.fullmatch(text(value, what).strip()):
        sign, amount, unit = relative.groups()
        offset = timedelta(**{_UNITS[unit]: int(amount)}) if amount else timedelta(0)
        return lambda now: now - offset if sign == "-" else now + offset
    try:
        return moment(datetime.fromisoformat(str(value)), what)
    except ValueError:
        raise StepError(f"{what} must be an ISO date-time, or now, now-10m, now+1h") from None


def read(
    raw: object, what: str, schema: Mapping[str, Kind], env: ParseEnv, required: tuple[str, ...]
) -> dict[str, Any]:
    """A mapping with only the keys of `schema` (each value read by its kind), `required` ones."""
    if not isinstance(raw, dict):
        raise StepError(f"{what} must be a mapping, got {describe(raw)}")
    for key in raw:
        if key not in schema:
            raise StepError(f"unknown key {key!r} in {what}; expected one of {one_of(schema)}")
    for key in required:
        if key not in raw:
            raise StepError(f"{what} needs {key!r}")
    return {key: schema[key](value, f"{what}.{key}", env) for key, value in raw.items()}


def exactly_one(args: Mapping[str, Any], keys: tuple[str, ...], what: str) -> str:
    given = [k for k in keys if k in args]
    if len(given) != 1:
        raise StepError(f"{what} needs exactly one of {', '.join(keys)}")
    return given[0]


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
    fields = {_TRANSFER_FIELDS.get(key, key): value for key, value in a.items() if key != "save"}
    request = S.TransferRequest(**fields)
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
    down = S.Faults(refuse=True, visibility_delay_ms=before.visibility_delay_ms)
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
}
