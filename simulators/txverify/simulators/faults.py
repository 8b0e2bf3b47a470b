"""Fault injection into a simulated bank's IssuerInquiry: latency, errors, hangs, refusals."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import timedelta

import grpc

from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.v1 import simulator_pb2

_INJECTABLE = frozenset(
    s for s in grpc.StatusCode if s not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN)
)
MAX_DELAY_MS = 600_000  # ten minutes: anything longer is a hang, which has its own switch


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """The faults in force for one bank; the default is none."""

    latency_ms: int = 0
    jitter_ms: int = 0
    error_rate: float = 0.0
    error_status: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    hang: bool = False
    refuse: bool = False
    flap_down_s: int = 0
    flap_period_s: int = 0
    visibility_delay_ms: int = 0
    pending_ms: int = 0  # not a fault: how long new transfers stay pending (SLIP_PENDING)

    @property
    def affects_answers(self) -> bool:
        """Whether an inquiry must go through before_inquiry (the fast path skips it)."""
        return self.hang or self.latency_ms > 0 or self.jitter_ms > 0 or self.error_rate > 0

    @property
    def flapping(self) -> bool:
        return self.flap_down_s > 0

    @property
    def visibility_delay(self) -> timedelta:
        return timedelta(milliseconds=self.visibility_delay_ms)

    @property
    def pending_window(self) -> timedelta:
        return timedelta(milliseconds=self.pending_ms)

    @classmethod
    def from_proto(cls, faults: simulator_pb2.Faults) -> FaultSpec:
        """Validated faults, or INVALID_REQUEST naming the field."""
        name = faults.error_status.strip().upper() or "UNAVAILABLE"
        status = next((s for s in _INJECTABLE if s.name == name), None)
        checks = [
            ("error_status", status is not None, "a gRPC status name other than OK and UNKNOWN"),
            ("error_rate", 0.0 <= faults.error_rate <= 1.0, "between 0 and 1"),
            ("latency_ms", faults.latency_ms <= MAX_DELAY_MS, "at most 600000"),
            ("jitter_ms", faults.jitter_ms <= MAX_DELAY_MS, "at most 600000"),
            ("visibility_delay_ms", faults.visibility_delay_ms <= 86_400_000, "at most a day"),
            ("pending_ms", faults.pending_ms <= 86_400_000, "at most a day"),
            (
                "flap_period_s",
                faults.flap_down_s == 0 or faults.flap_period_s > faults.flap_down_s,
                "must be longer than flap_down_s",
            ),
        ]
        bad = [FieldViolation(f"faults.{f}", why) for f, ok, why in checks if not ok]
        if bad:
            raise ServiceError(
                Reason.INVALID_REQUEST,
                "; ".join(f"{v.field} {v.description}" for v in bad),
                metadata={"field": bad[0].field},
                violations=tuple(bad),
            )
        assert status is not None
        return cls(
            latency_ms=faults.latency_ms,
            jitter_ms=faults.jitter_ms,
            error_rate=faults.error_rate,
            error_status=status,
            hang=faults.hang,
            refuse=faults.refuse,
            flap_down_s=faults.flap_down_s,
            flap_period_s=faults.flap_period_s,
            visibility_delay_ms=faults.visibility_delay_ms,
            pending_ms=faults.pending_ms,
        )

    def to_proto(self) -> simulator_pb2.Faults:
        return simulator_pb2.Faults(
            latency_ms=self.latency_ms,
            jitter_ms=self.jitter_ms,
            error_rate=self.error_rate,
            error_status=self.error_status.name,
            hang=self.hang,
            refuse=self.refuse,
            flap_down_s=self.flap_down_s,
            flap_period_s=self.flap_period_s,
            visibility_delay_ms=self.visibility_delay_ms,
            pending_ms=self.pending_ms,
        )


class InjectedFault(Exception):
    """An error the faults say to return instead of an answer."""

    def __init__(self, status: grpc.StatusCode) -> None:
        super().__init__(f"injected fault: {status.name}")
        self.status = status


async def before_inquiry(spec: FaultSpec, rng: random.Random) -> None:
    """Apply latency, hang and error faults; returns when the inquiry may be answered."""
    if spec.hang:
        await asyncio.Event().wait()  # until the caller's deadline cancels the RPC
    delay_ms = spec.latency_ms + (rng.uniform(0, spec.jitter_ms) if spec.jitter_ms else 0)
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    if spec.error_rate and rng.random() < spec.error_rate:
        raise InjectedFault(spec.error_status)
