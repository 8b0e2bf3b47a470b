"""Before/after: hubs from several source trees side by side with the yardstick, in one run.

    git worktree add /tmp/before a85f190
    python bench/compare.py before=/tmp/before after=. [--rounds 3] [--seconds 5] [--rate 500]
    python bench/compare.py plain=. uv=.:TXV_ENV=1    # NAME=TREE[:VAR=VALUE] sets env for that hub

Every hub is started from its own tree (`python -m txverify.cli hub`, with that
tree's source roots first on PYTHONPATH) against the same simulated banks, as in
bench/harness.py; then, alternating (the order flips each round), each server
gets an h2load closed loop and one of the load generator (CPU per request at
full load; h2load's requests name no request id, the load generator's each
name their own) and an open loop of the load generator at --rate requests/s
(latency). Prints medians and writes
them as JSON (--json). Needs h2load (make bench-tools).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

from harness import Bench, Run, bench_settings  # noqa: E402
from txverify.cli.faultlab.processes import READY, Server  # noqa: E402


def start_tree(name: str, spec: str, tmp: Path) -> Server:
    tree, _, assignment = spec.partition(":")
    path = Path(tree).resolve()
    # Trees from before M12 kept the packages at the top (clients.cli); since, the
    # txverify namespace spans five source roots.
    old_layout = (path / "clients" / "cli.py").exists()
    roots = ("", "proto") if old_layout else ("proto", "runtime", "server", "simulators", "clients")
    command = "clients.cli" if old_layout else "txverify.cli"
    env = dict(os.environ, PYTHONPATH=":".join(str(path / r) for r in roots))
    if assignment:
        key, _, value = assignment.partition("=")
        env[key] = value
    with (tmp / f"{name}.log").open("w") as stderr:
        popen = subprocess.Popen(
            [sys.executable, "-m", command, "hub", "--members", str(tmp / "members.toml"),
             "--port", "0", "--ready-line", "--db", f"sqlite:///{tmp / (name + '.sqlite')}",
             "--metrics-port", "0", "--rate-limit-rps", "1000000", "--rate-limit-burst", "100000"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=path,
        )  # fmt: skip
    server = Server(name, popen)
    assert popen.stdout is not None
    for line in popen.stdout:
        if line.startswith(READY):
            server.address = json.loads(line[len(READY) :])["address"]
            return server
    raise RuntimeError(f"the hub of {name} exited before it was ready; see {tmp / name}.log")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trees", nargs="+", metavar="NAME=TREE[:VAR=VALUE]")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=500.0, help="open loop, requests/s")
    parser.add_argument("--json", type=Path, default=Path("bench-compare.json"))
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        parser.error("h2load is not installed: make bench-tools")
    settings = bench_settings(args.seconds)
    with tempfile.TemporaryDirectory(prefix="txverify-compare-") as tmpdir:
        tmp = Path(tmpdir)
        bench = Bench(settings, tmp)
        bench.start()
        bench.servers.pop("hub").stop()  # the harness's own hub: replaced by the trees'
        results: dict[tuple[str, str], list[Run]] = {}
        try:
            for spec in args.trees:
                name, _, tree = spec.partition("=")
                bench.servers[name] = start_tree(name, tree, tmp)
            for name in bench.servers:  # warm-up
                bench.loadgen(name, "half", 0, rate=args.rate)
            for rnd in range(1, args.rounds + 1):
                names = list(bench.servers)
                for mode in ("h2load", "loadgen", "half"):
                    for name in names if rnd % 2 else reversed(names):
                        if mode == "h2load":
                            run = bench.h2load(name, rnd)
                        elif mode == "loadgen":  # named requests, each its own id
                            run = bench.loadgen(name, "max", rnd)
                        else:
                            run = bench.loadgen(name, "half", rnd, rate=args.rate)
                        bench.record(run)
                        results.setdefault((name, mode), []).append(run)
        finally:
            bench.stop()
    summary = {
        f"{name}/{mode}": {
            "cpu_s_per_1k": statistics.median(r.cpu_s_per_1k[name] for r in runs),
            "rps": statistics.median(r.rps for r in runs),
            "p50_ms": statistics.median(r.p50_ms for r in runs),
            "p99_ms": statistics.median(r.p99_ms for r in runs),
        }
        for (name, mode), runs in results.items()
    }
    print("\nmedians")
    for key, m in summary.items():
        print(
            f"{key:<20} CPU s/1k {m['cpu_s_per_1k']:.3f}  req/s {m['rps']:7.0f}  "
            f"p50 {m['p50_ms']:6.2f} ms  p99 {m['p99_ms']:6.2f} ms"
        )
    args.json.write_text(json.dumps({"trees": args.trees, "medians": summary}, indent=2) + "\n")
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
