"""The JSON API's HTTP server: hypercorn's HTTP/1.1 and HTTP/2 on the hub's event loop.

hypercorn speaks HTTP/1.1, HTTP/2 over TLS (ALPN) and h2c (prior knowledge or
Upgrade), but an ASGI scope carries no client certificate, and the hub's
identity rules need one. So the hub accepts connections itself (one asyncio
server per port, TLS by txverify.runtime.tls) and hands each to hypercorn's
per-connection TCPServer with a connection state that names the verified
certificate; hypercorn copies that state into every request's scope["state"].
hypercorn's own `serve()` would also install signal handlers and own shutdown,
which are the hub's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Any

from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework, ConnectionState

from txverify.runtime.tls import certificate_identity

log = logging.getLogger("txverify.hub.jsonapi")

PEER_IDENTITY = "txverify.peer_identity"  # scope["state"] key: the client certificate's CN
KEEP_ALIVE = 75.0  # seconds an idle connection stays open (nginx's default keepalive_timeout)


def _config() -> Config:
    config = Config()
    config.keep_alive_timeout = KEEP_ALIVE
    config.include_server_header = False
    config.include_date_header = True
    config.accesslog = None  # every answer is already in the hub's own log line and audit
    config.errorlog = log
    config.graceful_timeout = 0.0  # the hub's grace applies (HttpServer.stop)
    return config


class HttpServer:
    """One listening port serving an ASGI app, plaintext or TLS."""

    def __init__(self, app: ASGIFramework, ssl_context: ssl.SSLContext | None = None) -> None:
        self._app = ASGIWrapper(app)
        self._ssl = ssl_context
        self._config = _config()
        self._context = WorkerContext(None)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on host:port (0: any free port); returns the port."""
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self._server = await asyncio.start_server(
            self._connected,
            sock=sock,
            ssl=self._ssl,
            ssl_handshake_timeout=10.0 if self._ssl is not None else None,
            backlog=1024,
        )
        bound: int = sock.getsockname()[1]
        return bound

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            identity = certificate_identity(ssl_object.getpeercert()) if ssl_object else None
            state = ConnectionState({PEER_IDENTITY: identity})
            loop = asyncio.get_running_loop()
            await TCPServer(self._app, loop, self._config, self._context, state, reader, writer)
        except asyncio.CancelledError:
            # stop() cut a connection past its grace: that is the end of it, not an
            # error for asyncio to log from the connection's callback.
            writer.transport.abort()
        finally:
            self._connections.discard(task)

    async def stop(self, grace: float) -> None:
        """Accept no more connections; idle ones close, requests in flight get `grace`
        seconds (then their connections are cut)."""
        if self._server is None:
            return
        self._server.close()
        # hypercorn closes idle keep-alive connections, answers in-flight requests
        # with "Connection: close" (HTTP/1.1) or sends GOAWAY (HTTP/2) once terminated.
        await self._context.terminated.set()
        if self._connections:
            _, pending = await asyncio.wait(set(self._connections), timeout=grace)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
