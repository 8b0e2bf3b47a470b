"""Running a scenario: every step in order, the rest skipped after a failure."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import grpc

from txverify.cli.scenario.files import Scenario, Step
from txverify.cli.scenario.network import HubChannels, Target, fresh_network
from txverify.cli.scenario.steps import Context
from txverify.client.channels import control_aio_channel
from txverify.errors import details_of


@dataclass(frozen=True, slots=True)
class StepResult:
    number: int
    label: str
    status: str  # passed, failed, error (the step could not run), skipped
    summary: str = ""
    problems: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: Scenario
    steps: tuple[StepResult, ...]
    seconds: float
    error: str = ""  # the network could not be started or reached

    @property
    def passed(self) -> bool:
        return not self.error and all(s.status == "passed" for s in self.steps)


async def run_scenario(scenario: Scenario, target: Target | None = None) -> ScenarioResult:
    """Run every step in order (the rest skipped after a failure) on `target`, else on a
    fresh in-process network started for this scenario and stopped after it."""
    started, results = time.perf_counter(), list[StepResult]()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if target is None:
                target = await stack.enter_async_context(fresh_network(scenario.network))
            hub = HubChannels(target.hub, target.certs)
            stack.push_async_callback(hub.close)
            control = await stack.enter_async_context(
                control_aio_channel(target.control, certs=target.certs)
            )
            ctx = Context(
                hub,
                control,
                default_member=scenario.network.banks[0],
                mtls=target.certs is not None,
            )
            for number, step in enumerate(scenario.steps, 1):
                if any(r.status != "passed" for r in results):
                    results.append(StepResult(number, step.label, "skipped"))
                else:
                    results.append(await _run_step(number, step, ctx))
    except (OSError, ValueError, RuntimeError, grpc.RpcError) as exc:
        error = f"network: {type(exc).__name__}: {exc}"
        ran = len(results)
        results += [
            StepResult(n, s.label, "skipped") for n, s in enumerate(scenario.steps[ran:], ran + 1)
        ]
        return ScenarioResult(scenario, tuple(results), time.perf_counter() - started, error)
    return ScenarioResult(scenario, tuple(results), time.perf_counter() - started)


async def _run_step(number: int, step: Step, ctx: Context) -> StepResult:
    started = time.perf_counter()
    try:
        problems, summary = await step.run(ctx)
    except grpc.aio.AioRpcError as error:  # a control call a step needed, e.g. while picking
        d = details_of(error)
        problems, summary = [f"{d.status.name} {d.reason}: {d.message}"], "could not run"
        return StepResult(
            number, step.label, "error", summary, tuple(problems), time.perf_counter() - started
        )
    except Exception as exc:  # report it as this step's, and go on with the next scenario
        problem = f"{type(exc).__name__}: {exc}"
        return StepResult(
            number, step.label, "error", "could not run", (problem,), time.perf_counter() - started
        )
    status = "failed" if problems else "passed"
    return StepResult(
        number, step.label, status, summary, tuple(problems), time.perf_counter() - started
    )
