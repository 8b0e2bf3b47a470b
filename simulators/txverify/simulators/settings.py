"""How to run a set of simulated banks: SimulatorSettings, its defaults defined here once.

`txverify banks` builds it from its flags, then TXVERIFY_BANKS_* environment
variables, then these defaults, which its --help shows. Light to import: the CLI
reads it for every command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from txverify.runtime import tls
from txverify.runtime.storage import MEMORY_URL
from txverify.simulators.profiles import profile

MAX_RETENTION_DAYS = 400  # the seeded accounts are opened 400 days back
MAX_PENDING_SECONDS = 86_400.0
# Without TLS nobody is authenticated: any caller could transfer money, read every
# slip through the control API, or query an issuer directly.
_PLAINTEXT = (
    "without TLS the simulator authenticates nobody on its issuer ports and control API "
    "(BankSimulator: transfers, every slip)",
    "--tls (txverify up) or --certs DIR (txverify banks)",
)


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    """How to run a set of simulated banks."""

    codes: tuple[str, ...]
    host: str = "127.0.0.1"  # without pki: loopback only
    control_port: int = 0
    data_dir: Path | None = None  # None: in-memory ledgers, gone at exit
    seed: int = 1
    transactions: int = 2000  # seeded per bank, only into an empty ledger
    # Days a slip stays verifiable at every bank; None: each bank's own
    # (profiles.RETENTION_DAYS: 30 at some, 7 at others).
    retention_days: int | None = None
    # Certificate directory (txverify certs init): the issuer ports then require
    # mTLS (the hub's certificate), the control port too (the operator's or QA's).
    pki: Path | None = None
    # Fixed issuer ports by bank code (others: any free port). A bank restarted on
    # its port is found again by a hub that registered that address.
    issuer_ports: dict[str, int] = field(default_factory=dict)
    # Seconds a new transfer stays pending (SLIP_PENDING) by bank code; others:
    # their profile's window (none).
    pending_seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.codes:
            raise ValueError("at least one bank code is needed")
        if len(set(self.codes)) != len(self.codes):
            raise ValueError("a bank code is listed twice")
        for code in self.codes:
            profile(code)  # validates the code
        if unknown := sorted(set(self.issuer_ports) - set(self.codes)):
            raise ValueError(f"issuer ports given for banks not simulated: {', '.join(unknown)}")
        if any(not 0 <= p <= 65535 for p in self.issuer_ports.values()):
            raise ValueError("issuer ports must be 0-65535")
        if self.transactions < 0:
            raise ValueError("transactions must not be negative")
        if self.retention_days is not None and not 1 <= self.retention_days <= MAX_RETENTION_DAYS:
            raise ValueError(f"retention_days must be 1-{MAX_RETENTION_DAYS}")
        if unknown := sorted(set(self.pending_seconds) - set(self.codes)):
            raise ValueError(f"pending windows given for banks not simulated: {', '.join(unknown)}")
        if any(not 0 <= s <= MAX_PENDING_SECONDS for s in self.pending_seconds.values()):
            raise ValueError(f"pending windows must be 0-{MAX_PENDING_SECONDS} seconds")
        if self.pki is None and (refused := tls.plaintext_host_error(self.host, *_PLAINTEXT)):
            raise ValueError(refused)

    def retention_for(self, code: str) -> int:
        """The bank's retention: --retention-days when given, else its own."""
        return self.retention_days or profile(code).retention_days

    def pending_window_for(self, code: str) -> timedelta:
        """How long the bank's new transfers stay pending."""
        seconds = self.pending_seconds.get(code)
        return profile(code).pending_window if seconds is None else timedelta(seconds=seconds)

    def ledger_url(self, code: str) -> str:
        if self.data_dir is None:
            return MEMORY_URL
        return f"sqlite:///{(self.data_dir / f'bank-{code}.sqlite').resolve()}"
