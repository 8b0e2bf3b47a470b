"""Restart to first OK: the banks' process is SIGKILLed and started again on the same port
while bank 014's slips go through the hub; how soon after 014 listens again it verifies.

    python bench/restart_recovery.py [--restarts 10] [--down 8] [--rate 20] [--json out.json]
    make bench-restarts

Real processes on loopback: `txverify banks --data DIR --issuer-port 014=P` (the same
ledgers and port after every restart) and two `txverify hub`s routing to it, side by side
so every restart is measured under both settings at once: one with the hub's defaults
(issuer timeout 5 s, circuit open after 5 consecutive failures, 5 s cooldown) and one with
the fault matrix's (0.5 s, 3, 1 s). Each hub gets 014's slips at `--rate` per second (open
loop) the whole time. Per restart: SIGKILL, `--down` seconds, the banks started again; the
moment 014's port accepts a TCP connection again is "listening"; the figure is the time
from then to the first OK answer of each hub. It also counts each hub's answers between
the kill and that OK, and how fast the open circuit answered meanwhile.

tests/test_bank_restart.py runs 3 restarts and asserts every figure is under 1 s; run as a
script it exits 1 when a figure is over `--limit` (or 014 never verified again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from txverify.cli.faultlab.restart import HUBS, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--down", type=float, default=8.0, help="seconds between kill and start")
    parser.add_argument("--rate", type=float, default=20.0, help="014's slips per second per hub")
    parser.add_argument("--limit", type=float, default=1.0, help="exit 1 above this (seconds)")
    parser.add_argument("--json", type=Path, help="write every restart's figures here")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="txverify-restarts-") as tmp:
        results = asyncio.run(measure(Path(tmp), restarts=a.restarts, down=a.down, rate=a.rate))
    for r in results:
        print(json.dumps(asdict(r)))
    over = []
    for name in HUBS:
        figures = [r.to_first_ok_s[name] for r in results]
        shown = ", ".join("never" if f is None else f"{f:.3f}" for f in figures)
        print(f"{name:8} restart -> first OK (s): {shown}")
        over += [f"{name} #{i}" for i, f in enumerate(figures, 1) if f is None or f >= a.limit]
    if a.json:
        a.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"{len(results)} restarts; over {a.limit} s: {', '.join(over) or 'none'}")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
