"""Restart to first OK as a script: the banks SIGKILLed and started again while 014's slips
go through two hubs. What runs and what is measured: txverify.cli.faultlab.restart.

    python bench/restart_recovery.py [--restarts 10] [--down 8] [--rate 20] [--json out.json]
    make bench-restarts

Exits 1 when a figure is over `--limit` (or 014 never verified again).
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
