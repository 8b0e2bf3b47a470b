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


def new_server() -> grpc.aio.Server:
    """An asyncio gRPC server with the shared options."""
    return grpc.aio.server(options=SERVER_OPTIONS)


async def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Sequence[str]
) -> HealthServicer:
    """Register grpc.health.v1 (overall "" and per service, all SERVING) and reflection."""
    health = HealthServicer()
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


def bind(server: grpc.aio.Server, host: str, port: int) -> int:
    """Bind an insecure port (0 = any free one) and return the bound port."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises when the address is taken
        raise OSError(f"cannot listen on {address}: is it in use?") from exc
    if bound == 0:
        raise OSError(f"cannot listen on {address}: is it in use?")
    return bound
