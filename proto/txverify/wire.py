"""Names on the wire that are not in the .proto files: defined here, once.

Clients in other languages need the same values: the member header in dev mode,
the W3C trace headers, and the health service names of issuers (on the hub and on a simulator's
control port).
"""

from __future__ import annotations

from txverify.v1 import issuer_pb2

# Dev mode only (loopback): the member a caller speaks for. Under mTLS the
# certificate names the member and the header is ignored.
MEMBER_HEADER = "x-member-id"

# W3C Trace Context (https://www.w3.org/TR/trace-context/): a caller's trace, taken
# from gRPC metadata or HTTP headers and passed on to the issuer.
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"

# VerifyRequest.slip_image: the largest image the hub reads, and how many pixels.
MAX_SLIP_IMAGE_BYTES = 2 * 1024 * 1024
MAX_SLIP_IMAGE_PIXELS = 25_000_000

ISSUER_SERVICE = issuer_pb2.DESCRIPTOR.services_by_name["IssuerService"].full_name


def issuer_health_name(code: str) -> str:
    """grpc.health.v1 service name of one issuer: `txverify.v1.IssuerService/CODE`."""
    return f"{ISSUER_SERVICE}/{code}"
