"""`txverify load`: the command, its flags, its progress and its outputs; `txverify load
compare` beside it. The engine is engine.py; stages schedule.py, thresholds thresholds.py,
the capacity search capacity.py."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from txverify import units
from txverify.cli.load import exports
from txverify.cli.load.capacity import Search, Step, find_capacity
from txverify.cli.load.compare_cmd import compare_command
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
from txverify.cli.load.schedule import (
    CONCURRENCY,
    RATE,
    Schedule,
    ScheduleError,
    Stage,
    parse_stage,
)
from txverify.cli.load.slips import fetch_slips, read_slips
from txverify.cli.load.thresholds import HELP as THRESHOLD_HELP
from txverify.cli.load.thresholds import (
    Threshold,
    ThresholdError,
    check_stages,
    judge,
    parse_threshold,
)
from txverify.cli.network import resolve_target
from txverify.cli.options import CertsOpt, ControlOpt, HubOpt, MemberOpt
from txverify.cli.simulatorcmd import control_target
from txverify.client import DEFAULT_HUB

err = Console(stderr=True, soft_wrap=True)
load_app = typer.Typer(invoke_without_command=True)  # help: load()'s docstring
FilesOpt = Annotated[Path | None, typer.Option(metavar="FILE")]


@load_app.callback()
def load(
    ctx: typer.Context,
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
    stage: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DURATION:RATE",
            help="Open loop in stages, e.g. --stage 30s:100 --stage 60s:1000 --stage 30s:0: each "
            "ramps linearly from the one before (0 at first) to its rate; 0s:R jumps.",
        ),
    ] = None,
    concurrency_stage: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DURATION:CALLERS",
            help="Closed loop in stages: the callers in flight ramp as --stage's rate does.",
        ),
    ] = None,
    rounds: Annotated[
        int,
        typer.Option(
            help="Run the whole load N times; the report has each round's "
            "figures, for `txverify load compare`."
        ),
    ] = 1,
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
    threshold: Annotated[
        list[str] | None,
        typer.Option(metavar="EXPR", help=f"Exit 3 unless it holds; {THRESHOLD_HELP}."),
    ] = None,
    find_capacity: Annotated[
        bool,
        typer.Option(
            "--find-capacity",
            help="Raise the open-loop rate step by step until p99 or errors cross their "
            "bound; report the highest rate sustained and the curve.",
        ),
    ] = False,
    max_p99: Annotated[
        float, typer.Option(help="--find-capacity: the p99 bound, ms.", rich_help_panel="Capacity")
    ] = 50.0,
    max_errors: Annotated[
        float,
        typer.Option(
            help="--find-capacity: the error bound, % of requests.", rich_help_panel="Capacity"
        ),
    ] = 1.0,
    start_rate: Annotated[
        float,
        typer.Option(help="--find-capacity: the first step's rate.", rich_help_panel="Capacity"),
    ] = 50.0,
    max_rate: Annotated[
        float, typer.Option(help="--find-capacity: stop here.", rich_help_panel="Capacity")
    ] = 20_000.0,
    growth: Annotated[
        float,
        typer.Option(
            help="--find-capacity: each step's rate times this.", rich_help_panel="Capacity"
        ),
    ] = 1.5,
    refine: Annotated[
        int,
        typer.Option(
            help="--find-capacity: steps that halve the last gap.", rich_help_panel="Capacity"
        ),
    ] = 2,
    step_seconds: Annotated[
        float, typer.Option(help="--find-capacity: seconds per step.", rich_help_panel="Capacity")
    ] = 10.0,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the report and timeline as JSON here.")
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Write the report as a self-contained page.")
    ] = None,
    junit_file: Annotated[
        Path | None, typer.Option("--junit", help="Write the thresholds as JUnit XML here.")
    ] = None,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Write one CSV row per second here.")
    ] = None,
    csv_requests: Annotated[
        Path | None, typer.Option("--csv-requests", help="Write one CSV row per request here.")
    ] = None,
    prometheus_file: Annotated[
        Path | None,
        typer.Option("--prometheus", help="Write the summary in Prometheus text format here."),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Live progress (default: on a terminal)."),
    ] = None,
) -> None:
    """Load the hub with a mix of slips and check every answer; exit 1 on any wrong answer,
    3 when a --threshold fails, 4 when some requests got no answer (without thresholds)."""
    if ctx.invoked_subcommand is not None:
        return
    started = datetime.now(UTC)
    stages, unit, thresholds = _read_flags(
        rate, concurrency, duration, requests, stage or [], concurrency_stage or [],
        threshold or [], rounds, find_capacity,
    )  # fmt: skip
    given_certs = certs
    hub, member, certs = resolve_target(hub_address, member, certs, default_hub=DEFAULT_HUB)
    flags = SimpleNamespace(
        rate=rate or 0.0, duration=_duration(stages, unit, duration, requests),
        requests=requests, concurrency=concurrency or 16, connections=connections,
        procs=procs, timeout=timeout, member=member, stages=stages,
    )  # fmt: skip
    if problems := flag_problems(flags):  # before a slip is fetched or a process started
        _bad("; ".join(problems))
    search = Search(start_rate, max_rate, growth, refine, step_seconds, max_p99, max_errors / 100)
    if find_capacity and (problems := search.problems()):
        _bad("; ".join(problems))
    show = err.is_terminal if progress is None else progress
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
            stages=stages,
            stage_unit=unit,
            requests_csv=csv_requests,
        )
        if find_capacity:
            result = find_capacity_run(plan, search, show)
        else:
            result = _rounds(plan, rounds, show)
    except LoadError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(exc.exit_code) from None
    finally:
        if csv_requests is not None:
            parts = [Path(f"{csv_requests}.part{i}") for i in range(procs)]
            exports.merge_request_parts(csv_requests, parts)
    result.metadata = run_metadata(hub, started)
    stage_count = len(result.schedule.stages) if result.schedule else 0
    result.thresholds = judge(thresholds, result.figures(), _stage_of(result, stage_count))
    whole_run = [t for t in thresholds if t.stage is None]
    result.stage_thresholds = {
        i: judge(whole_run, result.stage_figures(i), _stage_of(result, stage_count))
        for i in range(stage_count)
    }
    _write_outputs(result, json_file, html_file, junit_file, csv_file, prometheus_file)
    raise typer.Exit(result.exit_code)


load_app.command("compare")(compare_command)


def _duration(
    stages: tuple[Stage, ...], unit: str, duration: float | None, requests: int | None
) -> float | None:
    if stages:
        return Schedule.of(stages, unit).duration
    return duration if duration or requests else 10.0


def _bad(message: str) -> None:
    err.print(f"[red]{escape(message)}[/]")
    raise typer.Exit(BadInput.exit_code)


def _read_flags(
    rate: float | None,
    concurrency: int | None,
    duration: float | None,
    requests: int | None,
    stage: list[str],
    concurrency_stage: list[str],
    threshold: list[str],
    rounds: int,
    find_capacity: bool,
) -> tuple[tuple[Stage, ...], str, list[Threshold]]:
    """The flags that go together checked together: the stages, the thresholds."""
    if rate is not None and concurrency is not None:
        _bad("give --rate (open loop) or --concurrency (closed loop), not both")
    if stage and concurrency_stage:
        _bad("give --stage (rates, open loop) or --concurrency-stage (callers), not both")
    if (stage or concurrency_stage) and (rate or concurrency or duration):
        _bad("the stages set the rate (or callers) and the duration: drop --rate, "
             "--concurrency and --duration")  # fmt: skip
    if find_capacity and (stage or concurrency_stage or rate or concurrency or requests):
        _bad("--find-capacity sets the rate itself: drop --rate, --concurrency, --requests "
             "and the stages")  # fmt: skip
    if rounds < 1 or (find_capacity and rounds > 1):
        _bad("--rounds must be at least 1" if rounds < 1 else "--find-capacity runs once")
    unit = CONCURRENCY if concurrency_stage else RATE
    try:
        stages = tuple(parse_stage(s, unit) for s in stage or concurrency_stage)
        thresholds = [parse_threshold(t) for t in threshold]
        if stages:
            Schedule.of(stages, unit)  # the chain checks the total duration
    except (ScheduleError, ThresholdError) as exc:
        _bad(str(exc))
    if not find_capacity and (problems := check_stages(thresholds, len(stages))):
        _bad("; ".join(problems))
    return stages, unit, thresholds


def _stage_of(result: LoadResult, count: int) -> Any:
    def figures(index: int) -> Any:
        if index >= count:  # a capacity search that stopped before that step
            return replace(result.figures(), requests=0)
        return result.stage_figures(index)

    return figures


def _rounds(plan: LoadPlan, rounds: int, show: bool) -> LoadResult:
    if rounds == 1:
        return _run_with_progress(plan, show)
    done = []
    for n in range(1, rounds + 1):
        fresh = replace(plan, run_id=f"{plan.run_id}-{n}", round=n)  # first uses per round
        done.append(_run_with_progress(fresh, show, f"round {n}/{rounds}"))
        if done[-1].interrupted:  # Ctrl-C: the rounds so far are the report
            break
        if show:
            f = done[-1].figures()
            err.print(f"round {n}/{rounds}: {f.throughput:,.1f}/s, p99 "
                      f"{f.latency_us(99) / 1000:.3f} ms, {f.errors:,} errors")  # fmt: skip
    result = LoadResult.concat(done)
    result.rounds = done
    result.settings["rounds"] = rounds
    return result


def find_capacity_run(plan: LoadPlan, search: Search, show: bool) -> LoadResult:
    def step(s: Step) -> None:
        f = s.result.figures()
        verdict = "ok" if not s.failed_bound else f"over the bound ({s.failed_bound})"
        err.print(
            f"capacity: {s.offered:,.1f}/s offered -> {f.throughput:,.1f}/s, p99 "
            f"{f.latency_us(99) / 1000:.3f} ms, errors {f.error_rate:.2%}: {verdict}"
        )

    return find_capacity(plan, search, lambda p: _run_with_progress(p, show), step)


def run_metadata(hub: str, started: datetime) -> dict[str, Any]:
    """What a report needs to be read later: which txverify, where, when, how it was called."""
    try:
        installed = version("txverify")
    except PackageNotFoundError:
        installed = "unknown"
    return {
        "txverify_version": installed,
        "git_commit": _git_commit(),
        "started_utc": started.isoformat(timespec="milliseconds"),
        "started_bangkok": units.bangkok(started).isoformat(timespec="milliseconds"),
        "host": {
            "hostname": socket.gethostname(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "hub": hub,
        "argv": ["txverify", *sys.argv[1:]],
    }


def _git_commit() -> str | None:
    """The commit of the txverify checkout this runs from, when it is one (else None)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def _write_outputs(
    result: LoadResult,
    json_file: Path | None,
    html_file: Path | None,
    junit_file: Path | None,
    csv_file: Path | None,
    prometheus_file: Path | None,
) -> None:
    print(render_text(result))
    report = to_json(result)
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if html_file is not None:
        html_file.write_text(render_html(report), encoding="utf-8")
    if junit_file is not None:
        junit_xml(report).write(junit_file, encoding="unicode", xml_declaration=True)
    if csv_file is not None:
        csv_file.write_text(exports.seconds_csv(report), encoding="utf-8")
    if prometheus_file is not None:
        prometheus_file.write_text(exports.prometheus_text(report), encoding="utf-8")


def junit_xml(report: dict[str, Any]) -> ET.ElementTree[ET.Element]:
    """A test case per threshold, and one for the answers being right: CI shows which failed."""
    cases = [(t["expression"], t["passed"],
              f"measured {t['measured']}{t['unit']}") for t in report["thresholds"]]  # fmt: skip
    wrong = report["wrong_answers"]["count"]
    cases.append(("every answer is right", not wrong, f"{wrong} wrong answers"))
    suite = ET.Element(
        "testsuite", name="txverify load", tests=str(len(cases)),
        failures=str(sum(not ok for _, ok, _ in cases)), time=f"{report['elapsed_s']:.3f}",
        timestamp=(report.get("metadata") or {}).get("started_utc", ""),
    )  # fmt: skip
    for name, ok, message in cases:
        case = ET.SubElement(suite, "testcase", classname="txverify.load", name=name)
        if not ok:
            ET.SubElement(case, "failure", message=message).text = message
    return ET.ElementTree(suite)


def _run_with_progress(plan: LoadPlan, show: bool, label: str = "load") -> LoadResult:
    if not show:
        return run_load(plan)
    total = plan.requests if plan.requests and not plan.duration else plan.duration
    counts = TextColumn("{task.fields[answers]:,} answers, {task.fields[errors]:,} errors")
    columns = (TextColumn(label), BarColumn(), TimeElapsedColumn(), counts)
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("load", total=total, answers=0, errors=0)
        started: list[float] = []  # when the first progress came: the processes are sending

        def update(answers: int, errors: int) -> None:
            started[:] = started or [time.monotonic() - PROGRESS_INTERVAL]
            done = answers if plan.requests and not plan.duration else time.monotonic() - started[0]
            bar.update(task, completed=done, answers=answers, errors=errors)

        return run_load(plan, update)
