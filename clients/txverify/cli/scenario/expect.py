"""`expect`: what a step's outcome must be (status, reason, metadata, fields, verdict, latency)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from txverify.cli.scenario.steps import Context, Outcome, short
from txverify.cli.scenario.values import (
    Kind,
    ParseEnv,
    StepError,
    as_is,
    describe,
    flag,
    mapping,
    named,
    number,
    one_of,
    positive,
    read,
    slip,
    text,
)
from txverify.errors import REASONS, Reason
from txverify.v1 import verification_pb2

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


_VERIFY_ONLY = {
    "verdict": "verdict",
    "duplicate_count": "duplicate.previous_count",
    "duplicate_count_in_scope": "duplicate.previous_count_in_scope",
    "replayed": "replayed",
}
_EXPECT: dict[str, Kind] = {
    "status": named(s.name for s in grpc.StatusCode),
    "reason": named(r.value for r in Reason),
    "metadata": mapping,
    "fields": mapping,
    "latency_ms_below": positive,
    "latency_ms_above": number,
    **dict.fromkeys(_VERIFY_ONLY, as_is),  # read as fields
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
