"""Scenario files: every shipped one passes on a fresh in-process network, and the runner
reports failed steps, refuses invalid files before running anything, and writes JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from txverify.cli.scenario.command import scenario_app
from txverify.cli.scenario.files import NetworkSpec, ScenarioError, load_scenario
from txverify.cli.scenario.network import fresh_network
from txverify.cli.scenario.runner import run_scenario

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

SHIPPED = sorted((Path(__file__).parents[1] / "scenarios").glob("*.yaml"))
WRONG_VERDICT = """
name: Wrong verdict on purpose
network: {banks: ["002", "014"], transactions: 5}
steps:
  - transfer: {save: s1, bank: "014", to: "0812345678", amount: "150.00"}
  - verify: {slip: s1, expect: {amount: "999.00"}}
    expect: {verdict: VALID}
  - verify: {slip: s1}
"""
PASSING = """
name: Passing
network: {banks: ["002", "014"], transactions: 5}
steps:
  - pick: {save: s1, bank: "014"}
  - verify: {slip: s1, as: "002"}
    expect: {verdict: VALID, fields: {transaction.trans_ref: "${s1.trans_ref}"}}
"""


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_scenarios_are_shipped() -> None:
    assert 11 <= len(SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.stem)
async def test_shipped_scenario_passes_on_a_fresh_network(path: Path) -> None:
    result = await run_scenario(load_scenario(path))

    not_passed = [(s.number, s.label, s.status, s.problems) for s in result.steps if s.problems]
    assert ([], "") == (not_passed, result.error)
    assert result.passed


async def test_failed_expectation_fails_its_step_saying_what_differed(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, "wrong.yaml", WRONG_VERDICT))

    result = await run_scenario(scenario)

    assert not result.passed
    assert ["passed", "failed", "skipped"] == [s.status for s in result.steps]
    assert ("verdict: expected VALID, got MISMATCH",) == result.steps[1].problems
    assert "AMOUNT FAIL" in result.steps[1].summary


async def test_scenario_runs_against_an_existing_network(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, "passing.yaml", PASSING))

    async with fresh_network(NetworkSpec(banks=("002", "014"), transactions=5)) as target:
        result = await run_scenario(scenario, target)

    assert ["passed", "passed"] == [s.status for s in result.steps]


def test_unknown_step_type_is_refused_naming_the_file_and_step(tmp_path: Path) -> None:
    path = _write(tmp_path, "typo.yaml", "name: Typo\nsteps:\n  - wait: 0\n  - verfy: {qr: x}\n")

    with pytest.raises(ScenarioError) as refused:
        load_scenario(path)

    assert str(refused.value).startswith(f"{path}: step 2 (line 4): unknown step type 'verfy'")


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("verify: {slip: s1}", "no earlier step saves a slip 's1'"),
        ('verify: {qr: x, amout: "1.00"}', "unknown key 'amout' in verify"),
        ("pick: {save: s1, bank: 014}", 'pick.bank must be a quoted code like "014"'),
        ('pick: {save: s1, bank: "025"}', "pick.bank: 025 is not simulated"),
        ("verify: {qr: x}\n    expect: {verdict: VALIDD}", "expect.verdict must be one of"),
        ("verify: {qr: x}\n    expect: {fields: {transaction.amout: 1}}", "no field 'amout'"),
        ("wait: 1\n    expect: {status: OK}", "wait takes no expect"),
        ("verify: {qr: x}\n    expect: {status: UNAVAILABLE, reason: SLIP_NOT_FOUND}", "NOT_FOUND"),
    ],
)
def test_invalid_step_is_refused_saying_why(tmp_path: Path, step: str, message: str) -> None:
    path = _write(tmp_path, "bad.yaml", f"name: Bad\nsteps:\n  - {step}\n")

    with pytest.raises(ScenarioError) as refused:
        load_scenario(path)

    assert f"{path}: step 1 (line 3): " in str(refused.value)
    assert message in str(refused.value)


def test_run_refuses_an_invalid_file_with_exit_2_running_nothing(tmp_path: Path) -> None:
    good = _write(tmp_path, "a_good.yaml", PASSING)
    bad = _write(tmp_path, "b_bad.yaml", "name: Typo\nsteps:\n  - verfy: {qr: x}\n")

    result = CliRunner().invoke(scenario_app, ["run", str(good), str(bad)])

    assert 2 == result.exit_code
    assert "step 1 (line 3): unknown step type 'verfy'" in result.output
    assert "Passing" not in result.output


def test_run_writes_junit_with_a_suite_per_file_and_a_case_per_step(tmp_path: Path) -> None:
    good = _write(tmp_path, "good.yaml", PASSING)
    wrong = _write(tmp_path, "wrong.yaml", WRONG_VERDICT)
    report = tmp_path / "report.xml"

    result = CliRunner().invoke(
        scenario_app, ["run", str(good), str(wrong), "--junit", str(report)]
    )

    assert 1 == result.exit_code, result.output
    root = ET.parse(report).getroot()
    suites = root.findall("testsuite")
    assert [("Passing", "2", "0", "0"), ("Wrong verdict on purpose", "3", "1", "1")] == [
        (s.get("name"), s.get("tests"), s.get("failures"), s.get("skipped")) for s in suites
    ]
    assert ("5", "1") == (root.get("tests"), root.get("failures"))
    failure = suites[1].find("testcase[2]/failure")
    assert failure is not None
    assert "verdict: expected VALID, got MISMATCH" == failure.get("message")
    assert suites[1].find("testcase[3]/skipped") is not None
    assert "1 passed, 1 failed" in result.output
