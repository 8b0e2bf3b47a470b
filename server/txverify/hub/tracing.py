"""W3C trace context: a caller's `traceparent` (and `tracestate`) read, and passed on to issuers.

https://www.w3.org/TR/trace-context/, version 00 only. A value that does not
parse is ignored, never an error: tracing must not fail a verification. The
hub has no span of its own unless OpenTelemetry is on (txverify.hub.otel): it
then passes on the caller's trace id and flags with a new parent id, 16 random
hex digits, standing for the hub's part of the trace.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

from txverify.wire import TRACEPARENT_HEADER, TRACESTATE_HEADER

# version 00: "00-" 32 hex trace id "-" 16 hex parent id "-" 2 hex flags, lowercase.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
# tracestate: up to 32 comma-separated key=value members (empty ones allowed), OWS around.
_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(rf"[ \t]*(?:{_KEY}={_VALUE})?[ \t]*")
# What the hub keeps of a tracestate: the spec asks for at least 512 characters; a
# longer one is dropped whole rather than cut (a cut could split a member).
MAX_TRACESTATE = 512
MAX_TRACESTATE_MEMBERS = 32

_random = random.Random()  # seeded from os.urandom; a forked worker reseeds (below)
os.register_at_fork(after_in_child=_random.seed)


def new_span_id() -> str:
    """16 random hex digits, not all zero: the hub's span id in a passed-on traceparent.

    Unique, not secret: a Mersenne Twister draw, as router.new_id is."""
    while True:
        bits = _random.getrandbits(64)
        if bits:
            return f"{bits:016x}"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One span of a W3C trace: its trace id, its span (parent) id, flags and tracestate."""

    trace_id: str  # 32 lowercase hex digits, not all zero
    span_id: str  # 16 lowercase hex digits, not all zero
    flags: str  # 2 lowercase hex digits (01: sampled)
    state: str = ""  # the caller's tracestate, checked; "" when none

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self, span_id: str | None = None) -> TraceContext:
        """The same trace and flags under another span: the hub's, by default a new one."""
        return TraceContext(self.trace_id, span_id or new_span_id(), self.flags, self.state)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The gRPC metadata that carries this span to the next hop."""
        if self.state:
            return ((TRACEPARENT_HEADER, self.traceparent), (TRACESTATE_HEADER, self.state))
        return ((TRACEPARENT_HEADER, self.traceparent),)


def parse(traceparent: object, tracestate: object = None) -> TraceContext | None:
    """The caller's span from its headers, or None when `traceparent` is absent or not a
    valid version-00 value. A tracestate that is not valid (or over MAX_TRACESTATE
    characters or MAX_TRACESTATE_MEMBERS members) is dropped; the traceparent stays."""
    if not isinstance(traceparent, str):
        return None
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return None
    trace_id, parent_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    state = tracestate if isinstance(tracestate, str) and valid_tracestate(tracestate) else ""
    return TraceContext(trace_id, parent_id, flags, state.strip(" \t") if "=" in state else "")


def valid_tracestate(value: str) -> bool:
    """Whether `value` is a tracestate the hub may pass on (W3C list syntax, bounded)."""
    if not value or len(value) > MAX_TRACESTATE:
        return False
    members = value.split(",")
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return False
    return all(_MEMBER.fullmatch(member) for member in members)
