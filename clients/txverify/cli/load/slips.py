"""The slips a load sends, by kind: from a `txverify slips export --kinds` file, or fetched
from the simulated banks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from txverify.cli.failures import SIMULATOR, failure_line, unreachable_cause
from txverify.cli.load.plan import KINDS, BadInput, LoadError, Unreachable
from txverify.cli.slipkinds import broken, iter_slips, not_found, round_robin, unknown_issuer
from txverify.client.channels import control_channel
from txverify.errors import details_of
from txverify.v1 import common_pb2


def read_slips(path: Path) -> dict[str, list[str]]:
    """A `txverify slips export --kinds` file: KIND<TAB>QR per line (malformed = bad)."""
    pools: dict[str, list[str]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--slips {path}: {exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        kind, tab, qr = line.strip().partition("\t")
        kind = "bad" if kind == "malformed" else kind
        if not tab or kind not in KINDS:
            raise BadInput(f"{path}:{n}: expected KIND<TAB>QR with KIND one of {', '.join(KINDS)}")
        pools.setdefault(kind, []).append(qr.strip())
    return pools


def fetch_slips(
    control: str, generated: int = 1000, *, certs: Path | None = None
) -> dict[str, list[str]]:
    """Slips of every kind from the simulated banks (BankSimulator at `control`; over
    mTLS with the operator's or QA's certificate from `certs`)."""
    from txverify.v1 import simulator_pb2, simulator_pb2_grpc

    visible, expired = simulator_pb2.SLIP_STATE_VISIBLE, simulator_pb2.SLIP_STATE_EXPIRED
    valid: dict[str, list[str]] = {}
    old: dict[str, list[str]] = {}
    unsettled: dict[str, list[str]] = {}
    try:
        with control_channel(control, certs=certs) as channel:
            stub: Any = simulator_pb2_grpc.BankSimulatorStub(channel)
            banks = [
                b.code for b in stub.ListBanks(simulator_pb2.ListBanksRequest(), timeout=10).banks
            ]
            for bank in banks:
                for s in iter_slips(stub, bank):
                    completed = s.transaction.status == common_pb2.TRANSACTION_STATUS_COMPLETED
                    if s.state == visible and completed:
                        valid.setdefault(bank, []).append(s.qr_text)
                    elif s.state == expired:
                        old.setdefault(bank, []).append(s.qr_text)
                    elif s.state == simulator_pb2.SLIP_STATE_PENDING:
                        unsettled.setdefault(bank, []).append(s.qr_text)
    except grpc.RpcError as error:
        d = details_of(error)
        line = failure_line(d, control, SIMULATOR, markup=False)
        raise (Unreachable if unreachable_cause(d) else LoadError)(line) from None
    except OSError as exc:  # a certificate or key file missing or unreadable
        raise BadInput(f"certificates in {certs}: {exc}") from None
    ok = round_robin(valid, sum(map(len, valid.values())))
    return {
        "valid": ok,
        "expired": round_robin(old, sum(map(len, old.values()))),
        "pending": round_robin(unsettled, sum(map(len, unsettled.values()))),
        "notfound": not_found(banks, generated),
        "bad": [broken(ok[i % len(ok)], i) for i in range(generated)] if ok else [],
        "unknownissuer": [unknown_issuer(i) for i in range(generated // 10)],
    }
