"""`txverify scenario run`: load the files (all of them checked before any runs), run each
on a fresh in-process network or a running one, report, exit 0 / 1 / 2."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from txverify.cli.scenario.files import Scenario, ScenarioError, load_scenario, scenario_files
from txverify.cli.scenario.network import Target
from txverify.cli.scenario.report import print_result, summary_line, write_junit
from txverify.cli.scenario.runner import ScenarioResult, run_scenario
from txverify.runtime import logs

scenario_app = typer.Typer(
    help="Scripted journeys through a txverify network, checked step by step.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)
EXIT_FAILED = 1
EXIT_INVALID = 2


@scenario_app.callback()
def scenarios() -> None:
    """Scenario files (YAML): see scenarios/README.md and the txverify.cli.scenario docstring."""


@scenario_app.command("run")
def run(
    files: Annotated[
        list[Path], typer.Argument(help="Scenario files, or directories of *.yaml files.")
    ],
    hub: Annotated[
        str | None,
        typer.Option(help="Run against this hub (dev mode) instead of a fresh network."),
    ] = None,
    control: Annotated[
        str | None, typer.Option(help="The simulator control host:port that goes with --hub.")
    ] = None,
    certs: Annotated[
        Path | None,
        typer.Option(
            help="With --hub and --control: call over mTLS with the certificates here "
            "(each member its own, the operator's for member and control steps)."
        ),
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Also write a JUnit XML report here.")] = None,
    log_level: Annotated[
        str, typer.Option(help="Log level of the in-process hub and banks.")
    ] = "ERROR",
) -> None:
    """Run scenarios, each on a fresh in-process network unless --hub and --control are given.

    Exit 0 when every step passed, 1 when any failed, 2 when a file is invalid
    (nothing is run then)."""
    if (hub is None) != (control is None):
        err.print("[red]--hub and --control go together[/] (or give neither: a fresh network)")
        raise typer.Exit(EXIT_INVALID)
    if certs is not None and hub is None:
        err.print("[red]--certs goes with --hub and --control[/] (a fresh network is dev mode)")
        raise typer.Exit(EXIT_INVALID)
    loaded, problems = [], []
    for path in scenario_files(files):
        try:
            loaded.append(load_scenario(path))
        except ScenarioError as exc:
            problems.append(str(exc))
    for problem in problems or ([] if loaded else ["no scenario files found"]):
        err.print(Text(problem, "red"))
    if problems or not loaded:
        raise typer.Exit(EXIT_INVALID)
    if not logging.getLogger().handlers:  # leave a host's logging (e.g. pytest's) alone
        logs.configure(log_level)
    target = Target(hub, control, certs) if hub and control else None
    results = asyncio.run(_run_all(loaded, target, lambda r: print_result(r, out)))
    out.print(summary_line(results))
    if junit is not None:
        write_junit(junit, results)
    if not all(r.passed for r in results):
        raise typer.Exit(EXIT_FAILED)


async def _run_all(
    scenarios: Sequence[Scenario],
    target: Target | None,
    report: Callable[[ScenarioResult], None],
) -> list[ScenarioResult]:
    results = []
    for scenario in scenarios:
        results.append(await run_scenario(scenario, target))
        report(results[-1])
    return results
