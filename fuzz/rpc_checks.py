"""What the registry and audit targets check of every answer, who calls, and the counts.

A refusal must be documented: a txverify reason in ErrorInfo, with the status
code that reason has (txverify.errors.REASONS), a BadRequest naming the field for
INVALID_ARGUMENT, and a message and trailers small enough for any client to read
(gRPC drops trailers over 16 KB, and a client takes 8 KB by default: a message
that quotes 100 KB of a request back reaches the caller as RESOURCE_EXHAUSTED
with nothing to read).

Counts: libFuzzer counts inputs, not the RPCs in them, and exits without running
Python's exit handlers; so a target writes its counts of RPCs by status, as JSON,
to $TXVERIFY_FUZZ_COUNTS at most every half second (fuzz/run.py prints them). The
last half second may be missing from them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from offline_hub import LOOPBACK_PEER, OPERATOR, REMOTE_PEER, Outcome
from txverify.errors import REASONS, Reason, details_from_metadata
from txverify.hub.identity import IdentityMode
from txverify.wire import MEMBER_HEADER

MAX_MESSAGE = 1000  # characters of a status message
MAX_TRAILERS = 4096  # bytes of trailing metadata (the serialized google.rpc.Status)
COUNTS_ENV = "TXVERIFY_FUZZ_COUNTS"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sends an RPC, and how the hub learns it."""

    name: str
    operator: bool  # may use MemberRegistry and read every audit record
    member: str = ""  # the member code it reads its own audit as; "" = none
    mode: IdentityMode = IdentityMode.DEV
    header: str = ""  # x-member-id; "" = none
    common_name: str = ""  # the certificate's (mTLS)
    peer: str = LOOPBACK_PEER

    def options(self) -> dict[str, object]:
        """Keyword arguments of OfflineNetwork.registry / query_audit."""
        return {
            "metadata": [(MEMBER_HEADER, self.header)] if self.header else [],
            "mode": self.mode,
            "peer": self.peer,
            "common_names": [self.common_name.encode()] if self.common_name else [],
        }


def callers(member_codes: tuple[str, ...]) -> tuple[Caller, ...]:
    """Eight callers: the operator (dev, mTLS), members (active, one mTLS), a suspended
    one, a stranger, no identity at all, and a remote caller claiming to be the operator."""
    active, tls_member, suspended = member_codes
    return (
        Caller("operator", True, header=OPERATOR),
        Caller(
            "operator-tls",
            True,
            mode=IdentityMode.TLS,
            common_name=OPERATOR,
            peer=REMOTE_PEER,
        ),
        Caller(active, False, member=active, header=active),
        Caller(
            f"{tls_member}-tls",
            False,
            member=tls_member,
            mode=IdentityMode.TLS,
            common_name=tls_member,
            peer=REMOTE_PEER,
        ),
        Caller(suspended, False, member=suspended, header=suspended),
        Caller("999", False, header="999"),
        Caller("nobody", False),
        Caller("remote", False, header=OPERATOR, peer=REMOTE_PEER),
    )


def check_refusal(rpc: str, outcome: Outcome) -> None:
    """A documented refusal (see the module's docstring)."""
    details = details_from_metadata(outcome.code, outcome.details, outcome.trailing)
    seen = f"{rpc} {outcome.code.name} {details.reason!r}: {outcome.details[:300]!r}"
    assert outcome.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), seen
    assert details.reason in Reason.__members__, f"no ErrorInfo reason: {seen}"
    assert REASONS[Reason(details.reason)].status == outcome.code, seen
    if outcome.code is grpc.StatusCode.INVALID_ARGUMENT:
        assert details.violations, f"no BadRequest field violation: {seen}"
        assert all(v.field for v in details.violations), seen
    assert len(outcome.details) <= MAX_MESSAGE, f"a message of {len(outcome.details)}: {seen}"
    size = sum(len(key) + len(value) for key, value in outcome.trailing)
    assert size <= MAX_TRAILERS, f"trailers of {size} bytes: {seen}"


class RpcCounts:
    """RPCs tried, by method and status, written to $TXVERIFY_FUZZ_COUNTS now and then."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}
        given = os.environ.get(COUNTS_ENV)
        self._path = Path(given) if given else None
        self._next_write = 0.0

    def add(self, rpc: str, code: grpc.StatusCode | None) -> None:
        """One RPC answered `code`; None: bytes that do not parse as its request, which
        gRPC refuses before the hub (counted as UNPARSED)."""
        by_status = self.counts.setdefault(rpc, {})
        name = "UNPARSED" if code is None else code.name
        by_status[name] = by_status.get(name, 0) + 1
        if self._path is not None and (now := time.monotonic()) >= self._next_write:
            self._next_write = now + 0.5
            scratch = self._path.with_suffix(".tmp")
            scratch.write_text(json.dumps(self.counts, sort_keys=True))
            scratch.replace(self._path)


def read_counts(path: Path) -> dict[str, dict[str, int]]:
    """What a target wrote (fuzz/run.py); {} when it wrote nothing."""
    try:
        found: dict[str, dict[str, int]] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found
