"""Coverage-guided fuzzing of txverify with atheris: every target in turn, a summary at the end.

    python fuzz/run.py --seconds 60            # each target for 60 s (make fuzz)
    python fuzz/run.py --seconds 60 registry audit   # only these targets
    python fuzz/run.py --runs 20000 verify     # one target, a fixed number of inputs
    python fuzz/run.py --replay verify FILE    # re-run saved inputs without atheris

Each target runs in its own process (libFuzzer takes the process over) with a
memory ceiling (-rss_limit_mb: exceeding it is a crash, "out-of-memory"). Seeds
are generated afresh (seed_corpus.py); the inputs the fuzzer finds go to a
temporary corpus unless --corpus names a directory to keep them. Per target it
prints the inputs tried, the time, the peak RSS and the crashes, and for the
targets that count them (registry, audit: rpc_checks.RpcCounts) the RPCs tried
by method and status; a crash leaves the input that caused it (and libFuzzer's
log) in the artifacts directory, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from rpc_checks import COUNTS_ENV, read_counts
from seed_corpus import TARGETS, write_seeds

HERE = Path(__file__).resolve().parent
ENGINE = HERE / "atheris_main.py"
# Per-input time limit: every target answers in milliseconds; a minute is a hang.
INPUT_TIMEOUT_S = 60
# Longer inputs than this are not worth the time: a QR holds at most 512 characters.
MAX_INPUT_BYTES = 8192
_CRASH_PREFIXES = ("crash-", "oom-", "timeout-", "leak-")


@dataclass(frozen=True, slots=True)
class Result:
    """What one target's run found."""

    target: str
    executions: int
    seconds: float
    start_rss_mb: int
    peak_rss_mb: int
    coverage: int
    corpus: int
    crashes: list[Path]
    returncode: int
    log: Path
    rpcs: dict[str, dict[str, int]]  # RPCs tried by method, then status (some targets)

    @property
    def failed(self) -> bool:
        return bool(self.crashes) or self.returncode != 0


def _stat(log: str, name: str) -> int:
    found = re.search(rf"stat::{name}:\s+(\d+)", log)
    return int(found[1]) if found else 0


def _status(log: str, field: str, event: str = "") -> int:
    """A figure from libFuzzer's status lines ("#123 NEW cov: 45 ... rss: 60Mb"): the
    first line of `event` (e.g. INITED), else the last status line."""
    lines = [line for line in log.splitlines() if re.match(rf"#\d+\s+{event or '[A-Z]+'}\s", line)]
    if event:
        lines = lines[:1]
    found = re.search(rf"{field}: (\d+)", lines[-1]) if lines else None
    return int(found[1]) if found else 0


def fuzz(
    target: str,
    *,
    seconds: int | None,
    runs: int | None,
    rss_limit_mb: int,
    corpus: Path,
    seeds: Path,
    artifacts: Path,
) -> Result:
    """Run one target under libFuzzer until the time or run budget is spent, or a crash."""
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    budget = f"-runs={runs}" if runs is not None else f"-max_total_time={seconds}"
    command = [
        sys.executable,
        str(ENGINE),
        target,
        str(corpus),  # new inputs are written to the first directory
        str(seeds),
        budget,
        f"-rss_limit_mb={rss_limit_mb}",
        f"-timeout={INPUT_TIMEOUT_S}",
        f"-max_len={MAX_INPUT_BYTES}",
        f"-artifact_prefix={artifacts}/{target}-",
        "-print_final_stats=1",
    ]
    log = artifacts / f"{target}.log"
    counts = artifacts / f"{target}.counts.json"
    counts.unlink(missing_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"txverify-fuzz-{target}-", dir=_scratch_base()))
    started = time.monotonic()
    try:
        with log.open("wb") as out:
            returncode = subprocess.run(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TXVERIFY_FUZZ_DIR": str(scratch), COUNTS_ENV: str(counts)},
                check=False,
            ).returncode
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    crashes = sorted(
        p
        for p in artifacts.glob(f"{target}-*")
        if p.name.startswith(tuple(f"{target}-{prefix}" for prefix in _CRASH_PREFIXES))
    )
    return Result(
        target=target,
        executions=_stat(text, "number_of_executed_units"),
        seconds=elapsed,
        start_rss_mb=_status(text, "rss", "INITED"),
        peak_rss_mb=_stat(text, "peak_rss_mb") or _status(text, "rss"),
        coverage=_status(text, "cov"),
        corpus=_status(text, "corp"),
        crashes=crashes,
        returncode=returncode,
        log=log,
        rpcs=read_counts(counts),
    )


def _scratch_base() -> str | None:
    """tmpfs for the hub's audit database when there is one (see offline_hub._scratch_dir)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def replay(target: str, files: list[Path]) -> int:
    """Run saved inputs through a target without atheris; print each failure's traceback."""
    test_one_input = importlib.import_module(f"{target}_target").TestOneInput
    failures = 0
    for path in files:
        try:
            test_one_input(path.read_bytes())
        except Exception:
            failures += 1
            print(f"{path}: FAILED")
            traceback.print_exc()
        else:
            print(f"{path}: ok")
    return 1 if failures else 0


def _report(results: list[Result]) -> None:
    print()
    print(f"{'target':<10} {'inputs':>10} {'seconds':>8} {'exec/s':>8} {'RSS MB':>12} "
          f"{'cov':>6} {'corpus':>7} {'crashes':>8}")  # fmt: skip
    for r in results:
        rate = r.executions / r.seconds if r.seconds else 0.0
        rss = f"{r.start_rss_mb}->{r.peak_rss_mb}"
        print(f"{r.target:<10} {r.executions:>10} {r.seconds:>8.1f} {rate:>8.0f} {rss:>12} "
              f"{r.coverage:>6} {r.corpus:>7} {len(r.crashes):>8}")  # fmt: skip
    total = sum(r.executions for r in results)
    print(f"{'total':<10} {total:>10}")
    for r in results:
        for rpc, by_status in sorted(r.rpcs.items()):
            statuses = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
            print(f"  {r.target} {rpc}: {sum(by_status.values())} RPCs ({statuses})")
    for r in results:
        if r.failed:
            print(f"\n{r.target}: FAILED (exit {r.returncode}); log {r.log}")
            for crash in r.crashes:
                print(f"  input: {crash}")
                print(f"  replay: {sys.executable} {__file__} --replay {r.target} {crash}")
            tail = r.log.read_text(errors="replace").splitlines()[-25:]
            print("\n".join(f"  | {line}" for line in tail))
    if not any(r.failed for r in results):
        print("\nno crashes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=int, default=None, help="per target (default 60)")
    budget.add_argument("--runs", type=int, default=None, help="inputs per target")
    parser.add_argument("--rss-limit-mb", type=int, default=1024, help="memory ceiling")
    parser.add_argument("--corpus", type=Path, help="keep found inputs in DIR/TARGET")
    parser.add_argument("--artifacts", type=Path, help="crash inputs and logs (default: temp)")
    parser.add_argument(
        "--replay", nargs="+", metavar="ARG", help="TARGET FILE...: re-run inputs without atheris"
    )
    args = parser.parse_args(argv)
    if args.replay:
        if len(args.replay) < 2:
            parser.error("--replay TARGET FILE...")
        return replay(args.replay[0], [Path(p) for p in args.replay[1:]])
    targets = args.targets or list(TARGETS)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    seconds = 60 if args.seconds is None and args.runs is None else args.seconds
    work = Path(tempfile.mkdtemp(prefix="txverify-fuzz-"))
    artifacts = args.artifacts or work / "artifacts"
    results: list[Result] = []
    try:
        for target in targets:
            seeds = work / "seeds" / target
            count = write_seeds(target, seeds)
            corpus = (args.corpus or work / "corpus") / target
            how = f"{args.runs} inputs" if args.runs is not None else f"{seconds} s"
            print(f"fuzzing {target}: {how}, {count} seeds, RSS limit {args.rss_limit_mb} MB",
                  flush=True)  # fmt: skip
            results.append(
                fuzz(
                    target,
                    seconds=seconds,
                    runs=args.runs,
                    rss_limit_mb=args.rss_limit_mb,
                    corpus=corpus,
                    seeds=seeds,
                    artifacts=artifacts,
                )
            )
        _report(results)
    finally:
        # Keep what a crash left behind; a clean run leaves nothing (unless asked to).
        failed = any(r.failed for r in results)
        shutil.rmtree(work / "seeds", ignore_errors=True)
        shutil.rmtree(work / "corpus", ignore_errors=True)
        if not failed and args.artifacts is None:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r.failed for r in results) or len(results) < len(targets) else 0


if __name__ == "__main__":
    sys.exit(main())
