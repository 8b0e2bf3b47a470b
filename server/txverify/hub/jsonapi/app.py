"""The JSON API as one ASGI app: the hub's public services over the Connect protocol.

POST /txverify.v1.VerificationService/Verify with a proto3 JSON (application/json)
or binary (application/proto) body answers as the gRPC method does, through the
same servicers (call.py); gRPC-Web (application/grpc-web+proto|json) too, as
connectrpc serves it. GET / lists the services, GET /openapi.json is the
document generated from the proto (proto/openapi.py).

Every failure is Connect error JSON, never an HTML page or an empty body:
connectrpc's own answers to an unknown method or content type (which have no
body) get one here, and google.rpc details get their JSON beside the base64
bytes the protocol requires ("debug"), so curl shows the ErrorInfo reason and
outcome code that gRPC clients decode from the details.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import SimpleNamespace
from typing import Any

from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError
from connectrpc.server import ConnectASGIApplication
from google.protobuf import descriptor, descriptor_pool, json_format, message, message_factory
from google.protobuf.json_format import ParseError
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from txverify.client.answers import message_json
from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.hub.jsonapi.call import Aborted, HttpCall, Peer, current_peer, error_of
from txverify.hub.jsonapi.http import PEER_IDENTITY

log = logging.getLogger("txverify.hub.jsonapi")

MAX_BODY = 4 * 1024 * 1024  # bytes of a request body: a 2 MiB image as base64 JSON fits
_JSON = [(b"content-type", b"application/json")]
ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


def _snake(name: str) -> str:
    """RegisterMember -> register_member: the method names connectrpc's generator uses."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _bridge(method: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, ctx: Any) -> Any:
        try:
            return await method(request, HttpCall(ctx, current_peer.get()))
        except Aborted as aborted:  # the servicer's abort(): its status and details
            raise aborted.error from None

    return call


def connect_service(servicer: object, service: descriptor.ServiceDescriptor) -> object:
    """The servicer's RPCs under the names a generated Connect app calls (verify, ...)."""
    return SimpleNamespace(
        **{_snake(m.name): _bridge(getattr(servicer, m.name)) for m in service.methods}
    )


class StrictJsonCodec(Codec[message.Message, Any]):
    """proto3 JSON that refuses unknown fields, with INVALID_REQUEST naming the problem.

    A misspelt field ("qrtext") silently dropped would come back as a confusing
    "set qr_text or slip_ref"; a payment API says what it did not understand."""

    def name(self) -> str:
        return "json"

    def encode(self, msg: message.Message) -> bytes:
        # The one JSON shape of answers: what the CLI's --json and the console show too.
        return json.dumps(message_json(msg), ensure_ascii=False).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        decoded = message_class()
        try:
            json_format.Parse(bytes(data), decoded)
        except (ParseError, UnicodeDecodeError, RecursionError) as exc:
            raise error_of(
                ServiceError(
                    Reason.INVALID_REQUEST,
                    f"the body is not a {message_class.DESCRIPTOR.full_name} in proto3 JSON: {exc}",
                    violations=(FieldViolation("body", str(exc)),),
                )
            ) from None
        return decoded


CODECS: list[Codec[Any, Any]] = [google_protobuf_binary_codec(), StrictJsonCodec()]


def _error_body(code: Code, text: str, reason: Reason | None = None) -> bytes:
    body: dict[str, Any] = {"code": code.value, "message": text}
    if reason is not None:
        error = error_of(ServiceError(reason, text))
        body = json.loads(_connect_json(error))
    return json.dumps(body, ensure_ascii=False).encode()


def _connect_json(error: ConnectError) -> bytes:
    details = [
        {"type": d.type_name, "value": base64.b64encode(d.message_bytes).decode().rstrip("=")}
        for d in error.details
    ]
    body: dict[str, Any] = {"code": error.code.value, "message": error.message}
    if details:
        body["details"] = details
    return _with_debug(json.dumps(body).encode())


def _with_debug(body: bytes) -> bytes:
    """Connect error JSON with each detail's JSON as "debug" (its bytes stay in "value")."""
    try:
        error = json.loads(body)
    except ValueError:
        return body
    if not isinstance(error, dict) or not isinstance(error.get("details"), list):
        return body
    for detail in error["details"]:
        if isinstance(detail, dict) and "debug" not in detail:
            shown = _detail_json(detail.get("type"), detail.get("value"))
            if shown is not None:
                detail["debug"] = shown
    return json.dumps(error, ensure_ascii=False).encode()


def _with_reason(body: bytes) -> bytes:
    """connectrpc's own invalid_argument answers (a bad Connect-Timeout-Ms or protocol
    version) with the ErrorInfo every other bad request carries: INVALID_REQUEST, 6400."""
    try:
        error = json.loads(body)
    except ValueError:
        return body
    if (
        not isinstance(error, dict)
        or error.get("code") != "invalid_argument"
        or error.get("details")
    ):
        return body
    return _connect_json(error_of(ServiceError(Reason.INVALID_REQUEST, str(error.get("message")))))


def _detail_json(type_name: object, value: object) -> dict[str, Any] | None:
    if not isinstance(type_name, str) or not isinstance(value, str):
        return None
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(type_name)
        decoded = message_factory.GetMessageClass(desc).FromString(
            base64.b64decode(value + "=" * (-len(value) % 4))
        )
    except (KeyError, ValueError, message.DecodeError):
        return None
    return message_json(decoded)


class JsonApi:
    """Routes /<service>/<method> to its Connect app; the rest is Connect error JSON."""

    def __init__(self, apps: Iterable[ConnectASGIApplication[Any]], openapi: bytes) -> None:
        self._apps: Mapping[str, ConnectASGIApplication[Any]] = {a.path: a for a in apps}
        self._openapi = openapi
        self._index = json.dumps(
            {
                "services": sorted(p.lstrip("/") for p in self._apps),
                "openapi": "/openapi.json",
                "protocol": "Connect (https://connectrpc.com/docs/protocol): POST "
                "/<service>/<method> with application/json or application/proto",
            },
            indent=2,
        ).encode()
        self.stopping = False

    async def __call__(self, scope: Any, receive: ASGIReceiveCallable, send: Any) -> None:
        if scope["type"] == "lifespan":
            return  # nothing to start: the hub's parts exist before the server
        if scope["type"] != "http":
            return  # websockets: hypercorn refuses the handshake when the app returns
        path: str = scope["path"]
        method: str = scope["method"]
        if path in ("/", "/openapi.json"):
            if method not in ("GET", "HEAD"):
                await _send(send, 405, _error_body(Code.UNIMPLEMENTED, f"{path} is GET only"))
                return
            await _send(send, 200, self._openapi if path == "/openapi.json" else self._index)
            return
        service = "/" + path.lstrip("/").partition("/")[0]
        app = self._apps.get(service)
        if app is None:
            text = f"no service {service.lstrip('/')!r}; the services are in GET /openapi.json"
            await _send(send, 404, _error_body(Code.UNIMPLEMENTED, text))
            return
        if self.stopping:
            text = "the hub is stopping; the request was not started: send it again"
            await _send(send, 503, _error_body(Code.UNAVAILABLE, text, Reason.SHUTTING_DOWN))
            return
        client = scope.get("client") or ("", 0)
        state: Mapping[str, Any] = scope.get("state") or {}
        token = current_peer.set(Peer(client[0], client[1], state.get(PEER_IDENTITY)))
        try:
            await app(scope, _limited(receive), _ErrorBodies(send, scope))
        finally:
            current_peer.reset(token)


async def _send(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON, (b"content-length", str(len(body)).encode())],
            "trailers": False,
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _limited(receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    """The request body, cut off at MAX_BODY with INVALID_REQUEST (before it is all read)."""
    seen = 0

    async def limited() -> Any:
        nonlocal seen
        event = await receive()
        if event["type"] == "http.request":
            seen += len(event.get("body", b""))
            if seen > MAX_BODY:
                raise error_of(
                    ServiceError(
                        Reason.INVALID_REQUEST,
                        f"the request body is over {MAX_BODY // 1024 // 1024} MiB",
                        metadata={"field": "body", "limit_bytes": str(MAX_BODY)},
                    )
                )
        return event

    return limited


_EMPTY_ERRORS = {
    404: (Code.UNIMPLEMENTED, "no such method in {service}; the methods are in GET /openapi.json"),
    405: (Code.UNIMPLEMENTED, "{method} is not allowed here: send POST (Connect unary)"),
    415: (
        Code.INVALID_ARGUMENT,
        "Content-Type {content_type!r} is not supported: send application/json "
        "(proto3 JSON), application/proto or gRPC-Web",
    ),
}


class _ErrorBodies:
    """The ASGI send of one request: error responses get a Connect error JSON body."""

    def __init__(self, send: Any, scope: Any) -> None:
        self._send = send
        self._scope = scope
        self._start: dict[str, Any] | None = None
        self._body = b""

    async def __call__(self, event: Any) -> None:
        kind = event["type"]
        if kind == "http.response.start" and event["status"] >= 400:
            self._start = dict(event)
            return
        if kind == "http.response.body" and self._start is not None:
            self._body += event.get("body", b"")
            if event.get("more_body", False):
                return
            await self._send_error(self._start, self._body)
            self._start = None
            return
        await self._send(event)

    async def _send_error(self, start: dict[str, Any], body: bytes) -> None:
        status: int = start["status"]
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        if body:
            body = _with_debug(_with_reason(body))
        else:
            code, text = _EMPTY_ERRORS.get(status, (Code.UNKNOWN, "HTTP {status}"))
            text = text.format(
                service=self._scope["path"].rpartition("/")[0].lstrip("/"),
                method=self._scope["method"],
                content_type=_header(self._scope, b"content-type"),
                status=status,
            )
            body = _error_body(code, text)
        start["headers"] = [*headers, *_JSON, (b"content-length", str(len(body)).encode())]
        await self._send(start)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


def _header(scope: Any, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""
