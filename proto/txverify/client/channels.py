"""Channels to the hub and to the simulator's control API: plaintext, or mTLS pinned by name.

Under mTLS a client presents its certificate and checks the server's by the
name only that server's certificate carries (tls.HUB_DNS, tls.SIMULATOR_DNS),
whatever address it dials: every certificate of the CA is valid for its own
holder, so checking the address alone would let a member's server (or any
other party's) answer as the hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from txverify.errors import ErrorDetails
from txverify.runtime import tls

__all__ = [
    "control_aio_channel",
    "control_channel",
    "control_identity",
    "explain_refusal",
    "hub_aio_channel",
    "hub_channel",
]

Options = Sequence[tuple[str, Any]]
# What grpc says when the server's certificate lacks the name the client pinned
# (grpc 1.85; older releases: "Peer name NAME is not in peer certificate").
_NAME_REFUSED = ("Hostname Verification Check failed", "is not in peer certificate")


def _credentials(certs: Path, identity: str) -> grpc.ChannelCredentials:
    if not identity:
        raise ValueError("mTLS needs the identity whose certificate to present")
    return tls.channel_credentials(tls.Pki(certs), identity)


def hub_channel(
    hub: str, *, certs: Path | None = None, identity: str = "", options: Options = ()
) -> grpc.Channel:
    """A channel to the hub: mTLS with `identity`'s certificate from `certs`, accepting only
    the hub's certificate (hub.txverify), else plaintext (dev mode, where the hub trusts
    loopback callers to name themselves)."""
    if certs is None:
        return grpc.insecure_channel(hub, options=options)
    pinned = (*options, *tls.channel_options(tls.HUB_DNS))
    return grpc.secure_channel(hub, _credentials(certs, identity), options=pinned)


def hub_aio_channel(
    hub: str, *, certs: Path | None = None, identity: str = "", options: Options = ()
) -> grpc.aio.Channel:
    """hub_channel for asyncio; create it inside the event loop that will use it."""
    if certs is None:
        return grpc.aio.insecure_channel(hub, options=options)
    pinned = (*options, *tls.channel_options(tls.HUB_DNS))
    return grpc.aio.secure_channel(hub, _credentials(certs, identity), options=pinned)


def control_identity(certs: Path) -> str:
    """Whose certificate a client of the control API presents from `certs`: the operator's,
    or QA's in a directory that holds QA's and not the operator's."""
    pki = tls.Pki(certs)
    for name in (tls.OPERATOR, tls.QA):
        files = pki.files(name)
        if files.cert.exists() and files.key.exists():
            return name
    return tls.OPERATOR  # missing: reading its files says which one


def control_channel(address: str, *, certs: Path | None = None) -> grpc.Channel:
    """A channel to the simulator's control API (BankSimulator): under mTLS as the operator
    (control_identity), accepting only the simulator's certificate; else plaintext."""
    if certs is None:
        return grpc.insecure_channel(address)
    credentials = _credentials(certs, control_identity(certs))
    return grpc.secure_channel(address, credentials, tls.channel_options(tls.SIMULATOR_DNS))


def control_aio_channel(address: str, *, certs: Path | None = None) -> grpc.aio.Channel:
    """control_channel for asyncio; create it inside the event loop that will use it."""
    if certs is None:
        return grpc.aio.insecure_channel(address)
    credentials = _credentials(certs, control_identity(certs))
    return grpc.aio.secure_channel(address, credentials, tls.channel_options(tls.SIMULATOR_DNS))


def explain_refusal(details: ErrorDetails, server_name: str) -> ErrorDetails:
    """`details`, saying which name was wanted when the server's certificate did not carry
    it (grpc's own message names neither the name nor what it means)."""
    if details.status != grpc.StatusCode.UNAVAILABLE or not any(
        m in details.message for m in _NAME_REFUSED
    ):
        return details
    return replace(
        details,
        message=f"{details.message} (the server's certificate does not name {server_name}: "
        "it is not the server meant, and nothing was sent to it)",
    )
