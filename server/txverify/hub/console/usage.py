"""Each member's usage for the console's members table: UsageService as the operator, cached.

Through the hub's own port, as the console's other reads and actions go
(actions.py): the figures are those `txverify usage --member` prints. Read at
most once per USAGE_TTL for all viewers, all members at once; a hub that does
not answer shows as no figures (and is logged), not as a broken page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from txverify.client import hub_aio_channel
from txverify.v1 import usage_pb2, usage_pb2_grpc
from txverify.wire import MEMBER_HEADER

log = logging.getLogger(__name__)
USAGE_TTL = 5.0  # seconds a read of every member's usage is reused (each is an audit count)
TIMEOUT = 2.0


class MemberUsages:
    """The latest usage of each member: verifications today and the not-found ratio."""

    def __init__(self, hub: str, *, pki: Path | None, operator: str) -> None:
        self.hub, self.pki, self.operator = hub, pki, operator
        self._channel: grpc.aio.Channel | None = None
        self._lock = asyncio.Lock()
        self._read_at = float("-inf")
        self._usages: dict[str, dict[str, Any]] = {}

    async def of(self, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """code -> {"today": verifications, "not_found_ratio": 0-1}, as last read."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            if loop.time() - self._read_at >= USAGE_TTL:
                self._usages = await self._read(codes)
                self._read_at = loop.time()
            return self._usages

    async def _read(self, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self._channel is None:
            self._channel = hub_aio_channel(self.hub, certs=self.pki, identity=self.operator)
        stub: Any = usage_pb2_grpc.UsageServiceStub(self._channel)
        metadata = () if self.pki is not None else ((MEMBER_HEADER, self.operator),)
        calls = [
            stub.GetUsage(usage_pb2.GetUsageRequest(member=c), timeout=TIMEOUT, metadata=metadata)
            for c in codes
        ]
        replies = await asyncio.gather(*calls, return_exceptions=True)
        usages: dict[str, dict[str, Any]] = {}
        for code, reply in zip(codes, replies, strict=True):
            if isinstance(reply, BaseException):
                log.warning("console: no usage of member %s: %s", code, reply)
                continue
            usages[code] = {
                "today": reply.today.verifications,
                "not_found_ratio": reply.today.not_found_ratio,
            }
        return usages

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
