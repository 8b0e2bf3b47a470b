"""The CLI as users run it: `txverify up` in one process, `txverify verify` in another."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from txverify import miniqr

STARTUP_SECONDS = 30


@dataclass(frozen=True)
class UpNetwork:
    proc: subprocess.Popen[str]
    hub: str
    sample_qrs: list[str]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "clients.cli", *args]


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


@pytest.fixture
def network() -> Iterator[UpNetwork]:
    proc = subprocess.Popen(
        _cli("up", "--port", "0", "--seed", "7"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    hub, qrs = "", list[str]()
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while len(qrs) < 5 and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if match := re.search(r"hub at (\S+)", line):
                hub = match.group(1)
            if match := re.search(r"txverify verify (\S+)", line):
                qrs.append(match.group(1))
        assert hub, "txverify up did not print the hub address"
        assert 5 == len(qrs), "txverify up did not print a sample slip per bank"
        yield UpNetwork(proc, hub, qrs)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cli("verify", *args), capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.timeout(120)
def test_up_then_verify_every_printed_sample(network: UpNetwork) -> None:
    for qr in network.sample_qrs:
        result = _verify("--hub", network.hub, "--json", qr)

        assert 0 == result.returncode, result.stderr
        tx = json.loads(result.stdout)["transaction"]
        slip = miniqr.parse(qr)
        assert (slip.sending_bank, slip.trans_ref) == (tx["sendingBank"], tx["transRef"])
        assert tx["amount"]["satang"] > 0


@pytest.mark.timeout(120)
def test_verify_prints_a_table_and_exit_codes_tell_failures_apart(network: UpNetwork) -> None:
    qr = network.sample_qrs[0]
    slip = miniqr.parse(qr)

    table = _verify("--hub", network.hub, qr)
    by_ref = _verify("--hub", network.hub, "--bank", slip.sending_bank, "--ref", slip.trans_ref)
    bad_crc = _verify("--hub", network.hub, "--json", qr[:-1] + ("0" if qr[-1] != "0" else "1"))
    unknown = _verify("--hub", network.hub, "--bank", "014", "--ref", "NOSUCHREF123")
    not_member = _verify("--hub", network.hub, "--bank", "011", "--ref", "ABC123")

    assert (0, 0, 2, 3, 3) == (
        table.returncode,
        by_ref.returncode,
        bad_crc.returncode,
        unknown.returncode,
        not_member.returncode,
    )
    assert slip.trans_ref in table.stdout
    assert slip.trans_ref in by_ref.stdout
    error = json.loads(bad_crc.stdout)["error"]
    assert ("INVALID_SLIP_QR", "91") == (error["reason"], error["metadata"]["field"])
    assert "SLIP_NOT_FOUND" in unknown.stderr
    assert "ISSUER_NOT_FOUND" in not_member.stderr


def test_verify_against_no_hub_is_unavailable() -> None:
    result = _verify("--hub", "127.0.0.1:1", "--timeout", "2", "--bank", "014", "--ref", "ABC")

    assert 4 == result.returncode
    assert "UNAVAILABLE" in result.stderr


def test_verify_without_a_slip_is_a_usage_error() -> None:
    result = _verify()

    assert 2 == result.returncode
    assert "--bank" in result.stderr


@pytest.mark.timeout(120)
def test_up_stops_cleanly_on_ctrl_c(network: UpNetwork) -> None:
    network.proc.send_signal(signal.SIGINT)

    assert 0 == network.proc.wait(timeout=20)
    unreachable = _verify("--hub", network.hub, "--timeout", "2", network.sample_qrs[0])
    assert 4 == unreachable.returncode
