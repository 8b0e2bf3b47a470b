"""A Connect request seen as a gRPC call, so the hub's servicers answer it unchanged.

The servicers (Verify, AuditLog, MemberRegistry) read four things of a call:
its metadata (the x-member-id header), its peer address, its certificate (the
auth context) and its deadline; and they end a failed call with abort(). An
HttpCall gives them those from the HTTP request, and turns abort() into the
ConnectError of the same status, message and google.rpc details. One code path
then decides identity, admission, rate limits, audit and metrics for both
protocols; only the framing differs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.request import RequestContext
from google.rpc import status_pb2
from protobuf.wkt import Any as AnyPb

from txverify.errors import STATUS_DETAILS_KEY, ServiceError


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end of the HTTP connection."""

    host: str
    port: int
    identity: str | None  # CN of the verified client certificate; None without TLS

    @property
    def grpc_peer(self) -> str:
        """The address as gRPC writes it ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000")."""
        if ":" in self.host:
            return f"ipv6:[{self.host}]:{self.port}"
        return f"ipv4:{self.host}:{self.port}"


# Set by the JSON API's ASGI app for each request (the handler runs in its task).
current_peer: ContextVar[Peer] = ContextVar("txverify_jsonapi_peer")

_COMMON_NAME_KEY = "x509_common_name"  # as gRPC's auth context names it


class Aborted(grpc.aio.AbortError):
    """abort() of an HttpCall: the ConnectError to answer with."""

    def __init__(self, error: ConnectError) -> None:
        super().__init__(error.message)
        self.error = error


def _code(status: grpc.StatusCode) -> Code:
    if status is grpc.StatusCode.CANCELLED:
        return Code.CANCELED
    return Code[status.name]


def connect_error(
    status: grpc.StatusCode, message: str, trailing: Iterable[tuple[str, str | bytes]] = ()
) -> ConnectError:
    """The ConnectError of a gRPC status, its google.rpc details carried over as they are."""
    details: list[ErrorDetail] = []
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            rich = status_pb2.Status.FromString(value)
            details = [ErrorDetail(AnyPb(type_url=d.type_url, value=d.value)) for d in rich.details]
    return ConnectError(_code(status), message, details)


def error_of(error: ServiceError) -> ConnectError:
    """The ConnectError a ServiceError is answered with (as abort() sends it over gRPC)."""
    return connect_error(error.status_code, error.message, error.trailing_metadata())


class HttpCall(grpc.aio.ServicerContext[Any, Any]):
    """The parts of a grpc.aio.ServicerContext the hub's servicers use, for one HTTP request."""

    def __init__(self, ctx: RequestContext[Any, Any], peer: Peer) -> None:
        self._ctx = ctx
        self._peer = peer
        remaining = ctx.timeout_ms
        self._deadline = None if remaining is None else time.monotonic() + remaining / 1000

    def invocation_metadata(self) -> grpc.aio.Metadata:
        # Header names arrive lowercased, as gRPC metadata keys are.
        return grpc.aio.Metadata(*self._ctx.request_headers.allitems())

    def peer(self) -> str:
        return self._peer.grpc_peer

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        identity = self._peer.identity
        return {} if identity is None else {_COMMON_NAME_KEY: [identity.encode()]}

    def time_remaining(self) -> float | None:  # type: ignore[override]  # grpc: None too
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Any = (),
    ) -> NoReturn:
        raise Aborted(connect_error(code, details, trailing_metadata))

    # What no servicer of the hub calls over unary RPCs.
    def _unsupported(self, *_: Any) -> NoReturn:
        raise NotImplementedError("not available on a Connect call")

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self._unsupported()

    def disable_next_message_compression(self) -> None:
        self._unsupported()

    def peer_identities(self) -> Iterable[bytes] | None:
        identity = self._peer.identity
        return None if identity is None else [identity.encode()]

    def peer_identity_key(self) -> str | None:
        return None if self._peer.identity is None else _COMMON_NAME_KEY

    async def read(self) -> Any:
        self._unsupported()

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        self._unsupported()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._unsupported()

    def set_compression(self, compression: grpc.Compression) -> None:
        self._unsupported()

    def set_details(self, details: str) -> None:
        self._unsupported()

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._unsupported()

    async def write(self, message: Any) -> None:
        self._unsupported()
