"""The 20-second soak (bench/soak.py): the hub at 70% of its capacity keeps its memory, open
descriptors and answers within bounds; and the soak does fail when a bound is broken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SOAK = ROOT / "bench" / "soak.py"
SECONDS, INTERVAL = 20, 2.0
MAX_RSS_GROWTH_MB, MAX_FD_GROWTH = 32, 8


def run_soak(report: Path, *args: str, timeout: float) -> tuple[int, str, dict[str, Any]]:
    """bench/soak.py with `args`: its exit status, its output and its report."""
    result = subprocess.run(
        [sys.executable, str(SOAK), "--report", str(report), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    print(result.stdout)
    assert report.exists(), result.stdout + result.stderr
    return result.returncode, result.stdout + result.stderr, json.loads(report.read_text())


@pytest.mark.timeout(150)
def test_hub_at_70_percent_of_capacity_for_20_s_stays_within_bounds(tmp_path: Path) -> None:
    status, output, report = run_soak(
        tmp_path / "soak.json",
        "--seconds", str(SECONDS), "--interval", str(INTERVAL), "--capacity-seconds", "3",
        "--load", "0.7", "--max-rss-growth-mb", str(MAX_RSS_GROWTH_MB),
        "--max-fd-growth", str(MAX_FD_GROWTH),
        timeout=140,
    )  # fmt: skip

    assert 0 == status, output
    samples, growth, load = report["samples"], report["growth"], report["load"]
    assert SECONDS / INTERVAL - 1 <= len(samples) <= SECONDS / INTERVAL + 1
    assert 0 == load["errors"]
    assert 0 == report["capacity"]["errors"]
    assert samples[-1]["t"] >= SECONDS - 2 * INTERVAL
    assert growth["hub_rss_mb"] <= MAX_RSS_GROWTH_MB
    assert growth["hub_fds"] <= MAX_FD_GROWTH
    assert load["rps_in_window"] >= 0.9 * report["target_rps"]
    assert {"passed": True, "reasons": []} == report["verdict"]
    first, last = samples[0], samples[-1]
    print(
        f"capacity {report['capacity']['rps']:.0f}/s, target {report['target_rps']:.0f}/s, "
        f"answered {load['rps_in_window']:.0f}/s, {load['requests']:,} requests, 0 errors; "
        f"hub RSS {first['hub_rss_mb']} -> {last['hub_rss_mb']} MB "
        f"(growth after warm-up {growth['hub_rss_mb']:+} MB), "
        f"fds {first['hub_fds']} -> {last['hub_fds']}"
    )


@pytest.mark.timeout(60)
def test_soak_fails_naming_the_errors_when_the_hub_refuses_requests(tmp_path: Path) -> None:
    """A hub limited to 10 verifications a second under 50 a second: RATE_LIMITED are errors."""
    status, output, report = run_soak(
        tmp_path / "soak.json",
        "--rate", "50", "--seconds", "4", "--interval", "1", "--transactions", "200",
        "--hub-arg=--rate-limit-rps=10", "--hub-arg=--rate-limit-burst=10",
        timeout=50,
    )  # fmt: skip

    assert 1 == status, output
    assert "FAILED errors:" in output
    assert "RATE_LIMITED" in output
    assert report["load"]["errors"] > 0
    assert not report["verdict"]["passed"]
    assert report["verdict"]["reasons"][0].startswith("errors:")
