"""The issuer fault matrix on real processes: one bank refuses, hangs, is slow past the
deadline, fails 30% of inquiries or flaps, while two healthy banks carry load.

bench/fault_matrix.py runs the phases (see its docstring); here they run once, in an open
loop of 100 healthy verifications/s and 20/s for the faulty bank, and every
expectation is asserted: the answers for the faulty bank, fail-fast once its circuit
is open, recovery after the fault is cleared, the healthy banks' throughput (at
least 90% of the no-fault phase) and latency, every answer audited, and no personal
data in the hub's log, its database or any error message.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from txverify.cli.faultlab.matrix import (
    BREAKER_COOLDOWN,
    BREAKER_FAILING_SECONDS,
    FAULTS,
    ISSUER_TIMEOUT,
    Driver,
    Load,
    Network,
    Phase,
    judge,
    run_matrix,
    start_network,
)

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

LOAD = Load(seconds=2.5, healthy_rate=100.0, faulty_rate=20.0)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    running = start_network(tmp_path_factory.mktemp("faults"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def matrix(network: Network) -> tuple[dict[str, Phase], Driver]:
    phases, driver = asyncio.run(run_matrix(network, LOAD))
    print()
    for p in phases:
        print(p.summary)
    return {p.fault: p for p in phases}, driver


@pytest.mark.timeout(180)
def test_every_phase_meets_its_expectations(matrix: tuple[dict[str, Phase], Driver]) -> None:
    phases, _ = matrix

    assert [f.name for f in FAULTS] == list(phases)
    assert [] == judge(list(phases.values()), tail_latency=False)


@pytest.mark.parametrize(
    ("fault", "first_failure"),
    [
        ("refuse", "UNAVAILABLE/ISSUER_UNAVAILABLE"),
        ("hang", "DEADLINE_EXCEEDED/ISSUER_TIMEOUT"),
        ("slow", "DEADLINE_EXCEEDED/ISSUER_TIMEOUT"),
    ],
)
def test_a_dead_issuer_fails_until_its_circuit_opens_then_fails_fast(
    matrix: tuple[dict[str, Phase], Driver], fault: str, first_failure: str
) -> None:
    phase = matrix[0][fault]
    by_time = sorted(phase.faulty, key=lambda a: a.sent)
    opened = phase.summary["circuit_open_after_s"]

    assert first_failure == by_time[0].outcome
    # Failures in a row for BREAKER_FAILING_SECONDS open it; the first ends after
    # the issuer timeout (a refusal: at once).
    assert opened is not None
    assert opened < ISSUER_TIMEOUT + BREAKER_FAILING_SECONDS + 0.5
    assert "UNAVAILABLE/ISSUER_UNAVAILABLE/circuit_open" == by_time[-1].outcome
    assert phase.summary["fail_fast_p50_ms"] < 50


def test_an_issuer_failing_30_percent_still_answers_most_inquiries(
    matrix: tuple[dict[str, Phase], Driver],
) -> None:
    answers = matrix[0]["errors30"].summary["faulty_answers"]
    failed = answers.get("UNAVAILABLE/ISSUER_ERROR", 0)

    # Every inquiry reached the issuer (its circuit never opened), and the hub
    # relayed its answers as they were: 0.7 OK expected, n = 50 (3.9 sd to 0.95).
    assert {"OK", "UNAVAILABLE/ISSUER_ERROR"} >= set(answers)
    assert failed > 0
    assert 0.4 < answers.get("OK", 0) / (answers.get("OK", 0) + failed) < 0.95


def test_a_flapping_issuer_answers_while_it_is_up(
    matrix: tuple[dict[str, Phase], Driver],
) -> None:
    answers = matrix[0]["flap"].summary["faulty_answers"]

    assert answers.get("OK", 0) > 0
    assert answers.get("UNAVAILABLE/ISSUER_UNAVAILABLE", 0) > 0


def test_each_issuer_recovers_within_a_cooldown_of_the_fault_ending(
    matrix: tuple[dict[str, Phase], Driver],
) -> None:
    recovered = {name: p.summary["recovered_s"] for name, p in matrix[0].items()}

    # A circuit still open waits out its cooldown, then one probe closes it; a
    # refused connection also waits for gRPC's reconnect backoff (about a second).
    assert all(s is not None and s < BREAKER_COOLDOWN + 3 for s in recovered.values()), recovered


def _personal_data(ledgers: Path) -> set[str]:
    """Every full name, surname, account and proxy number the banks hold (never to leave them)."""
    found: set[str] = set()
    for path in ledgers.glob("bank-*.sqlite"):
        with sqlite3.connect(path) as conn:
            for name_th, name_en, account in conn.execute(
                "SELECT name_th, name_en, account_number FROM accounts"
            ):
                found |= {name_th, name_en, name_th.split()[-1], name_en.split()[-1], account}
            found |= {v for (v,) in conn.execute("SELECT value FROM proxies")}
    return found


def test_every_answer_is_audited_and_nothing_personal_leaks(
    matrix: tuple[dict[str, Phase], Driver], network: Network
) -> None:
    _, driver = matrix
    network.hub.stop()  # SIGTERM: drains, flushes the log and the audit
    with sqlite3.connect(network.hub_db) as conn:
        audited = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    personal = _personal_data(network.data)
    log = network.hub_log.read_text(encoding="utf-8")
    stored = b"".join(p.read_bytes() for p in network.hub_db.parent.glob("hub.sqlite*"))
    errors = "\n".join(driver.errors_seen)

    assert driver.calls == audited
    assert len(personal) > 200
    assert len(driver.errors_seen) > 100
    assert len(log) > 10_000
    leaks = sorted(v for v in personal if v in log or v in errors or v.encode() in stored)
    assert [] == leaks
