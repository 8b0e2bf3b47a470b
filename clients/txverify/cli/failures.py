"""One line for a failed call, as the CLI prints it.

A server that is not there (nothing listens, the name does not resolve) fails
the call in gRPC itself, as UNAVAILABLE with a transport message and no
ErrorInfo ("failed to connect to all addresses; last error: UNKNOWN: ipv4:...:
Connection refused"). That says neither which server was meant nor what to do,
so it becomes one line naming both; any other failure keeps the server's status,
reason and message.
"""

from __future__ import annotations

import grpc
from rich.markup import escape

from txverify.client.channels import explain_refusal
from txverify.errors import ErrorDetails
from txverify.runtime import tls

# What gRPC's transport says (core's messages), and the cause a person reads.
_CAUSES = (
    ("Connection refused", "connection refused"),
    ("DNS resolution failed", "its name does not resolve"),
    ("errors resolving", "its name does not resolve"),
    ("Domain name not found", "its name does not resolve"),
    ("Name or service not known", "its name does not resolve"),
    ("No route to host", "no route to the host"),
    ("Network is unreachable", "the network is unreachable"),
    ("Connection timed out", "the connection timed out"),
    ("Timeout occurred", "the connection timed out"),
    ("failed to connect to all addresses", "nothing answered"),
)
HUB = ("hub", tls.HUB_DNS, "start one with `txverify up`, or give --hub (TXVERIFY_HUB)")
SIMULATOR = (
    "simulator control API",
    tls.SIMULATOR_DNS,
    "start the banks with `txverify up` or `txverify banks`, or give --control (TXVERIFY_CONTROL)",
)


def unreachable_cause(details: ErrorDetails) -> str | None:
    """Why nothing answered, when the call failed for want of a server; else None."""
    if details.status != grpc.StatusCode.UNAVAILABLE or details.reason:
        return None
    if explain_refusal(details, "") is not details:
        return None  # something answered, with a certificate not of the server meant
    for said, cause in _CAUSES:
        if said in details.message:
            return cause
    return None


def failure_line(
    details: ErrorDetails, address: str, server: tuple[str, str, str], *, markup: bool = True
) -> str:
    """The failure in one line: what to start when no server answered. With `markup`,
    for a rich console (the status in red, the rest escaped); else plain text."""
    what, name, start = server
    cause = unreachable_cause(details)
    if cause is not None:
        head, rest = f"no {what} answers at {address}", f"({cause}): {start}"
    else:
        d = explain_refusal(details, name)
        head = " ".join(p for p in (d.status.name, d.reason) if p)
        rest = " ".join(p for p in (d.code, d.message) if p)
    if not markup:
        return f"{head} {rest}".rstrip()
    return f"[red]{escape(head)}[/] {escape(rest)}".rstrip()
