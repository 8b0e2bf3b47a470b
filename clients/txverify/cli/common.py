"""What the commands that start servers share: the settings' defaults, the exit code for
bad input, bank codes, and the refusal to listen off loopback without TLS."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from txverify.banks import is_member_code
from txverify.cli.network import DEFAULT_BANKS
from txverify.hub.settings import HubSettings
from txverify.runtime import tls
from txverify.simulators.settings import SimulatorSettings

err = Console(stderr=True, soft_wrap=True)

# The hub's flag defaults, from its settings (defined once, in txverify.hub.settings).
HUB_DEFAULTS = HubSettings()
BANKS_DEFAULTS = SimulatorSettings(codes=DEFAULT_BANKS)  # the simulated banks' defaults, likewise
RATE_LIMIT_BURST = 100  # the default burst once --rate-limit-rps sets a rate

# Exit code of a command given bad input (typer's own for bad flags).
EXIT_BAD_INPUT = 2


def raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def codes_of(text: str) -> list[str]:
    codes = [c.strip() for c in text.split(",") if c.strip()]
    for code in codes:
        if not is_member_code(code):
            raise typer.BadParameter(f"bank codes are 3 digits, got {code!r}")
    if len(set(codes)) != len(codes):
        raise typer.BadParameter("a bank code is listed twice")
    return codes


def refuse_plaintext_beyond_loopback(command: str, host: str) -> None:
    """Exit 2 before anything starts when a network without TLS is asked to listen off
    loopback: the hub (dev mode) and the simulated banks would refuse it anyway."""
    refused = tls.plaintext_host_error(
        host,
        f"without TLS `{command}` trusts a header for identity and the simulated banks "
        "authenticate nobody",
    )
    if refused:
        err.print(f"[red]{command}: {escape(refused)}[/]")
        raise typer.Exit(EXIT_BAD_INPUT)
