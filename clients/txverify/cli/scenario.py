"""`txverify scenario run`: scripted journeys through a network, each step checked.

A scenario file (YAML) describes a network and steps; every step is checked
against its `expect` (without one it must simply succeed). Each file runs on a
fresh in-process network (simulated banks and a hub on loopback port 0) unless
`--hub HOST:PORT --control HOST:PORT` name a running one (dev mode, or mTLS with
`--certs DIR`: each caller presents its own certificate); after a
failed step the rest of that scenario is skipped. Files are checked whole
before anything runs: an unknown key or step type, a bad value or a slip
used before it is saved stops the run (exit 2) naming the file, step and line.
scenarios/README.md has a tour; the schema:

    name: Issuer outage and recovery        # required
    description: what it shows               # optional
    network:                                 # ignored with --hub
      banks: ["002", "014"]                  # simulated members, quoted (900 = the
                                             # e-wallet); the first verifies by default
      transactions: 50                       # seeded per bank, about 5% of them expired
      seed: 1
      retention_days: 7
      hub: {issuer_timeout: 5.0, breaker_failures: 5, breaker_failing_seconds: 1.0,
            breaker_cooldown: 5.0, rate_limit_rps: 0, rate_limit_burst: 100,
            max_in_flight: 200}
    steps:
      - TYPE: ARGS
        expect: {...}                        # optional
        name: a label for the report         # optional

Step types and their ARGS:

    transfer  bank, amount ("150.00" baht), to (a proxy: 0812345678 or TYPE:VALUE with
              TYPE MSISDN, NATID, EWALLETID, EMAIL, BILLERID) or to_account, to_bank,
              fee, from_account, merchant, ref1, ref2, ref3, save (a name for its slip)
    pick      save, bank, state (VISIBLE, NOT_YET_VISIBLE, EXPIRED; VISIBLE by default),
              status (COMPLETED, REVERSED), skip: n -- keeps a slip the bank already has
    verify    slip (a saved name; by_ref: true sends bank and transRef instead of the QR),
              or qr (QR text), or bank and ref; as (the caller's member code), reference,
              request_id, timeout (seconds, 5), expect: {amount, amount_at_least,
              amount_at_most, receiver (account or TYPE:VALUE, or a list), receiving_bank,
              since, until (ISO date-time, Bangkok unless an offset; or now, now-10m, now+1h)}
    member    suspend / resume / terminate: CODE (with reason); register: {code, name,
              kind (BANK, NON_BANK), issuer_endpoint or issuer_endpoint_of: CODE (that
              simulated bank's issuer address), roles: [REQUESTER, ISSUER]};
              subscribe / unsubscribe: {code, role}. Called as the operator.
    faults    bank, then any Faults field (latency_ms, jitter_ms, error_rate, error_status,
              hang, refuse, flap_down_s, flap_period_s, visibility_delay_ms): those change,
              the others stay; clear: true starts from none
    restart   bank, down (seconds closed, 0): close its issuer port and open it again
    reverse   slip, or bank and ref
    wait      SECONDS
    repeat    times, step (a step), expect: each run must meet expect

`expect` (transfer, verify, member, faults, reverse):

    status: OK or a gRPC status name        reason: the ErrorInfo reason, e.g. SLIP_NOT_FOUND
    metadata: {cause: circuit_open}         ErrorInfo metadata
    fields: {transaction.amount.satang: 15000, checks.0.outcome: PASS}
            dotted paths into the answer (lists by index, enums by name with or without
            their prefix); "${s1.trans_ref}" stands for a saved slip's trans_ref, qr_text,
            bank or amount_satang
    verdict: VALID, MISMATCH, DUPLICATE, INCONCLUSIVE     (verify only, like the next two)
    duplicate_count, duplicate_count_in_scope: n         replayed: true or false
    latency_ms_below, latency_ms_above: milliseconds

A reason or metadata without a status means any error that carries them.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from txverify.cli.scenario_steps import (
    STEP_TYPES,
    Args,
    Context,
    Kind,
    Outcome,
    ParseEnv,
    StepError,
    code,
    describe,
    flag,
    integer,
    listed,
    named,
    number,
    one_of,
    positive,
    read,
    short,
    slip,
    text,
)
from txverify.client.channels import control_aio_channel, hub_aio_channel
from txverify.errors import REASONS, Reason, details_of
from txverify.v1 import verification_pb2

KINDS = (*STEP_TYPES, "repeat")

# --- expect ---------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\{(\w+)\.(trans_ref|qr_text|bank|amount_satang)\}")


@dataclass(frozen=True, slots=True)
class FieldCheck:
    """One `fields` entry: a dotted path into the answer and the value it must hold there."""

    path: str
    steps: tuple[str | int, ...]
    leaf: FieldDescriptor
    expected: object  # int, float, bool, str, an enum value's number, or "${slip.attr}"

    @classmethod
    def parse(
        cls, answer: type[Message], path: str, expected: object, env: ParseEnv, what: str = ""
    ) -> FieldCheck:
        what, steps = what or f"expect.fields: {path}", list[str | int]()
        message: Descriptor | None = answer.DESCRIPTOR  # type: ignore[assignment]
        leaf: FieldDescriptor | None = None
        for part in path.split("."):
            if leaf is not None and leaf.is_repeated and isinstance(steps[-1], str):
                if not re.fullmatch(r"-?\d+", part):
                    raise StepError(f"{what}: {leaf.name} is a list; index it, e.g. {leaf.name}.0")
                steps.append(int(part))
                continue
            if message is None or (leaf := message.fields_by_name.get(part)) is None:
                fields = one_of(message.fields_by_name) if message else "none"
                raise StepError(f"{what}: no field {part!r} here (fields: {fields})")
            steps.append(part)
            message = leaf.message_type
        assert leaf is not None
        if leaf.is_repeated and isinstance(steps[-1], str):
            raise StepError(f"{what} is a list; index it, e.g. {path}.0")
        if message is not None:
            inside = one_of(message.fields_by_name)
            raise StepError(f"{what} is a {message.name}; name a field in it: {inside}")
        return cls(path, tuple(steps), leaf, _expected(leaf, what, expected, env))

    def check(self, answer: Message, ctx: Context) -> str:
        """What is wrong at the path ("" when the value is as expected)."""
        value: Any = answer
        for step in self.steps:
            if isinstance(step, int) and not -len(value) <= step < len(value):
                return f"{self.path}: no element {step} ({len(value)} present)"
            value = value[step] if isinstance(step, int) else getattr(value, step)
        expected = self.expected
        if isinstance(expected, str) and (ref := _REFERENCE.fullmatch(expected)):
            expected = getattr(ctx.slips[ref.group(1)], ref.group(2))
        if (enum := self.leaf.enum_type) is not None and value != expected:
            assert isinstance(expected, int)
            return f"{self.path}: expected {short(enum, expected)}, got {short(enum, value)}"
        same = value == expected
        if isinstance(expected, float):
            same = math.isclose(value, expected, rel_tol=1e-9)
        return "" if same else f"{self.path}: expected {expected!r}, got {value!r}"


def _expected(leaf: FieldDescriptor, what: str, value: object, env: ParseEnv) -> object:
    if isinstance(value, str) and (ref := _REFERENCE.fullmatch(value)):
        slip(ref.group(1), what, env)
        return value
    if (enum := leaf.enum_type) is not None:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        names = {v.name: v.number for v in enum.values}
        names |= {short(enum, v.number): v.number for v in enum.values}
        if text(value, what).upper() not in names:
            options = one_of(short(enum, v.number) for v in enum.values[1:])
            raise StepError(f"{what} must be one of {options}, got {value!r}")
        return names[str(value).upper()]
    kinds: dict[int, Kind] = {
        FieldDescriptor.CPPTYPE_BOOL: flag,
        FieldDescriptor.CPPTYPE_STRING: text,
        FieldDescriptor.CPPTYPE_DOUBLE: _real,
        FieldDescriptor.CPPTYPE_FLOAT: _real,
    }
    return kinds.get(leaf.cpp_type, _whole)(value, what, env)


def _real(value: object, what: str, env: ParseEnv) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StepError(f"{what} must be a number, got {describe(value)}")
    return float(value)


def _whole(value: object, what: str, env: ParseEnv) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StepError(f"{what} must be a whole number, got {describe(value)}")
    return value


def _mapping(value: object, what: str, env: ParseEnv) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise StepError(f"{what} must be a mapping, got {describe(value)}")
    return value


def _as_is(value: object, what: str, env: ParseEnv) -> object:
    return value


_VERIFY_ONLY = {
    "verdict": "verdict",
    "duplicate_count": "duplicate.previous_count",
    "duplicate_count_in_scope": "duplicate.previous_count_in_scope",
    "replayed": "replayed",
}
_EXPECT: dict[str, Kind] = {
    "status": named(s.name for s in grpc.StatusCode),
    "reason": named(r.value for r in Reason),
    "metadata": _mapping,
    "fields": _mapping,
    "latency_ms_below": positive,
    "latency_ms_above": number,
    **dict.fromkeys(_VERIFY_ONLY, _as_is),  # read as fields
}


@dataclass(frozen=True, slots=True)
class Assertions:
    """A step's `expect`. Without one, a step must simply succeed (status OK)."""

    status: str = "OK"  # "" with a reason: any error with that reason
    reason: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    fields: tuple[FieldCheck, ...] = ()
    latency_ms_below: float | None = None
    latency_ms_above: float | None = None

    @classmethod
    def parse(cls, raw: object, answer: type[Message], env: ParseEnv) -> Assertions:
        spec = read(raw, "expect", _EXPECT, env, ())
        checks = {str(p): (v, "") for p, v in spec.get("fields", {}).items()}
        for key, path in _VERIFY_ONLY.items():
            if key in spec and answer is not verification_pb2.VerifyResponse:
                raise StepError(f"expect.{key} is for verify steps (their answer has it)")
            checks |= {path: (spec[key], f"expect.{key}")} if key in spec else {}
        status = spec.get("status", "")
        failing = status not in ("", "OK") or "reason" in spec or "metadata" in spec
        if status == "OK" and failing:
            raise StepError("expect: status OK cannot go with reason or metadata (errors' parts)")
        if failing and checks:
            raise StepError("expect: fields, verdict, duplicates and replayed need an answer")
        reason, metadata = spec.get("reason", ""), spec.get("metadata", {})
        if status and reason and REASONS[Reason(reason)].status.name != status:
            usual = REASONS[Reason(reason)].status.name
            raise StepError(f"expect: reason {reason} comes with status {usual}, not {status}")
        return cls(
            status=status or ("" if failing else "OK"),
            reason=reason,
            metadata=tuple(
                (text(k, "metadata"), text(v, f"metadata.{k}")) for k, v in metadata.items()
            ),
            fields=tuple(FieldCheck.parse(answer, p, v, env, w) for p, (v, w) in checks.items()),
            latency_ms_below=spec.get("latency_ms_below"),
            latency_ms_above=spec.get("latency_ms_above"),
        )

    def check(self, outcome: Outcome, ctx: Context) -> list[str]:
        """Everything about `outcome` that is not as expected; empty when all is."""
        if outcome.problem:
            return [outcome.problem]
        problems, error = [], outcome.error
        wrong_status = self.status and self.status != outcome.status
        if wrong_status or (self.reason and (error is None or error.reason != self.reason)):
            wanted = " ".join(filter(None, (self.status or "an error", self.reason)))
            problems.append(f"expected {wanted}, got {outcome.describe()}")
        for key, value in self.metadata:
            if error is not None and (actual := error.metadata.get(key, "")) != value:
                problems.append(f"metadata {key}: expected {value!r}, got {actual!r}")
        if outcome.response is not None:
            problems += filter(None, (c.check(outcome.response, ctx) for c in self.fields))
        ms = outcome.latency_ms
        if self.latency_ms_below is not None and ms >= self.latency_ms_below:
            problems.append(f"took {ms:.0f} ms, expected below {self.latency_ms_below:g} ms")
        if self.latency_ms_above is not None and ms <= self.latency_ms_above:
            problems.append(f"took {ms:.0f} ms, expected above {self.latency_ms_above:g} ms")
        return problems


# --- steps ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One entry of `steps`: a type with its arguments, and what its outcome must be."""

    kind: str
    args: Args
    label: str
    expect: Assertions = field(default_factory=Assertions)
    repeated: Step | None = None  # the step a repeat runs

    async def run(self, ctx: Context) -> tuple[list[str], str]:
        """What was not as expected (nothing when it passed), and what happened."""
        if self.repeated is not None:
            times, summary = self.args["times"], ""
            for run in range(1, times + 1):
                problems, summary = await self.repeated.run(ctx)
                if problems:
                    return [f"run {run} of {times}: {p}" for p in problems], summary
            return [], f"{times} runs, the last: {summary}"
        outcome = await STEP_TYPES[self.kind].run(ctx, self.args)
        return self.expect.check(outcome, ctx), outcome.describe()


def parse_step(raw: object, env: ParseEnv) -> Step:
    """One entry of `steps`: {TYPE: ARGS}, plus `expect` and `name` if wanted."""
    if not isinstance(raw, dict):
        raise StepError(f"a step is a mapping like {{verify: {{...}}}}, got {describe(raw)}")
    kinds = [k for k in raw if k in KINDS]
    others = [k for k in raw if k not in KINDS and k not in ("expect", "name")]
    if not kinds:
        unknown = f"unknown step type {others[0]!r}" if others else "no step type"
        raise StepError(f"{unknown}; expected one of {one_of(KINDS)}")
    if len(kinds) > 1 or others:
        extra = (kinds[1:] + others)[0]
        raise StepError(f"{extra!r} beside {kinds[0]!r}: a step has one type, expect and name")
    kind, args = kinds[0], raw[kinds[0]]
    label = text(raw.get("name", ""), "name") or f"{kind} {brief(args)}"
    if kind == "repeat":
        return _repeat(args, raw.get("expect"), env, label)
    step_type = STEP_TYPES[kind]
    parsed = read(
        {"seconds": args} if kind == "wait" else args,
        kind,
        step_type.schema,
        env,
        step_type.required,
    )
    step_type.rules(parsed)
    answer = step_type.answer(parsed)
    if "expect" not in raw:
        return Step(kind, parsed, label)
    if answer is None:
        raise StepError(f"{kind} takes no expect: it fails by itself when it cannot do its job")
    return Step(kind, parsed, label, Assertions.parse(raw["expect"], answer, env))


def _repeat(raw: object, beside: object, env: ParseEnv, label: str) -> Step:
    schema: dict[str, Kind] = {"times": integer, "step": _mapping, "expect": _as_is}
    spec = read(raw, "repeat", schema, env, ("times", "step"))
    inner = spec["step"]
    given = [e for e in (beside, spec.get("expect"), inner.get("expect")) if e is not None]
    if len(given) > 1:
        raise StepError("repeat: give expect once (beside repeat, inside it, or in its step)")
    if spec["times"] < 1 or "repeat" in inner:
        raise StepError("repeat: times is at least 1, and the step is not another repeat")
    repeated = parse_step(inner | ({"expect": given[0]} if given else {}), env)
    return Step("repeat", {"times": spec["times"]}, label, repeated=repeated)


def brief(value: object, top: bool = True) -> str:
    """Arguments as a short label: `slip=s1 as=002 expect={amount=150.00}`."""
    if isinstance(value, dict):
        inner = " ".join(f"{k}={brief(v, False)}" for k, v in value.items())
        return inner if top else "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(brief(v, False) for v in value) + "]"
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    return shown if len(shown) <= 28 else shown[:25] + "..."


# --- scenario files -------------------------------------------------------------------------


DEFAULT_BANKS = ("002", "014")


class ScenarioError(ValueError):
    """A scenario file cannot run as written; the message names the file (and step)."""


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """The `network` section: what a fresh in-process network is made of."""

    banks: tuple[str, ...] = DEFAULT_BANKS
    transactions: int = 50
    seed: int = 1
    retention_days: int = 7
    issuer_timeout: float = 5.0
    breaker_failures: int = 5
    breaker_cooldown: float = 5.0
    breaker_failing_seconds: float = 1.0
    rate_limit_rps: float = 0.0
    rate_limit_burst: int = 100
    max_in_flight: int = 200

    @classmethod
    def parse(cls, raw: object) -> NetworkSpec:
        env = ParseEnv(())
        hub: dict[str, Kind] = {
            "issuer_timeout": positive,
            "breaker_failures": integer,
            "breaker_cooldown": positive,
            "breaker_failing_seconds": number,
            "rate_limit_rps": number,
            "rate_limit_burst": integer,
            "max_in_flight": integer,
        }
        schema: dict[str, Kind] = {
            "banks": listed(code),
            "transactions": integer,
            "seed": integer,
            "retention_days": integer,
            "hub": lambda v, w, e: read(v, w, hub, e, ()),
        }
        spec = read(raw, "network", schema, env, ())
        settings = {**spec.pop("hub", {}), **spec}
        banks = tuple(settings.pop("banks", DEFAULT_BANKS))
        if not banks or len(set(banks)) != len(banks):
            raise StepError("network.banks: at least one, each once")
        for key in ("retention_days", "breaker_failures", "rate_limit_burst", "max_in_flight"):
            if settings.get(key) == 0:
                raise StepError(f"network: {key} must be at least 1")
        return cls(banks, **settings)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A checked scenario file, ready to run."""

    path: Path
    name: str
    description: str
    network: NetworkSpec
    steps: tuple[Step, ...]


def load_scenario(path: Path) -> Scenario:
    """Read and check a whole scenario file; ScenarioError names the file, step and line."""
    try:
        source = path.read_text(encoding="utf-8")
        root = yaml.compose(source, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(source)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    _no_twice_given_keys(root, path)
    schema: dict[str, Kind] = {"name": text, "description": text}
    schema |= {"network": _as_is, "steps": _as_is}
    try:
        top = read(raw, "the scenario", schema, ParseEnv(()), ("name", "steps"))
        network = NetworkSpec.parse(top.get("network", {}))
    except StepError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    if not isinstance(top["steps"], list) or not top["steps"]:
        raise ScenarioError(f"{path}: steps must be a list of at least one step")
    env, steps, lines = ParseEnv(network.banks), [], _step_lines(root)
    for index, raw_step in enumerate(top["steps"]):
        try:
            steps.append(parse_step(raw_step, env))
        except StepError as exc:
            line = f" (line {lines[index]})" if index < len(lines) else ""
            raise ScenarioError(f"{path}: step {index + 1}{line}: {exc}") from None
    return Scenario(path, top["name"], top.get("description", ""), network, tuple(steps))


def _step_lines(root: yaml.Node | None) -> list[int]:
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "steps" and isinstance(value, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in value.value]
    return []


def _no_twice_given_keys(node: yaml.Node | None, path: Path) -> None:
    """YAML keeps the last of two equal keys silently; a scenario means one of them."""
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key, value in node.value:
            if key.value in seen:
                line = key.start_mark.line + 1
                raise ScenarioError(f"{path}: line {line}: key {key.value!r} given twice")
            seen.add(key.value)
            _no_twice_given_keys(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _no_twice_given_keys(item, path)


def scenario_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, directories replaced by the *.yaml / *.yml files in them."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        else:
            found.append(path)
    return found


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A network to run against: the hub and the simulator's control port (host:port),
    and under mTLS the certificate directory every caller presents its certificate from
    (members theirs, the operator and the control API's clients the operator's)."""

    hub: str
    control: str
    certs: Path | None = None


class HubChannels:
    """Channels to the hub by identity: under mTLS one per member or operator, presenting
    its certificate; in dev mode one for all (the header names the caller)."""

    def __init__(self, hub: str, certs: Path | None) -> None:
        self.hub, self.certs = hub, certs
        self._open: dict[str, grpc.aio.Channel] = {}

    def __call__(self, identity: str) -> grpc.aio.Channel:
        key = identity if self.certs is not None else ""
        if key not in self._open:
            self._open[key] = hub_aio_channel(self.hub, certs=self.certs, identity=identity)
        return self._open[key]

    async def close(self) -> None:
        for channel in self._open.values():
            await channel.close()
        self._open.clear()


@dataclass(frozen=True, slots=True)
class StepResult:
    number: int
    label: str
    status: str  # passed, failed, error (the step could not run), skipped
    summary: str = ""
    problems: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: Scenario
    steps: tuple[StepResult, ...]
    seconds: float
    error: str = ""  # the network could not be started or reached

    @property
    def passed(self) -> bool:
        return not self.error and all(s.status == "passed" for s in self.steps)


@contextlib.asynccontextmanager
async def fresh_network(spec: NetworkSpec) -> AsyncIterator[Target]:
    """Simulated banks and a hub in this process, on loopback port 0, as `txverify up` runs them."""
    # Imported here: clients depend on server and simulators only to start them.
    from txverify.hub.app import start_hub
    from txverify.hub.registry import Member, MemberKind, with_default_roles
    from txverify.hub.resilience.breaker import BreakerSettings
    from txverify.hub.resilience.ratelimit import RateLimit
    from txverify.hub.settings import HubSettings
    from txverify.simulators.server import start_simulator
    from txverify.simulators.settings import SimulatorSettings

    sim = await start_simulator(
        SimulatorSettings(
            codes=spec.banks,
            transactions=spec.transactions,
            seed=spec.seed,
            retention_days=spec.retention_days,
        )
    )
    try:
        members = tuple(
            with_default_roles(
                Member(
                    code=code,
                    name=node.bank.profile.name,
                    kind=MemberKind(node.bank.profile.kind.value),
                    issuer_endpoint=node.address,
                )
            )
            for code, node in sim.nodes.items()
        )
        rps, burst = spec.rate_limit_rps, spec.rate_limit_burst
        hub = await start_hub(
            HubSettings(
                port=0,
                members=members,
                issuer_timeout=spec.issuer_timeout,
                breaker=BreakerSettings(
                    spec.breaker_failures, spec.breaker_cooldown, spec.breaker_failing_seconds
                ),
                rate_limit=RateLimit(rps, burst) if rps else None,
                max_in_flight_per_issuer=spec.max_in_flight,
            )
        )
        try:
            yield Target(f"127.0.0.1:{hub.port}", sim.control_address)
        finally:
            await hub.stop(grace=0)
    finally:
        await sim.stop()


async def run_scenario(scenario: Scenario, target: Target | None = None) -> ScenarioResult:
    """Run every step in order (the rest skipped after a failure) on `target`, else on a
    fresh in-process network started for this scenario and stopped after it."""
    started, results = time.perf_counter(), list[StepResult]()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if target is None:
                target = await stack.enter_async_context(fresh_network(scenario.network))
            hub = HubChannels(target.hub, target.certs)
            stack.push_async_callback(hub.close)
            control = await stack.enter_async_context(
                control_aio_channel(target.control, certs=target.certs)
            )
            ctx = Context(
                hub,
                control,
                default_member=scenario.network.banks[0],
                mtls=target.certs is not None,
            )
            for number, step in enumerate(scenario.steps, 1):
                if any(r.status != "passed" for r in results):
                    results.append(StepResult(number, step.label, "skipped"))
                else:
                    results.append(await _run_step(number, step, ctx))
    except (OSError, ValueError, RuntimeError, grpc.RpcError) as exc:
        error = f"network: {type(exc).__name__}: {exc}"
        ran = len(results)
        results += [
            StepResult(n, s.label, "skipped") for n, s in enumerate(scenario.steps[ran:], ran + 1)
        ]
        return ScenarioResult(scenario, tuple(results), time.perf_counter() - started, error)
    return ScenarioResult(scenario, tuple(results), time.perf_counter() - started)


async def _run_step(number: int, step: Step, ctx: Context) -> StepResult:
    started = time.perf_counter()
    try:
        problems, summary = await step.run(ctx)
    except grpc.aio.AioRpcError as error:  # a control call a step needed, e.g. while picking
        d = details_of(error)
        problems, summary = [f"{d.status.name} {d.reason}: {d.message}"], "could not run"
        return StepResult(
            number, step.label, "error", summary, tuple(problems), time.perf_counter() - started
        )
    except Exception as exc:  # report it as this step's, and go on with the next scenario
        problem = f"{type(exc).__name__}: {exc}"
        return StepResult(
            number, step.label, "error", "could not run", (problem,), time.perf_counter() - started
        )
    status = "failed" if problems else "passed"
    return StepResult(
        number, step.label, status, summary, tuple(problems), time.perf_counter() - started
    )
