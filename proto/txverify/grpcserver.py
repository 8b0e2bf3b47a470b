"""What every txverify gRPC server shares: options, the request guard, health and reflection."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from txverify.errors import Reason, ServiceError, abort
from txverify.logs import FIELDS

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


def _guarded(handler: Handler, method: str) -> Handler:
    """The handler, with a deserializer that cannot raise and a check before the behaviour."""
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
            return await inner_coroutine(await check(request, context), context)

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


def _refusing(handler: Handler) -> Handler:
    """A handler of the same kind that answers UNAVAILABLE/SHUTTING_DOWN and does nothing."""
    kind = (handler.request_streaming, handler.response_streaming)
    wrapped: Callable[..., Any]
    if handler.response_streaming:

        async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
            await abort(context, _SHUTTING_DOWN)
            yield  # pragma: no cover  # makes this an async generator

        wrapped = generator
    else:

        async def coroutine(request: Any, context: Context) -> Any:
            await abort(context, _SHUTTING_DOWN)

        wrapped = coroutine
    deserializer = handler.request_deserializer
    return _METHOD_HANDLERS[kind](
        wrapped, deserializer and _tolerant(deserializer), handler.response_serializer
    )


class RequestGuard(grpc.aio.ServerInterceptor):
    """Answers request bytes that do not parse with INVALID_ARGUMENT/INVALID_REQUEST,
    and, once `refuse_new()` is called, every new RPC with UNAVAILABLE/SHUTTING_DOWN.

    grpc.aio answers UNKNOWN ("Unexpected DecodeError") when a request
    deserializer raises, before any servicer runs; invalid UTF-8 in a proto3
    string is enough. Here the deserializer hands a stand-in to the behaviour,
    which refuses it with our documented error instead.

    Refusing before stopping: gRPC's own shutdown cancels (CANCELLED) the RPCs
    that have arrived but that the server has not yet started, and a caller
    cannot tell whether a cancelled RPC did anything. A server that first
    refuses new RPCs for a moment empties that queue with an answer that says
    nothing was done, so the caller can safely send again.
    """

    def __init__(self) -> None:
        # method -> (handler, guarded handler, refusing handler); only methods the
        # server has a handler for get here, so hostile method names cannot grow it.
        self._guarded: dict[str, tuple[Handler, Handler, Handler]] = {}
        self.refusing = False

    def refuse_new(self) -> None:
        """From now on answer every new RPC UNAVAILABLE/SHUTTING_DOWN, doing nothing."""
        self.refusing = True

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
            known = (handler, _guarded(handler, handler_call_details.method), _refusing(handler))
            self._guarded[handler_call_details.method] = known
        return known[2] if self.refusing else known[1]


def new_server(
    *,
    max_concurrent_rpcs: int | None = None,
    reuse_port: bool = False,
    guard: RequestGuard | None = None,
) -> grpc.aio.Server:
    """An asyncio gRPC server with the shared options and the request guard.

    With max_concurrent_rpcs, RPCs beyond it are refused at once with
    RESOURCE_EXHAUSTED by gRPC itself, before any handler runs: a flood
    cannot queue up unbounded work and memory. With reuse_port, processes
    that opt in share the port (SO_REUSEPORT), as hub workers do. Pass a
    `guard` to keep a hold of it (to call refuse_new() before stopping).
    """
    options = SERVER_OPTIONS
    if reuse_port:
        shared = ("grpc.so_reuseport", 1)
        options = (*(o for o in SERVER_OPTIONS if o[0] != shared[0]), shared)
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
