"""The benchmarks run and print their figures (they are not timed here: see bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_bank_bench_runs_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "bank.json"
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "bank_bench.py"),
            "--seconds", "0.5", "--rounds", "1", "--concurrency", "8",
            "--transactions", "200", "--json", str(out),
        ],
        capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip

    assert 0 == result.returncode, result.stderr
    report = json.loads(out.read_text())
    assert {"bare", "bank"} == {run["config"] for run in report["runs"]}
    assert all(run["requests"] > 0 for run in report["runs"])
    assert report["summary"]["cpu_capacity_ratio_bank_over_bare"] > 0


@pytest.mark.timeout(240)
def test_hub_bench_runs_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "hub.json"
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "hub_bench.py"),
            "--seconds", "0.5", "--rounds", "1", "--rate", "100", "--json", str(out),
        ],
        capture_output=True, text=True, timeout=230, check=False,
    )  # fmt: skip

    assert 0 == result.returncode, result.stderr
    report = json.loads(out.read_text())
    assert {"on", "off"} == {run["config"] for run in report["runs"]}
    assert report["summary"]["cpu_capacity_ratio_on_over_off"] > 0


@pytest.mark.timeout(240)
def test_harness_runs_and_writes_its_json(tmp_path: Path) -> None:
    """`make bench`'s harness, for about a second per measurement: both servers, every mode."""
    out = tmp_path / "harness.json"
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "harness.py"),
            "--seconds", "1", "--rounds", "1", "--procs", "1", "--connections", "2",
            "--concurrency", "8", "--transactions", "200", "--no-h2load", "--json", str(out),
        ],
        capture_output=True, text=True, timeout=230, check=False,
    )  # fmt: skip

    assert 0 == result.returncode, result.stdout + result.stderr
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert {("yardstick", "max"), ("hub", "max"), ("yardstick", "half"), ("hub", "half")} == {
        (r["target"], r["mode"]) for r in runs
    }
    assert all(r["requests"] > 0 and r["failed"] == 0 for r in runs), runs
    assert all(r["cpu_s_per_1k"]["banks"] > 0 for r in runs)
    summary = report["summary"]
    assert summary["throughput_ratio_loadgen"] > 0
    assert summary["hub_cpu_s_per_1k"] > 0
    assert {"hub", "yardstick"} == set(summary["peak_rss_mb"])
    assert report["machine"]["cores"] >= 1
    assert "hub/yardstick" in result.stdout


@pytest.mark.timeout(240)
def test_image_mix_bench_runs_and_writes_its_ratio(tmp_path: Path) -> None:
    import shutil

    if shutil.which("h2load") is None:
        pytest.skip("bench/image_mix.py needs h2load (make bench-tools)")
    out = tmp_path / "images.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "image_mix.py"), "--seconds", "1", "--rounds", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=230, check=False,
    )  # fmt: skip

    assert 0 == result.returncode, result.stderr
    summary = json.loads(out.read_text())["summary"]
    assert summary["text_rps"] > 0
    assert summary["images_per_s_alone"] > 0
    assert summary["ratio"] > 0
