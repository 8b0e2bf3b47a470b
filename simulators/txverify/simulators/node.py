"""BankNode: one running bank, its faults and its issuer port (opened, closed, flapping).

Apart from server.py, which starts the nodes, because the control API
(control.py) acts on them and server.py serves the control API: with BankNode in
server.py the two modules were a cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from txverify.runtime import tls
from txverify.runtime.grpcserver import add_health_and_reflection, bind, new_server
from txverify.simulators.bank import Bank
from txverify.simulators.faults import FaultSpec
from txverify.simulators.issuer import IssuerServicer
from txverify.v1 import issuer_pb2_grpc
from txverify.wire import ISSUER_SERVICE

log = logging.getLogger(__name__)
TRACES_KEPT = 100


@dataclass(slots=True)
class BankNode:
    """One running bank: its domain object, its faults and its (closable) issuer server."""

    bank: Bank
    host: str
    pki: Path | None = None
    port: int = 0
    faults: FaultSpec = field(default_factory=FaultSpec)
    server: grpc.aio.Server | None = None
    on_listening: Callable[[BankNode], None] | None = None
    # The W3C trace headers the issuer received (traceparent, tracestate or ""), latest
    # last, kept across reopening (IssuerServicer); for tests: did the trace arrive?
    traces: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=TRACES_KEPT))
    _flapper: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def listening(self) -> bool:
        return self.server is not None

    async def open(self) -> None:
        """Listen on the issuer port (the same port every time after the first)."""
        if self.server is not None:
            return
        server = new_server()
        issuer_pb2_grpc.add_IssuerServiceServicer_to_server(
            IssuerServicer(
                self.bank,
                lambda: self.faults,
                only_peer=tls.HUB if self.pki else None,
                traces=self.traces,
            ),
            server,
        )
        await add_health_and_reflection(server, [ISSUER_SERVICE])
        credentials = None
        if self.pki is not None:
            # The issuer presents its member certificate and accepts only
            # clients (the hub) with a certificate from the same CA.
            credentials = tls.server_credentials(tls.Pki(self.pki), self.bank.code)
        self.port = bind(server, self.host, self.port, credentials)
        await server.start()
        self.server = server
        self._changed()

    async def close(self) -> None:
        """Stop listening at once: callers see connections refused."""
        server, self.server = self.server, None
        if server is not None:
            await server.stop(0)
            self._changed()

    def _changed(self) -> None:
        if self.on_listening is not None:
            self.on_listening(self)

    async def apply(self, spec: FaultSpec) -> None:
        """Make `spec` the faults in force, opening or closing the port as it says."""
        self.faults = spec
        self.bank.visibility_delay = spec.visibility_delay
        self.bank.pending_window = spec.pending_window
        if self._flapper is not None:
            self._flapper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flapper
            self._flapper = None
        if spec.refuse:
            await self.close()
        elif spec.flapping:
            self._flapper = asyncio.create_task(self._flap(spec.flap_down_s, spec.flap_period_s))
        else:
            await self.open()
        log.info("bank %s faults %s", self.bank.code, spec)

    async def _flap(self, down_s: int, period_s: int) -> None:
        while True:
            await self.close()
            await asyncio.sleep(down_s)
            await self.open()
            await asyncio.sleep(period_s - down_s)

    async def stop(self) -> None:
        if self._flapper is not None:
            self._flapper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flapper
        if self.server is not None:
            await self.server.stop(1.0)
            self.server = None
        self.bank.ledger.close()
