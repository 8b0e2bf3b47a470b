"""Per-issuer health on the hub: `txverify.v1.IssuerService/CODE` in grpc.health.v1.

Every member the registry lists (but a terminated one) has a status from the
hub's start, added and changed as members change:

- SERVING: the hub forwards inquiries about this member's slips: it is active,
  subscribed as ISSUER, has an endpoint, and its circuit is CLOSED or HALF_OPEN
  (after the cooldown the next inquiry goes through as the probe; a success
  closes the circuit, a failure opens it again);
- NOT_SERVING: the hub refuses those inquiries now: the circuit is OPEN, or the
  member is suspended or does not offer the service as issuer;
- no status (Check answers NOT_FOUND, Watch SERVICE_UNKNOWN): not a member, or
  terminated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from txverify.hub.membership import Membership
from txverify.hub.registry import MemberStatus, Role
from txverify.hub.resilience.breaker import CircuitState
from txverify.wire import issuer_health_name

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
# A loop's timers may fire a little early by the breaker's clock (uvloop counts in ms).
_LOOK_LATER = 0.01


class HubHealth(HealthServicer):
    """grpc.health.v1 as grpc's asyncio servicer serves it, plus `clear` to drop a name.

    Its own small state rather than grpc's private attributes: Check answers a
    known name's status or NOT_FOUND; Watch sends the status whenever it
    changes (SERVICE_UNKNOWN for a name without one); after
    `enter_graceful_shutdown` every name says NOT_SERVING for good.
    """

    def __init__(self) -> None:
        super().__init__()
        self._status: dict[str, int] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._shutting_down = False

    async def Check(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ],
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ],
    ) -> None:
        last = None
        while True:
            status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                # Not under the lock: a watcher that reads slowly must not hold up
                # the changes (nor the shutdown).
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            async with self._changed:
                if self._status.get(request.service, SERVICE_UNKNOWN) == last:
                    await self._changed.wait()

    async def _put(self, service: str, status: int | None) -> None:
        async with self._changed:
            if status is None:
                self._status.pop(service, None)
            else:
                self._status[service] = status
            self._changed.notify_all()

    async def set(self, service: str, status: int) -> None:
        if not self._shutting_down:
            await self._put(service, status)

    async def clear(self, service: str) -> None:
        """Forget `service`: Check answers NOT_FOUND, watchers see SERVICE_UNKNOWN."""
        if not self._shutting_down and service in self._status:
            await self._put(service, None)

    async def enter_graceful_shutdown(self) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        async with self._changed:
            for service in self._status:
                self._status[service] = NOT_SERVING
            self._changed.notify_all()


class IssuerHealth:
    """Keeps each member's issuer health name in step with the registry and its circuit.

    Changes arrive from synchronous hooks (membership, breaker); each schedules
    an update that reads the state when it runs, so updates that run out of
    order still leave the latest state.
    """

    def __init__(
        self,
        health: HubHealth,
        membership: Membership,
        circuit: Callable[[str], CircuitState | None],
        *,
        cooldown: float,
    ) -> None:
        self._health = health
        self._membership = membership
        self._circuit = circuit
        self._cooldown = cooldown
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def status(self, code: str) -> int | None:
        """What the health name of `code` says now; None when it has none."""
        member = self._membership.directory.get(code)
        if member is None or member.status is MemberStatus.TERMINATED:
            return None
        if (
            member.status is MemberStatus.SUSPENDED
            or not member.subscribed(Role.ISSUER)
            or not member.issuer_endpoint
        ):
            return NOT_SERVING
        return NOT_SERVING if self._circuit(code) is CircuitState.OPEN else SERVING

    async def update(self, code: str) -> None:
        status = self.status(code)
        if status is None:
            await self._health.clear(issuer_health_name(code))
        else:
            await self._health.set(issuer_health_name(code), status)

    async def start(self) -> None:
        """A status for every member of the directory, before the hub serves."""
        for member in self._membership.directory.all():
            await self.update(member.code)

    def changed(self, code: str) -> None:
        """A member or its circuit changed: update its name soon (from synchronous code)."""
        task = asyncio.get_running_loop().create_task(self.update(code))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def circuit_changed(self, code: str, state: CircuitState) -> None:
        self.changed(code)
        if state is CircuitState.OPEN:
            # The breaker turns HALF_OPEN lazily, when its state is read: read it
            # once the cooldown is over, so the name says SERVING even when no
            # request came to look.
            old = self._timers.pop(code, None)
            if old is not None:
                old.cancel()
            self._timers[code] = asyncio.get_running_loop().call_later(
                self._cooldown + _LOOK_LATER, self._circuit, code
            )

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
