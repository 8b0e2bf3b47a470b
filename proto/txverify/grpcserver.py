"""What every txverify gRPC server shares: options, health and reflection set-up."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

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


def new_server(*, max_concurrent_rpcs: int | None = None) -> grpc.aio.Server:
    """An asyncio gRPC server with the shared options.

    With max_concurrent_rpcs, RPCs beyond it are refused at once with
    RESOURCE_EXHAUSTED by gRPC itself, before any handler runs: a flood
    cannot queue up unbounded work and memory.
    """
    return grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=max_concurrent_rpcs)


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
