"""What every txverify gRPC server shares: options, the request guard, health and reflection."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from txverify.errors import Reason, ServiceError, abort
from txverify.runtime.logs import FIELDS

log = logging.getLogger(__name__)

# Requests and answers here are a few hundred bytes; a 1 MiB cap (a quarter
# of gRPC's default) keeps a hostile peer from making a server buffer more.
MAX_MESSAGE_BYTES = 1 << 20

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Two processes must never share a port by accident (a stale server
    # still bound would silently take half the traffic); scale-out opts in.
    ("grpc.so_reuseport", 0),
)


if TYPE_CHECKING:  # the grpc classes are generic in the stubs only
    from typing import TypeAlias

    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class _Undecodable:
    """Stands in for request bytes that are not the method's message."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as error:  # DecodeError: bad UTF-8 in a string, garbage, truncation
            return _Undecodable(error)

    return deserialize


async def _checked(request: Any, context: Context, method: str) -> Any:
    if isinstance(request, _Undecodable):
        log.info(
            "refused a request that does not parse",
            extra={FIELDS: {"method": method, "error": str(request.error)[:200]}},
        )
        await abort(
            context,
            ServiceError(Reason.INVALID_REQUEST, f"the request does not parse: {request.error}"),
        )
    return request


async def _checked_stream(
    requests: AsyncIterator[Any], context: Context, method: str
) -> AsyncIterator[Any]:
    async def each() -> AsyncIterator[Any]:
        async for request in requests:
            yield await _checked(request, context, method)

    return each()


_METHOD_HANDLERS = {  # (request streaming, response streaming) -> how to build a handler
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _guarded(handler: Handler, method: str, guard: RequestGuard) -> Handler:
    """The handler, with a deserializer that cannot raise and a check before the behaviour;
    the guard counts the unary-response RPCs it runs (streams may last for ever)."""
    if handler.request_deserializer is None:
        return handler
    kind = (handler.request_streaming, handler.response_streaming)
    behavior: Callable[..., Any] | None = {
        (False, False): handler.unary_unary,
        (False, True): handler.unary_stream,
        (True, False): handler.stream_unary,
        (True, True): handler.stream_stream,
    }[kind]
    check: Callable[[Any, Context], Awaitable[Any]] = functools.partial(
        _checked_stream if handler.request_streaming else _checked, method=method
    )
    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(behavior):
        inner_generator = behavior

        async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
            async for response in inner_generator(await check(request, context), context):
                yield response

        wrapped = generator
    elif inspect.iscoroutinefunction(behavior):
        inner_coroutine = behavior

        async def coroutine(request: Any, context: Context) -> Any:
            guard.started += 1
            try:
                return await inner_coroutine(await check(request, context), context)
            finally:
                guard.started -= 1

        wrapped = coroutine
    else:  # a synchronous behaviour (none here): gRPC runs it in a thread; leave it be
        return handler
    return _METHOD_HANDLERS[kind](
        wrapped, _tolerant(handler.request_deserializer), handler.response_serializer
    )


_SHUTTING_DOWN = ServiceError(
    Reason.SHUTTING_DOWN,
    "this server is shutting down and did not start the request: send it again",
)


def _refusing(handler: Handler, guard: RequestGuard) -> Handler:
    """A handler of the same kind that holds the RPC until the guard releases it, then
    answers UNAVAILABLE/SHUTTING_DOWN, having done nothing."""
    kind = (handler.request_streaming, handler.response_streaming)
    wrapped: Callable[..., Any]
    if handler.response_streaming:

        async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
            await guard.hold(context)
            await abort(context, _SHUTTING_DOWN)
            yield  # pragma: no cover  # makes this an async generator

        wrapped = generator
    else:

        async def coroutine(request: Any, context: Context) -> Any:
            await guard.hold(context)
            await abort(context, _SHUTTING_DOWN)

        wrapped = coroutine
    deserializer = handler.request_deserializer
    return _METHOD_HANDLERS[kind](
        wrapped, deserializer and _tolerant(deserializer), handler.response_serializer
    )


# A held RPC is answered this long before its deadline at the latest, so that its
# caller gets SHUTTING_DOWN rather than DEADLINE_EXCEEDED.
_HOLD_MARGIN = 0.05


class RequestGuard(grpc.aio.ServerInterceptor):
    """Answers request bytes that do not parse with INVALID_ARGUMENT/INVALID_REQUEST,
    and, once `refuse_new()` is called, every new RPC with UNAVAILABLE/SHUTTING_DOWN.

    grpc.aio answers UNKNOWN ("Unexpected DecodeError") when a request
    deserializer raises, before any servicer runs; invalid UTF-8 in a proto3
    string is enough. Here the deserializer hands a stand-in to the behaviour,
    which refuses it with our documented error instead.

    Stopping without CANCELLED: gRPC's shutdown cancels (CANCELLED) every RPC that
    has reached gRPC's core but that the server has not yet taken up, and a caller
    cannot tell whether a cancelled RPC did anything. Answering those RPCs at once
    (UNAVAILABLE/SHUTTING_DOWN) does not help against callers that send again at
    once: each answer brings the next RPC, and some are always waiting when the
    shutdown begins. So after `refuse_new()` the guard *holds* each new RPC,
    unanswered: each caller soon has its one RPC held, and none waiting. Then
    `quiet()` says nothing new is arriving, the server's shutdown begins (it stops
    listening and sends GOAWAY, with no RPC waiting to be cancelled), and
    `release()` answers the held RPCs SHUTTING_DOWN; the callers' next RPCs meet a
    closing connection or a closed port, both of which say that nothing was done.
    See `stop_server`.
    """

    def __init__(self) -> None:
        # method -> (handler, guarded handler, refusing handler); only methods the
        # server has a handler for get here, so hostile method names cannot grow it.
        self._guarded: dict[str, tuple[Handler, Handler, Handler]] = {}
        self.refusing = False
        self.started = 0  # unary-response RPCs running their behaviour now
        self.held = 0  # RPCs held by the refusal, unanswered
        self._last_arrival = 0.0  # monotonic time the last RPC was held
        self._released: asyncio.Event | None = None

    def refuse_new(self) -> None:
        """From now on hold every new RPC until `release()`, then answer it
        UNAVAILABLE/SHUTTING_DOWN, doing nothing."""
        if self._released is None:
            self._released = asyncio.Event()
        self._last_arrival = time.monotonic()
        self.refusing = True

    def release(self) -> None:
        """Answer every held RPC (and any new one at once) UNAVAILABLE/SHUTTING_DOWN."""
        if self._released is None:
            self._released = asyncio.Event()
        self._released.set()

    async def hold(self, context: Context) -> None:
        """Wait until released, or until just before the RPC's deadline."""
        assert self._released is not None  # refuse_new() came first
        self._last_arrival = time.monotonic()
        if self._released.is_set():
            return
        remaining = context.time_remaining()
        self.held += 1
        try:
            await asyncio.wait_for(
                self._released.wait(),
                None if remaining is None else max(0.0, remaining - _HOLD_MARGIN),
            )
        except TimeoutError:
            pass
        finally:
            self.held -= 1

    async def quiet(self, *, idle: float, within: float) -> bool:
        """Once refusing: wait until no started RPC is still running and no new RPC has
        arrived for `idle` seconds (every caller is held or gone), at most `within`
        seconds. Whether it became quiet."""
        give_up = time.monotonic() + within
        while True:
            now = time.monotonic()
            if self.started == 0 and now - self._last_arrival >= idle:
                return True
            if now >= give_up:
                return False
            await asyncio.sleep(min(idle / 4, max(0.0, give_up - now)) or 0.001)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        known = self._guarded.get(handler_call_details.method)
        if known is None or known[0] is not handler:
            method = handler_call_details.method
            known = (handler, _guarded(handler, method, self), _refusing(handler, self))
            self._guarded[handler_call_details.method] = known
        return known[2] if self.refusing else known[1]


# After the last new RPC, how long the guard waits for more before stopping: the
# next RPC of a caller that has just been answered takes well under this to arrive.
QUIET_AFTER = 0.1
# From the start of gRPC's shutdown (GOAWAY sent) to the answers of the held RPCs:
# long enough for callers to read the GOAWAY, so their next RPC is not sent on it.
GOAWAY_SETTLE = 0.1


async def stop_server(server: grpc.aio.Server, guard: RequestGuard, grace: float) -> None:
    """Stop `server` so that no caller is left with CANCELLED (see RequestGuard): hold new
    RPCs until nothing new arrives and the started ones have finished (within `grace`),
    begin gRPC's shutdown, then answer the held ones SHUTTING_DOWN. RPCs still running
    after `grace` are cancelled by gRPC, as before."""
    if grace <= 0:
        guard.release()
        await server.stop(grace)
        return
    began = time.monotonic()
    guard.refuse_new()
    became_quiet = await guard.quiet(idle=QUIET_AFTER, within=grace)
    if not became_quiet:
        log.warning("stopping with %d RPCs still running after %.1fs (grace)", guard.started, grace)
    stopping = asyncio.ensure_future(
        server.stop(max(0.0, grace - (time.monotonic() - began)) + GOAWAY_SETTLE)
    )
    try:
        await asyncio.sleep(GOAWAY_SETTLE)
    finally:
        guard.release()
    await stopping


def new_server(
    *,
    max_concurrent_rpcs: int | None = None,
    reuse_port: bool = False,
    guard: RequestGuard | None = None,
    max_receive_bytes: int = MAX_MESSAGE_BYTES,
) -> grpc.aio.Server:
    """An asyncio gRPC server with the shared options and the request guard.

    With max_concurrent_rpcs, RPCs beyond it are refused at once with
    RESOURCE_EXHAUSTED by gRPC itself, before any handler runs: a flood
    cannot queue up unbounded work and memory. With reuse_port, processes
    that opt in share the port (SO_REUSEPORT), as hub workers do. Pass a
    `guard` to keep a hold of it (to call refuse_new() before stopping).
    `max_receive_bytes` raises the request cap where a request may carry more
    (the hub's Verify, with a slip image).
    """
    changed = {"grpc.max_receive_message_length": max_receive_bytes}
    if reuse_port:
        changed["grpc.so_reuseport"] = 1
    options = tuple((name, changed.get(name, value)) for name, value in SERVER_OPTIONS)
    return grpc.aio.server(
        options=options,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        interceptors=(guard or RequestGuard(),),
    )


async def add_health_and_reflection(
    server: grpc.aio.Server,
    service_names: Sequence[str],
    *,
    health: HealthServicer | None = None,
) -> HealthServicer:
    """Register grpc.health.v1 (overall "" and per service, all SERVING) and reflection."""
    health = health or HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", *service_names):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return health


def bind(
    server: grpc.aio.Server,
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """Bind a port (0 = any free one), with TLS when credentials are given; returns the port."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpcio raises when the address is taken
        raise OSError(f"cannot listen on {address}: is it in use?") from exc
    if bound == 0:
        raise OSError(f"cannot listen on {address}: is it in use?")
    return bound
