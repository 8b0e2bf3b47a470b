"""The issuer fault matrix: one simulated bank misbehaves while the others carry load.

    python bench/fault_matrix.py [--seconds 8] [--healthy-rate 150 | --healthy-concurrency 16]
                           [--json faults.json]
    make bench-faults      # closed loop: healthy throughput at full load, fault vs no fault

Real processes on loopback: `txverify banks` (002, 004 healthy; 014 the faulty
one, with --data so its ledgers can be read afterwards) and `txverify hub`
(issuer timeout 0.5 s, circuit opens after 3 consecutive failures spanning at least
0.5 s, probes again after 1 s, durable audit on). Phases, each `--seconds` long, in one run: no
fault, then 014 refuses connections, hangs, answers after 1.5 s (past the
timeout), fails 30% of inquiries with INTERNAL, flaps (1 s down in every 2 s).

During every phase two drivers run at once: slips of the healthy issuers, in an
open loop at `--healthy-rate` per second (or a closed loop of
`--healthy-concurrency` callers, the capacity figure), and slips of 014 in an
open loop at `--faulty-rate`. Per phase it reports the answers for 014 by
status/reason/cause, when its circuit opened, how fast answers come once it is
open, how long 014 took to verify again after the fault was cleared, and the
healthy issuers' throughput and latency against the no-fault phase.

The matrix itself is txverify.cli.faultlab.matrix: `judge()` lists every expectation a
phase missed; tests/test_fault_matrix.py runs the matrix and asserts there are none;
this script exits 1 when there are any.
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
