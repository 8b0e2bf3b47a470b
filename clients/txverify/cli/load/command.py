"""`txverify load`: the command, its flags and its progress bar; the engine is engine.py."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from txverify.cli.load.engine import PROGRESS_INTERVAL, run_load
from txverify.cli.load.html import render_html
from txverify.cli.load.plan import (
    DEFAULT_MIX,
    KINDS,
    BadInput,
    LoadError,
    LoadPlan,
    flag_problems,
    parse_mix,
)
from txverify.cli.load.report import render_text
from txverify.cli.load.results import LoadResult, to_json
from txverify.cli.load.slips import fetch_slips, read_slips
from txverify.cli.network import resolve_target
from txverify.cli.options import CertsOpt, ControlOpt, HubOpt, MemberOpt
from txverify.cli.simulatorcmd import control_target
from txverify.client import DEFAULT_HUB

err = Console(stderr=True, soft_wrap=True)


def load(
    concurrency: Annotated[
        int | None, typer.Option(help="Closed loop: requests in flight (default 16).")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(help="Open loop: requests/s; latency counts from each scheduled send."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Seconds to send for (10 unless --requests).")
    ] = None,
    requests: Annotated[int | None, typer.Option(help="Requests to send in all.")] = None,
    connections: Annotated[
        int, typer.Option(help="HTTP/2 connections (channels) in all, at least one per process.")
    ] = 1,
    procs: Annotated[
        int, typer.Option(help="Load processes, each with its share of the load.")
    ] = 1,
    mix: Annotated[
        str | None,
        typer.Option(
            help=f"KIND=WEIGHT,... over {', '.join(KINDS)} "
            f"(default: as the --slips file's lines, else {DEFAULT_MIX})."
        ),
    ] = None,
    slips: Annotated[
        Path | None,
        typer.Option(help="KIND<TAB>QR lines (`slips export --kinds`) instead of the simulator."),
    ] = None,
    control: ControlOpt = None,
    hub_address: HubOpt = None,
    member: MemberOpt = "",
    certs: CertsOpt = None,
    timeout: Annotated[float, typer.Option(help="Deadline per request, in seconds.")] = 10.0,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the report and timeline as JSON here.")
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Write the report as a self-contained page.")
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Live progress (default: on a terminal)."),
    ] = None,
) -> None:
    """Load the hub with a mix of slips and check every answer; exit 1 on any wrong answer
    (4 when some requests got no answer)."""
    if rate is not None and concurrency is not None:
        raise typer.BadParameter("give --rate (open loop) or --concurrency (closed loop), not both")
    given_certs = certs
    hub, member, certs = resolve_target(hub_address, member, certs, default_hub=DEFAULT_HUB)
    flags = SimpleNamespace(
        rate=rate or 0.0, duration=duration if duration or requests else 10.0,
        requests=requests, concurrency=concurrency or 16, connections=connections,
        procs=procs, timeout=timeout, member=member,
    )  # fmt: skip
    if problems := flag_problems(flags):  # before a slip is fetched or a process started
        err.print(f"[red]{escape('; '.join(problems))}[/]")
        raise typer.Exit(BadInput.exit_code)
    try:
        if slips is not None:
            pools = read_slips(slips)
        else:
            address, control_certs = control_target(control, given_certs)
            pools = fetch_slips(address, certs=control_certs)
        weights = mix or (
            ",".join(f"{k}={len(v)}" for k, v in pools.items()) if slips else DEFAULT_MIX
        )
        plan = LoadPlan(
            hub=hub,
            member=member,
            certs=certs,
            pools={k: tuple(v) for k, v in pools.items()},
            mix=parse_mix(weights),
            rate=rate or 0.0,
            concurrency=concurrency or 16,
            duration=duration if duration or requests else 10.0,
            requests=requests,
            connections=connections,
            procs=procs,
            timeout=timeout,
        )
        result = _run_with_progress(plan, err.is_terminal if progress is None else progress)
    except LoadError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(exc.exit_code) from None
    print(render_text(result))
    if json_file is not None:
        import json

        json_file.write_text(json.dumps(to_json(result), indent=2) + "\n", encoding="utf-8")
    if html_file is not None:
        html_file.write_text(render_html(result), encoding="utf-8")
    raise typer.Exit(result.exit_code)


def _run_with_progress(plan: LoadPlan, show: bool) -> LoadResult:
    if not show:
        return run_load(plan)
    total = plan.requests if plan.requests and not plan.duration else plan.duration
    counts = TextColumn("{task.fields[answers]:,} answers, {task.fields[errors]:,} errors")
    columns = (TextColumn("load"), BarColumn(), TimeElapsedColumn(), counts)
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("load", total=total, answers=0, errors=0)
        started: list[float] = []  # when the first progress came: the processes are sending

        def update(answers: int, errors: int) -> None:
            started[:] = started or [time.monotonic() - PROGRESS_INTERVAL]
            done = answers if plan.requests and not plan.duration else time.monotonic() - started[0]
            bar.update(task, completed=done, answers=answers, errors=errors)

        return run_load(plan, update)
