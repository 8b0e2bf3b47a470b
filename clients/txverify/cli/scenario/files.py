"""Scenario files: a step parsed from YAML, the network section, a file checked whole (every
problem names the file, step and line) before anything runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from txverify.cli.scenario.expect import Assertions
from txverify.cli.scenario.steps import STEP_TYPES, Args, Context
from txverify.cli.scenario.values import (
    Kind,
    ParseEnv,
    StepError,
    as_is,
    code,
    describe,
    integer,
    listed,
    mapping,
    number,
    one_of,
    positive,
    read,
    text,
)

KINDS = (*STEP_TYPES, "repeat")

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
    schema: dict[str, Kind] = {"times": integer, "step": mapping, "expect": as_is}
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
    retention_days: int | None = None  # None: each bank's own (30 or 7 days)
    issuer_timeout: float = 5.0
    breaker_failures: int = 5
    breaker_cooldown: float = 5.0
    breaker_failing_seconds: float = 1.0
    rate_limit_rps: float = 0.0
    rate_limit_burst: int = 100
    not_found_cost: int | None = None  # None: the hub's default (HubSettings)
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
            "not_found_cost": integer,
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
        for key in (
            "retention_days",
            "breaker_failures",
            "rate_limit_burst",
            "not_found_cost",
            "max_in_flight",
        ):
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
    schema |= {"network": as_is, "steps": as_is}
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
