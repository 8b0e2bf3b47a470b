"""Scenario results for people and for CI: a table per scenario, a summary line, JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from txverify.cli.scenario.runner import ScenarioResult, StepResult

_STYLE = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "dim"}


def print_result(result: ScenarioResult, console: Console) -> None:
    """The scenario's verdict, then one row per step (what failed and why, in red)."""
    verdict = Text("PASS", "bold green") if result.passed else Text("FAIL", "bold red")
    console.print(
        Text.assemble(verdict, " ", (result.scenario.name, "bold"), f"  {result.scenario.path}")
        + Text(f"  {result.seconds:.1f} s", "dim")
    )
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    for column in ("#", "result", "step", "ms", "what happened"):
        table.add_column(column, justify="right" if column in ("#", "ms") else "left")
    for step in result.steps:
        happened = Text(step.summary)
        for problem in step.problems:
            happened.append(f"\n{problem}", "red")
        ms = f"{step.seconds * 1000:.0f}" if step.status != "skipped" else ""
        table.add_row(
            str(step.number), Text(step.status, _STYLE[step.status]), Text(step.label), ms, happened
        )
    console.print(table)
    if result.error:
        console.print(Text(f"  {result.error}", "red"))


def summary_line(results: Sequence[ScenarioResult]) -> Text:
    """'9 scenarios: 8 passed, 1 failed (60 steps: 57 passed, 1 failed, 2 skipped) in 9.1 s'."""
    steps = Counter(s.status for r in results for s in r.steps)
    passed, seconds = sum(r.passed for r in results), sum(r.seconds for r in results)
    said = ", ".join(
        f"{steps[k]} {k}" for k in ("passed", "failed", "error", "skipped") if steps[k]
    )
    line = (
        f"{len(results)} scenarios: {passed} passed, {len(results) - passed} failed "
        f"({steps.total()} steps: {said}) in {seconds:.1f} s"
    )
    return Text(line, "bold green" if passed == len(results) else "bold red")


def junit_xml(results: Sequence[ScenarioResult]) -> ET.ElementTree[ET.Element]:
    """JUnit XML: a testsuite per scenario file, a testcase per step (`failure` says why)."""
    suites = ET.Element("testsuites", name="txverify scenarios")
    totals: Counter[str] = Counter()
    for result in results:
        scenario = result.scenario
        suite = ET.SubElement(suites, "testsuite", name=scenario.name, file=str(scenario.path))
        steps = list(result.steps)
        if result.error:
            steps.insert(0, StepResult(0, "start the network", "error", problems=(result.error,)))
        for step in steps:
            case = ET.SubElement(
                suite,
                "testcase",
                name=f"{step.number:02d} {step.label}",
                classname=scenario.path.stem,
                file=str(scenario.path),
                time=f"{step.seconds:.3f}",
            )
            if step.status in ("failed", "error"):
                tag = "failure" if step.status == "failed" else "error"
                detail = ET.SubElement(case, tag, message=step.problems[0], type=tag)
                detail.text = "\n".join((*step.problems, f"outcome: {step.summary}"))
            elif step.status == "skipped":
                ET.SubElement(case, "skipped", message="an earlier step did not pass")
            else:
                ET.SubElement(case, "system-out").text = step.summary
        counts = Counter(s.status for s in steps) + Counter(tests=len(steps))
        _counts(suite, counts, result.seconds)
        totals += counts
    _counts(suites, totals, sum(r.seconds for r in results))
    return ET.ElementTree(suites)


def _counts(element: ET.Element, counts: Counter[str], seconds: float) -> None:
    for attribute, status in (("failures", "failed"), ("errors", "error")):
        element.set(attribute, str(counts[status]))
    element.set("tests", str(counts["tests"]))
    element.set("skipped", str(counts["skipped"]))
    element.set("time", f"{seconds:.3f}")


def write_junit(path: Path, results: Sequence[ScenarioResult]) -> None:
    tree = junit_xml(results)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
