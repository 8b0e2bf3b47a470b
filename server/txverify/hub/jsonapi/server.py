"""Start and stop the JSON API beside the hub's gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from connectrpc.compression.gzip import GzipCompression

from txverify.hub.audit.service import AuditLogServicer
from txverify.hub.jsonapi.app import CODECS, MAX_BODY, JsonApi, connect_service
from txverify.hub.jsonapi.http import HttpServer
from txverify.hub.registry.service import MemberRegistryServicer
from txverify.hub.usage import UsageServicer
from txverify.hub.verification import VerificationServicer
from txverify.runtime import tls
from txverify.v1 import (
    audit_connect,
    audit_pb2,
    registry_connect,
    registry_pb2,
    usage_connect,
    usage_pb2,
    verification_connect,
    verification_pb2,
)

log = logging.getLogger("txverify.hub.jsonapi")


def openapi_document() -> bytes:
    """The committed OpenAPI document of the JSON API (generated from the proto)."""
    return (resources.files("txverify.v1") / "openapi.json").read_bytes()


@dataclass(slots=True)
class RunningJsonApi:
    """A listening JSON API: its port, to print and to stop."""

    app: JsonApi
    server: HttpServer
    port: int

    async def stop(self, grace: float) -> None:
        """New requests answer SHUTTING_DOWN; those in flight get `grace` seconds."""
        self.app.stopping = True
        await self.server.stop(grace)


async def start_json_api(
    *,
    host: str,
    port: int,
    verification: VerificationServicer,
    audit: AuditLogServicer,
    registry: MemberRegistryServicer,
    usage: UsageServicer,
    pki: Path | None,
    reuse_port: bool = False,
) -> RunningJsonApi:
    """Serve the four public services on host:port (0: any free port), under mTLS
    when `pki` is given (the hub's certificate; clients present their own)."""
    options = {
        "read_max_bytes": MAX_BODY + 1,  # app.py answers the limit first, with its reason
        "compressions": [GzipCompression()],
        "codecs": CODECS,
    }
    services = (
        (verification_connect.VerificationServiceASGIApplication, verification,
         verification_pb2.DESCRIPTOR.services_by_name["VerificationService"]),
        (audit_connect.AuditLogASGIApplication, audit,
         audit_pb2.DESCRIPTOR.services_by_name["AuditLog"]),
        (registry_connect.MemberRegistryASGIApplication, registry,
         registry_pb2.DESCRIPTOR.services_by_name["MemberRegistry"]),
        (usage_connect.UsageServiceASGIApplication, usage,
         usage_pb2.DESCRIPTOR.services_by_name["UsageService"]),
    )  # fmt: skip
    apps = [
        factory(connect_service(servicer, desc), **options)  # type: ignore[arg-type]
        for factory, servicer, desc in services
    ]
    app = JsonApi(apps, openapi_document())
    context = tls.server_ssl_context(tls.Pki(pki), tls.HUB) if pki is not None else None
    server = HttpServer(app, context)
    bound = await server.start(host, port, reuse_port=reuse_port)
    log.info("json api listening on %s:%d (%s)", host, bound, "mTLS" if pki else "dev mode")
    return RunningJsonApi(app, server, bound)
