"""The options every client command shares, declared once: where the hub and the
simulator are, who the caller is, and its certificates.

Each falls back to its TXVERIFY_* variable, then to the network `txverify up`
recorded (txverify.cli.network.resolve_target and control_target), then to the
default address.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from txverify import units
from txverify.client import DEFAULT_HUB

HubOpt = Annotated[
    str | None,
    typer.Option(
        "--hub",
        envvar="TXVERIFY_HUB",
        help=f"Hub host:port (default: as `txverify up` recorded, else {DEFAULT_HUB}).",
    ),
]
MemberOpt = Annotated[
    str,
    typer.Option(
        "--member",
        envvar="TXVERIFY_MEMBER",
        help="Member to speak for (default: the one `txverify up` recorded).",
    ),
]
CertsOpt = Annotated[
    Path | None,
    typer.Option(
        "--certs",
        envvar="TXVERIFY_CERTS",
        help="Certificate directory: call over mTLS (default: the one `txverify up --tls` "
        "recorded).",
    ),
]
ControlOpt = Annotated[
    str | None,
    typer.Option(
        "--control",
        envvar="TXVERIFY_CONTROL",
        help="Simulator control host:port (default: the network `txverify up` recorded).",
    ),
]


def bangkok_time(text: str | None, flag: str) -> datetime | None:
    """An ISO date or date-time from the command line, in Bangkok time unless it has an
    offset, or BadParameter naming `flag`; None when not given."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            "an ISO date or date-time, e.g. 2026-11-27T14:00 (Bangkok time unless an offset "
            "is given)",
            param_hint=flag,
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=units.BANGKOK)
