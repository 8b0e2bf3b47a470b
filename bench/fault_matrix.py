"""The issuer fault matrix as a script: one simulated bank misbehaves while the others carry
load. What runs and what is judged: txverify.cli.faultlab.matrix (its docstring).

    python bench/fault_matrix.py [--seconds 8] [--healthy-rate 150 | --healthy-concurrency 16]
                           [--json faults.json]
    make bench-faults      # closed loop: healthy throughput at full load, fault vs no fault

Exits 1 when any expectation was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from txverify.cli.faultlab.matrix import FAULTS, Load, judge, run_matrix, start_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per phase")
    parser.add_argument("--healthy-rate", type=float, default=0.0, help="0 = closed loop")
    parser.add_argument("--healthy-concurrency", type=int, default=16)
    parser.add_argument("--faulty-rate", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="write the phases' figures here")
    parser.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a no-fault phase between every two faults (each fault judged against its neighbours)",
    )
    a = parser.parse_args()
    load = Load(a.seconds, a.healthy_rate, a.healthy_concurrency, a.faulty_rate)
    plain = FAULTS[0]
    order = list(FAULTS)
    if a.interleave:
        order = [plain] + [x for f in FAULTS if f.faults for x in (f, plain)]
    with tempfile.TemporaryDirectory(prefix="txverify-faults-") as tmp:
        network = start_network(Path(tmp))
        try:
            phases, _ = asyncio.run(run_matrix(network, load, order))
        finally:
            network.stop()
    for p in phases:
        print(json.dumps(p.summary))
    missed = judge(phases)
    for line in missed:
        print("NOT MET:", line)
    if a.json:
        a.json.write_text(
            json.dumps(
                {"load": asdict(load), "phases": [p.summary for p in phases], "missed": missed},
                indent=2,
            )
        )
    print(f"{len(phases)} phases, {len(missed)} expectations missed")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
