"""The console's web server: aiohttp on the hub's own event loop, loopback only.

Why aiohttp: it is asyncio-native (it runs on the loop the hub already has, with
no second server framework or thread), it is small and long maintained
(aio-libs), and it has what the console needs in the box: static files,
streamed responses for server-sent events and multipart uploads.

Access: every GET is open (read-only views, nothing personal in them); every
POST needs the operator token in the `X-Console-Token` header. The token is made
at start-up and printed once, as dev mode prints its warning. A header, not a
cookie, carries it, so another site cannot make a browser send it (no CSRF),
and requests whose Host is not a loopback name are refused (no DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from txverify.hub.console.actions import ActionError, Actions
from txverify.hub.console.feed import LiveFeed
from txverify.hub.console.usage import MemberUsages
from txverify.hub.membership import Membership
from txverify.hub.registry import Member
from txverify.hub.resilience.breaker import CircuitState
from txverify.hub.settings import ConsoleSettings
from txverify.units import BANGKOK
from txverify.wire import MAX_SLIP_IMAGE_BYTES

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
TOKEN_HEADER = "X-Console-Token"
TICK = 1.0  # seconds between server-sent events
BANKS_TTL = 1.0  # seconds a read of the simulator's faults is reused
MAX_UPLOAD = 8 * 1024 * 1024  # a slip photo; more is refused before it is read
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
HEADERS = {
    # Everything the page needs is served from here: nothing from the internet.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


Circuit = Callable[[str], CircuitState | None]


class Console:
    """The console of one hub process."""

    def __init__(
        self,
        settings: ConsoleSettings,
        *,
        hub_address: str,
        mode: str,
        membership: Membership,
        circuit: Circuit,
        in_flight: Callable[[str], int],
        feed: LiveFeed,
        actions: Actions,
    ) -> None:
        self.settings = settings
        self.hub_address, self.mode = hub_address, mode
        self.membership, self.circuit, self.in_flight = membership, circuit, in_flight
        self.feed, self.actions = feed, actions
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._banks: list[dict[str, Any]] = []
        self._banks_read = 0.0
        self._banks_lock = asyncio.Lock()
        self._streams: set[web.StreamResponse] = set()
        self._closing = asyncio.Event()
        self._usages = MemberUsages(actions.hub, pki=actions.pki, operator=actions.operator)

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}/"

    # --- serving ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_UPLOAD)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC, append_version=False)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/events", self._events)
        app.router.add_post("/api/login", self._login)
        app.router.add_post("/api/members/{code}/status", self._member_status)
        app.router.add_post("/api/banks/{code}/faults", self._faults)
        app.router.add_post("/api/verify", self._verify)
        return app

    async def start(self) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the bound port, when 0 was asked for
        log.info("console on %s (read-only without the operator token)", self.url)
        return self.port

    async def stop(self) -> None:
        self._closing.set()  # event streams end, so the runner need not wait on them
        if self._runner is not None:
            await self._runner.cleanup()
        await self.actions.close()
        await self._usages.close()

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        if host not in LOOPBACK_NAMES:
            return _error(f"the console answers loopback names only, not {request.host!r}", 421)
        if (
            request.method == "POST"
            and request.path != "/api/login"
            and not self._operator(request)
        ):
            return _error(
                "read-only: present the operator token printed when the hub started", 403,
                reason="NOT_OPERATOR",
            )  # fmt: skip
        try:
            response = await handler(request)
        except ActionError as error:
            return _error(str(error), error.status, reason=error.reason)
        response.headers.update(HEADERS)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    def _operator(self, request: web.Request) -> bool:
        given = request.headers.get(TOKEN_HEADER, "")
        return hmac.compare_digest(given.encode(), self.settings.token.encode())

    # --- views -----------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as one JSON object."""
        return {
            "at": datetime.now(UTC).astimezone(BANGKOK).isoformat("T", "seconds"),
            "hub": {
                "address": self.hub_address,
                "mode": self.mode,
                "simulator": self.settings.simulator is not None,
            },
            "members": await self._members(),
            "banks": await self._bank_states(),
            "rates": self.feed.rates(),
            "recent": self.feed.latest(),
        }

    async def _members(self) -> list[dict[str, Any]]:
        """Each member as the hub holds it now, with its usage today (UsageService)."""
        members = self.membership.directory.all()
        usages = await self._usages.of([m.code for m in members])
        return [{**self._member(m), **usages.get(m.code, {})} for m in members]

    def _member(self, member: Member) -> dict[str, Any]:
        # An issuer whose circuit does not exist yet (never called) is CLOSED: calls go through.
        circuit = (
            (self.circuit(member.code) or CircuitState.CLOSED) if member.issuer_endpoint else None
        )
        return {
            "code": member.code,
            "name": member.name,
            "status": member.status.value,
            "roles": sorted({s.role.value for s in member.subscriptions}),
            "subscriptions": [
                {"service": s.service, "role": s.role.value} for s in member.subscriptions
            ],
            "circuit": circuit.name if circuit is not None else "",
            "in_flight": self.in_flight(member.code) if member.issuer_endpoint else 0,
        }

    async def _bank_states(self) -> list[dict[str, Any]]:
        """The simulator's banks and faults, read at most once per BANKS_TTL for all viewers;
        an unreachable simulator shows as no banks (and is logged), not as a broken page."""
        if self.settings.simulator is None:
            return []
        async with self._banks_lock:
            loop = asyncio.get_running_loop()
            if loop.time() - self._banks_read >= BANKS_TTL:
                try:
                    self._banks = await self.actions.banks()
                except ActionError as error:
                    log.warning("console: the simulator did not answer: %s", error)
                    self._banks = []
                self._banks_read = loop.time()
            return self._banks

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({**await self.snapshot(), "operator": self._operator(request)})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the snapshot every TICK seconds until the viewer leaves."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        response.headers.update(HEADERS)
        await response.prepare(request)
        self._streams.add(response)
        try:
            while not self._closing.is_set():
                data = json.dumps(await self.snapshot(), ensure_ascii=False)
                await response.write(f"event: state\ndata: {data}\n\n".encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), TICK)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the viewer left
        finally:
            self._streams.discard(response)
        return response

    # --- actions (operator only: see _guard) -----------------------------------------

    async def _login(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        token = body.get("token", "")
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode(), self.settings.token.encode()
        ):
            return _error("that is not the operator token", 403, reason="NOT_OPERATOR")
        return web.json_response({"operator": True})

    async def _member_status(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        status, reason = body.get("status"), body.get("reason") or "from the console"
        if not isinstance(status, str) or not isinstance(reason, str):
            raise ActionError("status and reason must be strings")
        member = await self.actions.set_member_status(request.match_info["code"], status, reason)
        changed = self.membership.directory.get(member.code)
        return web.json_response({"member": self._member(changed) if changed else {}})

    async def _faults(self, request: web.Request) -> web.StreamResponse:
        answer = await self.actions.set_faults(request.match_info["code"], await _json(request))
        self._banks_read = 0.0  # the next snapshot shows the change
        return web.json_response(answer)

    async def _verify(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()  # multipart (with an image) or url-encoded
        member, qr_text, image = form.get("member"), form.get("qr_text"), form.get("image")
        if not isinstance(member, str) or not member:
            raise ActionError("choose the member to verify as")
        text = qr_text.strip() if isinstance(qr_text, str) else ""
        if isinstance(image, web.FileField) and not text:
            # The hub reads the image, as it does for any member (VerifyRequest.slip_image).
            data = image.file.read(MAX_SLIP_IMAGE_BYTES + 1)
            if not data:
                raise ActionError("the uploaded file is empty")
            return web.json_response(await self.actions.verify(member, image=data))
        if not text:
            raise ActionError("give the slip's QR text or an image of the slip")
        return web.json_response(await self.actions.verify(member, text))


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ActionError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ActionError("the body must be a JSON object")
    return body


def _error(message: str, status: int, *, reason: str = "") -> web.Response:
    response = web.json_response({"error": message, "reason": reason}, status=status)
    response.headers.update(HEADERS)
    return response
